#include "platform/config/config_node.h"

#include <gtest/gtest.h>

namespace tripline {
namespace {

TEST(ConfigNode, SyntaxErrorNamesFileLineAndColumn) {
  auto root = LoadYamlString("a: 1\nb: [1, 2\n", "agent.yaml");
  ASSERT_FALSE(root.ok());
  EXPECT_NE(root.status().message().find("agent.yaml:"), std::string::npos) << root.status();
}

TEST(ConfigNode, UnknownKeyIsAnErrorWithItsPosition) {
  auto root = LoadYamlString("batch:\n  max_events: 5\n  treshold: 3\n", "agent.yaml");
  ASSERT_TRUE(root.ok());
  auto batch = root->Required("batch");
  ASSERT_TRUE(batch.ok());
  absl::Status st = batch->ExpectKeys({"max_events", "linger"});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("agent.yaml:3:3"), std::string::npos) << st;
  EXPECT_NE(st.message().find("treshold"), std::string::npos) << st;
}

TEST(ConfigNode, TypedValuesAreCheckedWithKeyPath) {
  auto root = LoadYamlString("batch:\n  max_events: lots\n  on: yes\n", "a.yaml");
  ASSERT_TRUE(root.ok());
  auto batch = root->Required("batch");
  ASSERT_TRUE(batch.ok());
  auto n = batch->Int("max_events", 512, 1, 100000);
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.status().message().find("a.yaml:2:15: batch.max_events"), std::string::npos)
      << n.status();
  EXPECT_FALSE(batch->Bool("on", false).ok());
  EXPECT_EQ(*batch->Int("absent", 7, 1, 10), 7);
}

TEST(ConfigNode, RangeAndEnumAndDurations) {
  auto root = LoadYamlString("n: 0\nmode: maybe\nlinger: 250ms\nbad: 3 weeks\n", "c.yaml");
  ASSERT_TRUE(root.ok());
  EXPECT_FALSE(root->Int("n", 1, 1, 10).ok());
  EXPECT_FALSE(root->Enum("mode", "auto", {"auto", "approve", "dry-run"}).ok());
  EXPECT_EQ(*root->DurationMs("linger", 10, 1, 60000), 250);
  EXPECT_FALSE(root->DurationMs("bad", 10, 1, 60000).ok());
  EXPECT_EQ(ParseDurationMs("2h"), 7'200'000);
  EXPECT_EQ(ParseDurationMs("15"), 15'000);
  EXPECT_EQ(ParseDurationMs("-1s"), std::nullopt);
}

TEST(ConfigNode, ListsAcceptAScalarOrASequence) {
  auto root = LoadYamlString("one: /etc\nmany: [/etc, /usr]\nnested: [[a]]\n", "c.yaml");
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(*root->StringList("one"), std::vector<std::string>{"/etc"});
  EXPECT_EQ(root->StringList("many")->size(), 2u);
  EXPECT_FALSE(root->StringList("nested").ok());
  EXPECT_TRUE(root->StringList("none")->empty());
}

TEST(ConfigNode, MissingRequiredKeyIsNamed) {
  auto root = LoadYamlString("x: 1\n", "c.yaml");
  ASSERT_TRUE(root.ok());
  auto s = root->RequiredString("collector");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("'collector'"), std::string::npos) << s.status();
}

}  // namespace
}  // namespace tripline
