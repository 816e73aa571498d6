#include "agent/identity/agent_identity.h"

#include <sys/stat.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "platform/fs/file_util.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

TEST(AgentIdentity, CreatesStateDirAndKeyOnceAndTrimsToken) {
  testing::TempDir dir;
  const std::string token = dir.Sub("token");
  ASSERT_TRUE(WriteFileAtomic(token, "s3cret-token \n\n", 0600).ok());
  const std::string state = dir.Sub("state/nested");

  absl::StatusOr<AgentIdentity> first = LoadAgentIdentity("i-1", state, token);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->enrollment_token, "s3cret-token");
  EXPECT_EQ(first->key->public_key().size(), kPublicKeyBytes);
  struct stat st;
  ASSERT_EQ(::stat(state.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((state + "/agent.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  absl::StatusOr<AgentIdentity> second = LoadAgentIdentity("i-1", state, token);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->key->public_key(), first->key->public_key());
}

TEST(AgentIdentity, EmptyOrMissingTokenFileIsAnErrorThatNeverShowsTheToken) {
  testing::TempDir dir;
  const std::string token = dir.Sub("token");
  ASSERT_TRUE(WriteFileAtomic(token, " \n", 0600).ok());
  absl::StatusOr<AgentIdentity> id = LoadAgentIdentity("i-1", dir.Sub("state"), token);
  ASSERT_FALSE(id.ok());
  EXPECT_THAT(std::string(id.status().message()), ::testing::HasSubstr("empty"));

  id = LoadAgentIdentity("i-1", dir.Sub("state"), dir.Sub("absent"));
  ASSERT_FALSE(id.ok());
  EXPECT_THAT(std::string(id.status().message()), ::testing::HasSubstr("enrollment_token_file"));
}

}  // namespace
}  // namespace tripline::agent
