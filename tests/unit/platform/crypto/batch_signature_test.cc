#include "platform/crypto/batch_signature.h"

#include <gtest/gtest.h>

#include "platform/crypto/digest.h"

namespace tripline {
namespace {

TEST(BatchSignature, VerifiesWhatWasSigned) {
  auto key = SigningKey::Generate();
  const std::string batch = "serialized batch bytes";
  const std::string sig = SignBatch(*key, batch);
  EXPECT_EQ(sig.size(), kSignatureBytes);
  EXPECT_TRUE(VerifyBatchSignature(key->public_key(), batch, sig));
}

TEST(BatchSignature, EveryFlippedBitOfTheBatchIsRejected) {
  auto key = SigningKey::Generate();
  const std::string batch = "a batch of events\x01\x02\xff";
  const std::string sig = SignBatch(*key, batch);
  for (size_t i = 0; i < batch.size() * 8; ++i) {
    std::string forged = batch;
    forged[i / 8] = static_cast<char>(forged[i / 8] ^ (1 << (i % 8)));
    EXPECT_FALSE(VerifyBatchSignature(key->public_key(), forged, sig)) << "bit " << i;
  }
}

TEST(BatchSignature, FlippedSignatureBitIsRejected) {
  auto key = SigningKey::Generate();
  const std::string batch = "batch";
  std::string sig = SignBatch(*key, batch);
  sig[10] = static_cast<char>(sig[10] ^ 0x04);
  EXPECT_FALSE(VerifyBatchSignature(key->public_key(), batch, sig));
}

TEST(BatchSignature, WrongKeyIsRejected) {
  auto key = SigningKey::Generate();
  auto other = SigningKey::Generate();
  const std::string sig = SignBatch(*key, "batch");
  EXPECT_FALSE(VerifyBatchSignature(other->public_key(), "batch", sig));
}

TEST(BatchSignature, PlainSignatureWithoutContextIsRejected) {
  // A signature made over the same bytes for another purpose must not pass as a batch signature.
  auto key = SigningKey::Generate();
  const std::string sig = key->Sign("batch");
  EXPECT_FALSE(VerifyBatchSignature(key->public_key(), "batch", sig));
  EXPECT_TRUE(VerifySignature(key->public_key(), "batch", sig));
}

TEST(BatchSignature, TruncatedOrEmptyInputsAreInvalidNotCrashes) {
  auto key = SigningKey::Generate();
  const std::string sig = SignBatch(*key, "batch");
  EXPECT_FALSE(VerifyBatchSignature(key->public_key(), "batch", sig.substr(0, 63)));
  EXPECT_FALSE(VerifyBatchSignature(key->public_key().substr(0, 31), "batch", sig));
  EXPECT_FALSE(VerifyBatchSignature("", "", ""));
}

TEST(ChainDigest, GenesisIsThirtyTwoZeroBytesAndDigestsDiffer) {
  EXPECT_EQ(GenesisDigest(), std::string(32, '\0'));
  EXPECT_EQ(ChainDigest("a").size(), 32u);
  EXPECT_NE(ChainDigest("a"), ChainDigest("b"));
  EXPECT_EQ(ChainDigest("a"), ChainDigest("a"));
}

}  // namespace
}  // namespace tripline
