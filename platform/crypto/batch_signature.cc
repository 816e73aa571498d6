#include "platform/crypto/batch_signature.h"

#include "platform/crypto/digest.h"

namespace tripline {
namespace {

constexpr char kContext[] = "tripline/v1/batch";  // + its terminating NUL

std::string WithContext(std::string_view batch_bytes) {
  std::string msg(kContext, sizeof kContext);  // includes the NUL
  msg.append(batch_bytes);
  return msg;
}

}  // namespace

std::string_view BatchSignatureContext() { return std::string_view(kContext, sizeof kContext); }

std::string SignBatch(const SigningKey& key, std::string_view batch_bytes) {
  return key.Sign(WithContext(batch_bytes));
}

bool VerifyBatchSignature(std::string_view public_key, std::string_view batch_bytes,
                          std::string_view signature) {
  return VerifySignature(public_key, WithContext(batch_bytes), signature);
}

std::string ChainDigest(std::string_view batch_bytes) { return Blake2b256(batch_bytes); }

std::string GenesisDigest() { return std::string(kDigestBytes, '\0'); }

}  // namespace tripline
