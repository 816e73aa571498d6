#include "collector/auth/operator_auth.h"

#include <sys/stat.h>

#include "gtest/gtest.h"
#include "platform/fs/file_util.h"
#include "tests/support/temp_dir.h"

namespace tripline::collector {
namespace {

constexpr int64_t kNow = 1'700'000'000'000'000'000;

class OperatorTokensTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = CollectorStore::Open(dir_.path() + "/collector.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto key = LoadOrCreateTokenKey(dir_.path() + "/operator-token.key");
    ASSERT_TRUE(key.ok()) << key.status();
    key_ = *key;
    tokens_ = std::make_unique<OperatorTokens>(store_.get(), key_);
  }

  std::string Create(const std::string& name, Role role) {
    auto created = tokens_->Create(name, role, "local:root", kNow);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? created->token : "";
  }

  tripline::testing::TempDir dir_;
  std::unique_ptr<CollectorStore> store_;
  std::string key_;
  std::unique_ptr<OperatorTokens> tokens_;
};

TEST(Roles, ParseAndNameRoundTripAndOrder) {
  for (Role r : {Role::kRead, Role::kRespond, Role::kAdmin}) {
    EXPECT_EQ(*ParseRole(RoleName(r)), r);
  }
  EXPECT_FALSE(ParseRole("root").ok());
  EXPECT_FALSE(ParseRole("").ok());
  EXPECT_LT(Role::kRead, Role::kRespond);
  EXPECT_LT(Role::kRespond, Role::kAdmin);
}

TEST(TokenKey, CreatedOnceWith0600AndReusedAfterwards) {
  tripline::testing::TempDir dir;
  const std::string path = dir.path() + "/k";
  auto first = LoadOrCreateTokenKey(path);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->size(), 32u);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = LoadOrCreateTokenKey(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *first);
}

TEST(TokenKey, RefusesAKeyOthersCanReadOrOfTheWrongSize) {
  tripline::testing::TempDir dir;
  const std::string open = dir.path() + "/open";
  ASSERT_TRUE(WriteFileAtomic(open, std::string(32, 'k'), 0644).ok());
  auto st = LoadOrCreateTokenKey(open);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(std::string(st.status().message()).find("chmod 600"), std::string::npos);
  const std::string shortkey = dir.path() + "/short";
  ASSERT_TRUE(WriteFileAtomic(shortkey, "abc", 0600).ok());
  EXPECT_FALSE(LoadOrCreateTokenKey(shortkey).ok());
}

TEST_F(OperatorTokensTest, ATokenAuthenticatesAsItsNameAndRole) {
  const std::string token = Create("alice", Role::kRespond);
  EXPECT_EQ(token.rfind("tl1_1_", 0), 0u) << token;
  auto caller = tokens_->Authenticate(token);
  ASSERT_TRUE(caller.ok()) << caller.status();
  EXPECT_EQ(caller->name, "token:alice");
  EXPECT_EQ(caller->role, Role::kRespond);
}

TEST_F(OperatorTokensTest, OnlyAKeyedHashIsStored) {
  const std::string token = Create("alice", Role::kRead);
  auto list = tokens_->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].hash.size(), 32u);
  auto file = ReadFileToString(dir_.path() + "/collector.db");
  ASSERT_TRUE(file.ok());
  const std::string secret_part = token.substr(token.rfind('_') + 1);
  EXPECT_EQ(file->find(secret_part), std::string::npos);
  // The database without the key file is not enough: another key rejects the same token.
  OperatorTokens other(store_.get(), std::string(32, 'x'));
  EXPECT_TRUE(absl::IsUnauthenticated(other.Authenticate(token).status()));
}

TEST_F(OperatorTokensTest, WrongMalformedAndUnknownTokensAreUnauthenticated) {
  const std::string token = Create("alice", Role::kAdmin);
  std::string flipped = token;  // another secret
  flipped[10] = flipped[10] == 'A' ? 'B' : 'A';
  std::string respelled = token;  // the same secret, spelled with a non-zero padding bit
  respelled.back() = static_cast<char>(respelled.back() ^ 1);
  const std::string unknown_id = "tl1_99" + token.substr(token.find('_', 4));
  for (const std::string& bad :
       {flipped, respelled, unknown_id, std::string(""), std::string("tl1_"), std::string("tl1_1_"),
        std::string("tl1_x_") + token.substr(6), std::string("tl1_-1_") + token.substr(6),
        token + "A", token.substr(0, token.size() - 1), std::string("Bearer ") + token,
        std::string("tl1_1_") + std::string(43, '!'), std::string("\xff\xfe", 2)}) {
    auto st = tokens_->Authenticate(bad);
    EXPECT_TRUE(absl::IsUnauthenticated(st.status())) << bad << " -> " << st.status();
    if (!st.ok() && !bad.empty()) {
      EXPECT_EQ(std::string(st.status().message()).find(bad), std::string::npos);
    }
  }
}

TEST_F(OperatorTokensTest, RevokedTokensStopWorkingAndTheNameCanBeReused) {
  const std::string old_token = Create("alice", Role::kRead);
  ASSERT_TRUE(tokens_->Revoke("alice", "local:root", kNow + 1).ok());
  auto st = tokens_->Authenticate(old_token);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(std::string(st.status().message()).find("revoked"), std::string::npos);
  EXPECT_TRUE(absl::IsNotFound(tokens_->Revoke("alice", "local:root", kNow + 2)));
  const std::string new_token = Create("alice", Role::kAdmin);
  EXPECT_EQ(tokens_->Authenticate(new_token)->role, Role::kAdmin);
  EXPECT_FALSE(tokens_->Authenticate(old_token).ok());
  auto list = tokens_->List();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].revoked_ns, kNow + 1);
  EXPECT_EQ((*list)[1].revoked_ns, 0);
}

TEST_F(OperatorTokensTest, OneActiveTokenPerNameAndNamesAreChecked) {
  Create("alice", Role::kRead);
  auto again = tokens_->Create("alice", Role::kAdmin, "local:root", kNow);
  EXPECT_TRUE(absl::IsAlreadyExists(again.status())) << again.status();
  for (const std::string& bad : {std::string(""), std::string("a b"), std::string("a/b"),
                                 std::string(65, 'a'), std::string("\x1b[31m")}) {
    EXPECT_TRUE(absl::IsInvalidArgument(tokens_->Create(bad, Role::kRead, "x", kNow).status()))
        << bad;
  }
}

TEST_F(OperatorTokensTest, CreateAndRevokeAreAuditActionsNamingWhoDidIt) {
  Create("ci-reader", Role::kRead);
  ASSERT_TRUE(tokens_->Revoke("ci-reader", "local:bob", kNow + 5).ok());
  auto actions = store_->ListActions(0, 10);
  ASSERT_TRUE(actions.ok());
  ASSERT_EQ(actions->size(), 2u);
  EXPECT_EQ((*actions)[0].kind, "token:create");
  EXPECT_EQ((*actions)[0].target, "ci-reader");
  EXPECT_EQ((*actions)[0].actor, "local:root");
  EXPECT_EQ((*actions)[0].detail, "role read");
  EXPECT_EQ((*actions)[1].kind, "token:revoke");
  EXPECT_EQ((*actions)[1].actor, "local:bob");
}

}  // namespace
}  // namespace tripline::collector
