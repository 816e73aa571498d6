#include "collector/rules/log_thresholds.h"
#include "collector/rules/rule_set.h"
#include "gtest/gtest.h"

namespace tripline::collector {
namespace {

using tripline::v1::Event;

Event Log(const std::string& source, const std::string& line, int64_t time_ns = 0,
          const std::string& path = "/var/log/auth.log") {
  Event e;
  e.set_time_unix_ns(time_ns);
  e.mutable_log()->set_source(source);
  e.mutable_log()->set_path(path);
  e.mutable_log()->set_line(line);
  return e;
}

std::string Field(const LogMatchFields& fields, const std::string& name) {
  std::string out = "(missing)";
  for (const auto& [k, v] : fields) {
    if (k == name) out = v;
  }
  return out;
}

RuleSet MustParse(const std::string& yaml) {
  absl::StatusOr<RuleSet> r = ParseRules(yaml, "rules.yaml");
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : RuleSet();
}

std::string ErrorOf(const std::string& yaml) {
  absl::StatusOr<RuleSet> r = ParseRules(yaml, "rules.yaml");
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : std::string(r.status().message());
}

constexpr char kSshRule[] = R"(rules:
  - id: ssh-brute
    title: SSH brute force
    severity: high
    match:
      kind: log
      source: [auth]
      regex: 'Failed password for (?:invalid user )?(?P<user>\S+) from (?P<ip>\S+)'
      where:
        - {field: user, not_in: [monitor]}
    threshold: {count: 5, within: 60s, group_by: [ip]}
)";

constexpr int64_t kSec = 1000000000;

TEST(LogRules, NamedCapturesBecomeFieldsWithSourceAndPath) {
  RuleSet rules = MustParse(kSshRule);
  auto matches = rules.MatchLog(
      Log("auth", "sshd[12]: Failed password for invalid user admin from 203.0.113.9 port 22"));
  ASSERT_EQ(matches.size(), 1u);
  EXPECT_EQ(matches[0].first->id, "ssh-brute");
  EXPECT_EQ(Field(matches[0].second, "user"), "admin");
  EXPECT_EQ(Field(matches[0].second, "ip"), "203.0.113.9");
  EXPECT_EQ(Field(matches[0].second, "source"), "auth");
  EXPECT_EQ(Field(matches[0].second, "path"), "/var/log/auth.log");
  // File rules never see log events and log rules never see file events.
  EXPECT_TRUE(rules.Match(Log("auth", "Failed password for a from b")).empty());
}

TEST(LogRules, SourceAndConditionsFilter) {
  RuleSet rules = MustParse(kSshRule);
  EXPECT_TRUE(rules.MatchLog(Log("web", "Failed password for root from 1.2.3.4")).empty());
  EXPECT_TRUE(rules.MatchLog(Log("auth", "Failed password for monitor from 1.2.3.4")).empty());
  EXPECT_EQ(rules.MatchLog(Log("auth", "Failed password for root from 1.2.3.4")).size(), 1u);
}

TEST(LogRules, FieldConditionsOnParsedFieldsAndRegexOnAField) {
  RuleSet rules = MustParse(R"(rules:
  - id: json-errors
    title: t
    severity: low
    match:
      kind: log
      field: level
      regex: '(?i)^error$'
      where:
        - {field: service, matches: '^pay'}
        - {field: region, not_equals: test}
)");
  Event e = Log("app", "{...}");
  (*e.mutable_log()->mutable_fields())["level"] = "ERROR";
  (*e.mutable_log()->mutable_fields())["service"] = "payments";
  EXPECT_EQ(rules.MatchLog(e).size(), 1u);
  (*e.mutable_log()->mutable_fields())["region"] = "test";
  EXPECT_TRUE(rules.MatchLog(e).empty());
  Event no_level = Log("app", "ERROR");
  EXPECT_TRUE(rules.MatchLog(no_level).empty());  // the field is missing
}

TEST(LogRules, InvalidUtf8LinesMatchByTheirBytes) {
  RuleSet rules = MustParse(kSshRule);
  auto m = rules.MatchLog(Log("auth", std::string("Failed password for \xff\xfe from 10.0.0.1")));
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(Field(m[0].second, "user"), "\xff\xfe");
}

TEST(LogRules, BadLogRulesAreRefusedNamingTheLine) {
  std::string err = ErrorOf(
      "rules:\n  - id: x\n    title: t\n    severity: low\n"
      "    match: {kind: log, regex: '(?P<a'}\n");
  EXPECT_NE(err.find("rules.yaml:5:"), std::string::npos) << err;
  EXPECT_NE(err.find("bad RE2"), std::string::npos) << err;
  err = ErrorOf(
      "rules:\n  - id: x\n    title: t\n    severity: low\n    match: {kind: log}\n"
      "    threshold: {count: 3}\n");
  EXPECT_NE(err.find("within is required"), std::string::npos) << err;
  err = ErrorOf(
      "rules:\n  - id: x\n    title: t\n    severity: low\n    match: {kind: file}\n"
      "    threshold: {count: 3, within: 1s}\n");
  EXPECT_NE(err.find("only for kind: log"), std::string::npos) << err;
  err = ErrorOf(
      "rules:\n  - id: x\n    title: t\n    severity: low\n    match:\n      kind: log\n"
      "      where:\n        - {field: a, equals: b, in: [c]}\n");
  EXPECT_NE(err.find("exactly one of"), std::string::npos) << err;
}

TEST(LogThresholds, FiresOncePerWindowPerGroup) {
  RuleSet rules = MustParse(kSshRule);
  const Rule& rule = rules.rules()[0];
  LogThresholds t;
  auto observe = [&](const std::string& ip, int64_t id, int64_t time_ns) {
    Event e = Log("auth", "Failed password for root from " + ip, time_ns);
    auto m = rules.MatchLog(e);
    EXPECT_EQ(m.size(), 1u);
    LogRuleOutcome o = t.Observe(rule, "i-1", id, time_ns, m[0].second);
    if (o.kind == LogRuleOutcome::Kind::kOpen) t.Opened(rule, "i-1", o.group, 100 + id, time_ns);
    return o;
  };
  // Four from one address, interleaved with another address: nothing yet.
  for (int i = 1; i <= 4; ++i) {
    EXPECT_EQ(observe("10.0.0.1", i, i * kSec).kind, LogRuleOutcome::Kind::kNothing);
    EXPECT_EQ(observe("10.0.0.2", 50 + i, i * kSec).kind, LogRuleOutcome::Kind::kNothing);
  }
  LogRuleOutcome fired = observe("10.0.0.1", 5, 5 * kSec);
  ASSERT_EQ(fired.kind, LogRuleOutcome::Kind::kOpen);
  EXPECT_EQ(fired.event_ids, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(fired.group, "ip=10.0.0.1");
  EXPECT_EQ(fired.count, 5);
  // Within the window (the default suppress), further matches join that incident.
  for (int i = 6; i <= 20; ++i) {
    LogRuleOutcome o = observe("10.0.0.1", i, (5 + i) * kSec);
    EXPECT_EQ(o.kind, LogRuleOutcome::Kind::kLink) << i;
    EXPECT_EQ(o.incident_id, 105);
  }
  // After the window, five more fire again, once.
  int opened = 0;
  for (int i = 0; i < 5; ++i) {
    if (observe("10.0.0.1", 200 + i, (70 + i) * kSec).kind == LogRuleOutcome::Kind::kOpen) {
      ++opened;
    }
  }
  EXPECT_EQ(opened, 1);
}

TEST(LogThresholds, MatchesSpreadWiderThanTheWindowNeverFire) {
  RuleSet rules = MustParse(kSshRule);
  const Rule& rule = rules.rules()[0];
  LogThresholds t;
  for (int i = 0; i < 50; ++i) {
    auto m = rules.MatchLog(Log("auth", "Failed password for a from 10.9.9.9"));
    ASSERT_EQ(m.size(), 1u);
    // One every 16 s: never 5 within 60 s.
    EXPECT_EQ(t.Observe(rule, "i-1", i, int64_t{i} * 16 * kSec, m[0].second).kind,
              LogRuleOutcome::Kind::kNothing);
  }
}

TEST(LogThresholds, RulesWithoutThresholdOpenAndThenSuppress) {
  RuleSet rules = MustParse(R"(rules:
  - id: root-login
    title: t
    severity: high
    match: {kind: log, regex: 'Accepted \S+ for root'}
    suppress: 10s
)");
  const Rule& rule = rules.rules()[0];
  LogThresholds t;
  LogMatchFields f;
  LogRuleOutcome o = t.Observe(rule, "i-1", 1, 1 * kSec, f);
  ASSERT_EQ(o.kind, LogRuleOutcome::Kind::kOpen);
  t.Opened(rule, "i-1", o.group, 7, 1 * kSec);
  EXPECT_EQ(t.Observe(rule, "i-1", 2, 5 * kSec, f).kind, LogRuleOutcome::Kind::kLink);
  EXPECT_EQ(t.Observe(rule, "i-2", 3, 5 * kSec, f).kind, LogRuleOutcome::Kind::kOpen);  // agent
  EXPECT_EQ(t.Observe(rule, "i-1", 4, 12 * kSec, f).kind, LogRuleOutcome::Kind::kOpen);
}

// The shipped rules load, and each fires on a line of the kind it is for.
TEST(ShippedLogRules, LoadAndMatchTheirAttacks) {
  absl::StatusOr<RuleSet> rules = LoadRules(std::string(TRIPLINE_SOURCE_DIR) +
                                            "/packaging/config/rules");
  ASSERT_TRUE(rules.ok()) << rules.status();
  auto ids = [&](const Event& e) {
    std::vector<std::string> out;
    for (const auto& [rule, fields] : rules->MatchLog(e)) out.push_back(rule->id);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(ids(Log("auth", "May  1 10:00:00 web-1 sshd[812]: Failed password for invalid user "
                            "oracle from 198.51.100.7 port 52114 ssh2")),
            V{"sshd-brute-force"});
  EXPECT_EQ(ids(Log("auth", "May  1 10:00:00 web-1 sshd[812]: Invalid user oracle from "
                            "198.51.100.7 port 52114")),
            V{"sshd-invalid-users"});
  EXPECT_EQ(ids(Log("auth", "May  1 10:00:00 web-1 sudo:    alice : 3 incorrect password "
                            "attempts ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/sh")),
            V{"sudo-failure"});
  EXPECT_EQ(ids(Log("auth", "May  1 10:00:00 web-1 sudo:      bob : user NOT in sudoers ; "
                            "TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/bin/id")),
            V{"sudo-failure"});
  EXPECT_EQ(ids(Log("auth", "May  1 10:00:00 web-1 sshd[9]: Accepted publickey for root from "
                            "192.0.2.1 port 4000 ssh2")),
            V{"sshd-root-login"});
  EXPECT_EQ(ids(Log("app", "2024-05-01 10:00:00 ERROR payment failed", 0, "/srv/app.log")),
            V{"app-error-burst"});
  EXPECT_EQ(ids(Log("app", "2024-05-01 10:00:00 CRITICAL disk gone", 0, "/srv/app.log")),
            (V{"app-error-burst", "app-critical-burst"}));
  const std::string pre = "203.0.113.5 - - [01/May/2024:10:00:00 +0000] \"GET ";
  const std::string post = " HTTP/1.1\" 404 153 \"-\" \"Mozilla/5.0\"";
  EXPECT_EQ(ids(Log("nginx-access", pre + "/static/../../etc/passwd" + post)),
            V{"web-path-traversal"});
  EXPECT_EQ(ids(Log("nginx-access", pre + "/dl?f=%2e%2e%2f%2e%2e%2fetc%2fshadow" + post)),
            V{"web-path-traversal"});
  EXPECT_EQ(ids(Log("apache-access", pre + "/item?id=1%20UNION%20SELECT%20password" + post)),
            V{"web-sql-injection-probe"});
  EXPECT_EQ(ids(Log("nginx-access", pre + "/login?u=admin%27%20or%20%271%27=%271" + post)),
            V{"web-sql-injection-probe"});
  EXPECT_EQ(ids(Log("nginx-access",
                    "198.51.100.1 - - [01/May/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" "
                    "\"Mozilla/5.00 (Nikto/2.1.6)\"")),
            V{"web-scanner-user-agent"});
  // Ordinary traffic matches nothing.
  EXPECT_EQ(ids(Log("nginx-access", pre + "/index.html?page=2&sort=asc" + post)), V{});
  EXPECT_EQ(ids(Log("auth", "May  1 10:00:00 web-1 sshd[9]: Accepted publickey for alice from "
                            "192.0.2.1 port 4000 ssh2")),
            V{});
}

}  // namespace
}  // namespace tripline::collector
