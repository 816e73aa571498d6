#include "platform/crypto/digest.h"

#include <gtest/gtest.h>

namespace tripline {
namespace {

TEST(Sha256, MatchesKnownVectors) {
  EXPECT_EQ(ToHex(Sha256("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(ToHex(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, IncrementalEqualsOneShotAndResetsAfterFinish) {
  Sha256Hasher h;
  h.Update("a", 1);
  h.Update("bc", 2);
  EXPECT_EQ(h.Finish(), Sha256("abc"));
  h.Update("abc", 3);
  EXPECT_EQ(h.Finish(), Sha256("abc"));
}

TEST(Blake2b, KeyedAndUnkeyedDiffer) {
  const std::string key(32, 'k');
  EXPECT_NE(Blake2b256("token", key), Blake2b256("token"));
  EXPECT_EQ(Blake2b256("token", key), Blake2b256("token", key));
}

TEST(ConstantTimeEquals, ComparesContentAndLength) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

}  // namespace
}  // namespace tripline
