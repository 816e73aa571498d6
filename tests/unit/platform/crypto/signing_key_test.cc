#include "platform/crypto/signing_key.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "platform/fs/file_util.h"
#include "tests/support/temp_dir.h"

namespace tripline {
namespace {

TEST(SigningKey, LoadOrCreateWritesA0600FileAndKeepsTheSameKey) {
  testing::TempDir dir;
  const std::string path = dir.Sub("agent.key");
  auto first = SigningKey::LoadOrCreate(path);
  ASSERT_TRUE(first.ok()) << first.status();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_size, 64);

  auto second = SigningKey::LoadOrCreate(path);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*first)->public_key(), (*second)->public_key());
  const std::string sig = (*second)->Sign("m");
  EXPECT_TRUE(VerifySignature((*first)->public_key(), "m", sig));
}

TEST(SigningKey, RefusesAKeyFileOthersCanRead) {
  testing::TempDir dir;
  const std::string path = dir.Sub("agent.key");
  ASSERT_TRUE(SigningKey::Generate()->Save(path).ok());
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  auto key = SigningKey::Load(path);
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(key.status().message().find("0644"), std::string::npos) << key.status();
}

TEST(SigningKey, RefusesAKeyFileOfTheWrongSize) {
  testing::TempDir dir;
  const std::string path = dir.Sub("agent.key");
  ASSERT_TRUE(WriteFileAtomic(path, "short", 0600).ok());
  auto key = SigningKey::Load(path);
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.status().message().find(path), std::string::npos) << key.status();
}

TEST(SigningKey, DifferentKeysAreGenerated) {
  EXPECT_NE(SigningKey::Generate()->public_key(), SigningKey::Generate()->public_key());
}

}  // namespace
}  // namespace tripline
