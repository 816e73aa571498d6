#include "platform/crypto/signing_key.h"

#include <sodium.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_format.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/errno_status.h"
#include "platform/runtime/status_macros.h"

namespace tripline {
namespace {

void EnsureSodium() {
  if (sodium_init() < 0) std::abort();
}

}  // namespace

SigningKey::SigningKey() : public_key_(kPublicKeyBytes, '\0') { EnsureSodium(); }

SigningKey::~SigningKey() { sodium_memzero(secret_, sizeof secret_); }

std::unique_ptr<SigningKey> SigningKey::Generate() {
  std::unique_ptr<SigningKey> key(new SigningKey());
  crypto_sign_keypair(reinterpret_cast<unsigned char*>(key->public_key_.data()), key->secret_);
  return key;
}

absl::StatusOr<std::unique_ptr<SigningKey>> SigningKey::Load(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "key file %s: mode %04o lets others read it; expected 0600", path, st.st_mode & 07777));
  }
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path, 4096));
  if (bytes.size() != crypto_sign_SECRETKEYBYTES) {
    sodium_memzero(bytes.data(), bytes.size());
    return absl::DataLossError(absl::StrFormat("key file %s: %d bytes, expected %d", path,
                                               bytes.size(), crypto_sign_SECRETKEYBYTES));
  }
  std::unique_ptr<SigningKey> key(new SigningKey());
  std::memcpy(key->secret_, bytes.data(), sizeof key->secret_);
  sodium_memzero(bytes.data(), bytes.size());
  crypto_sign_ed25519_sk_to_pk(reinterpret_cast<unsigned char*>(key->public_key_.data()),
                               key->secret_);
  return key;
}

absl::StatusOr<std::unique_ptr<SigningKey>> SigningKey::LoadOrCreate(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) return Load(path);
  if (errno != ENOENT) return ErrnoStatus(errno, "stat", path);
  std::unique_ptr<SigningKey> key = Generate();
  RETURN_IF_ERROR(key->Save(path));
  return key;
}

absl::Status SigningKey::Save(const std::string& path) const {
  return WriteFileAtomic(
      path, std::string_view(reinterpret_cast<const char*>(secret_), sizeof secret_), 0600);
}

std::string SigningKey::Sign(std::string_view message) const {
  std::string sig(kSignatureBytes, '\0');
  crypto_sign_detached(reinterpret_cast<unsigned char*>(sig.data()), nullptr,
                       reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                       secret_);
  return sig;
}

bool VerifySignature(std::string_view public_key, std::string_view message,
                     std::string_view signature) {
  EnsureSodium();
  if (public_key.size() != kPublicKeyBytes || signature.size() != kSignatureBytes) return false;
  return crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(signature.data()),
                                     reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(),
                                     reinterpret_cast<const unsigned char*>(public_key.data())) == 0;
}

}  // namespace tripline
