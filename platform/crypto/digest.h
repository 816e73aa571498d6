// Digests: BLAKE2b-256 for the batch chain and keyed token hashes (libsodium), SHA-256 for file
// contents (OpenSSL EVP, which uses the CPU's SHA extensions where present).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace tripline {

inline constexpr size_t kDigestBytes = 32;

// BLAKE2b-256 of `data`; with a non-empty `key` (16..64 bytes) a keyed hash. 32 raw bytes.
std::string Blake2b256(std::string_view data, std::string_view key = {});

// SHA-256 of `data`, 32 raw bytes.
std::string Sha256(std::string_view data);

// Incremental SHA-256 for streaming file contents.
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;
  void Update(const void* data, size_t len);
  std::string Finish();  // 32 raw bytes; the hasher is reset afterwards

 private:
  evp_md_ctx_st* ctx_;  // owned
};

// Lower-case hex of raw bytes.
std::string ToHex(std::string_view bytes);

// Compares two byte strings in time independent of where they differ (lengths may leak).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// `n` random bytes from the OS CSPRNG.
std::string RandomBytes(size_t n);

}  // namespace tripline
