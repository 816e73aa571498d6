#include "collector/rules/rule_replay.h"

#include "gtest/gtest.h"

namespace tripline::collector {
namespace {

using tripline::v1::Event;
constexpr int64_t kSec = 1'000'000'000;

constexpr char kRules[] = R"(rules:
  - id: etc
    title: etc changed
    severity: high
    match: {kind: file, paths: ["/etc/**"]}
  - id: ssh-guess
    title: SSH guessing
    severity: high
    match:
      kind: log
      source: [auth]
      regex: 'Failed password for (?P<user>\S+) from (?P<ip>\S+)'
    threshold: {count: 3, within: 60s, group_by: [ip]}
    suppress: 10m
)";

Event File(const std::string& path, int64_t t) {
  Event e;
  e.set_time_unix_ns(t);
  e.mutable_file()->set_path(path);
  e.mutable_file()->set_change(tripline::v1::FileEvent::MODIFIED);
  return e;
}

Event Auth(const std::string& ip, int64_t t) {
  Event e;
  e.set_time_unix_ns(t);
  e.mutable_log()->set_source("auth");
  e.mutable_log()->set_line("sshd[1]: Failed password for root from " + ip + " port 22");
  return e;
}

TEST(RuleReplay, FileRulesOpenOncePerAgentAndLogThresholdsOncePerWindow) {
  auto rules = ParseRules(kRules, "r.yaml");
  ASSERT_TRUE(rules.ok()) << rules.status();
  RuleReplay replay(&*rules);
  int64_t id = 0;
  replay.Feed("i-1", ++id, File("/etc/passwd", 1 * kSec));
  replay.Feed("i-1", ++id, File("/etc/shadow", 2 * kSec));  // same open incident
  replay.Feed("i-2", ++id, File("/etc/passwd", 3 * kSec));  // another agent: its own
  replay.Feed("i-1", ++id, File("/srv/x", 4 * kSec));       // no rule
  // Five guesses from one address within a minute: one incident (threshold 3, then suppressed);
  // two from another address: none.
  for (int i = 0; i < 5; ++i) replay.Feed("i-1", ++id, Auth("203.0.113.9", (10 + i) * kSec));
  for (int i = 0; i < 2; ++i) replay.Feed("i-1", ++id, Auth("198.51.100.7", (20 + i) * kSec));

  const auto& f = replay.firings();
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].rule_id, "etc");
  EXPECT_EQ(f[0].agent_id, "i-1");
  EXPECT_EQ(f[0].event_ids, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(f[1].agent_id, "i-2");
  EXPECT_EQ(f[2].rule_id, "ssh-guess");
  EXPECT_EQ(f[2].group, "ip=203.0.113.9");
  EXPECT_EQ(f[2].first_time_ns, 12 * kSec);  // the third guess opened it
  EXPECT_EQ(f[2].event_ids, (std::vector<int64_t>{5, 6, 7, 8, 9}));
  EXPECT_EQ(replay.matches(), 3 + 7);
}

}  // namespace
}  // namespace tripline::collector
