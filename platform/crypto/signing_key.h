// An agent's Ed25519 identity key. The secret half never leaves this class except to its key file
// (0600, written atomically); it is wiped from memory on destruction and never logged.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tripline {

inline constexpr size_t kPublicKeyBytes = 32;
inline constexpr size_t kSignatureBytes = 64;

class SigningKey {
 public:
  // A new random key.
  static std::unique_ptr<SigningKey> Generate();
  // Loads the key file at `path` (64-byte libsodium secret key). Refuses a file that is readable by
  // group or others (FailedPrecondition, naming the file and its mode) or has the wrong size.
  static absl::StatusOr<std::unique_ptr<SigningKey>> Load(const std::string& path);
  // Loads `path`, or when it does not exist generates a key and writes it there (0600, atomic).
  static absl::StatusOr<std::unique_ptr<SigningKey>> LoadOrCreate(const std::string& path);

  ~SigningKey();
  SigningKey(const SigningKey&) = delete;
  SigningKey& operator=(const SigningKey&) = delete;

  // Writes the key to `path` with mode 0600, atomically.
  absl::Status Save(const std::string& path) const;
  // The 32-byte public key.
  const std::string& public_key() const { return public_key_; }
  // Detached Ed25519 signature (64 bytes) of `message`.
  std::string Sign(std::string_view message) const;

 private:
  SigningKey();
  std::string public_key_;
  unsigned char secret_[64];
};

// True when `signature` is a valid Ed25519 signature of `message` by `public_key`. Wrong sizes are
// simply invalid.
bool VerifySignature(std::string_view public_key, std::string_view message,
                     std::string_view signature);

}  // namespace tripline
