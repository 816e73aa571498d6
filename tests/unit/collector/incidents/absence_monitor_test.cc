#include "collector/incidents/absence_monitor.h"

#include <atomic>

#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace tripline::collector {
namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kStart = int64_t{1'700'000'000} * kSecond;

class SteppedClock : public Clock {
 public:
  int64_t NowUnixNanos() const override { return now.load(); }
  int64_t MonotonicNanos() const override { return now.load(); }
  std::atomic<int64_t> now{kStart};
};

class AbsenceMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = CollectorStore::Open(dir_.Sub("c.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto rules = ParseRules(R"(rules:
  - id: web-silent
    title: Web agent silent
    severity: high
    match: {kind: agent, agents: ["i-web*"]}
    absence: {silent_for: 60s}
    response: [isolate]
  - id: any-silent
    title: Any agent silent
    severity: medium
    match: {kind: agent}
    absence: {silent_for: 10m}
)",
                            "rules.yaml");
    ASSERT_TRUE(rules.ok()) << rules.status();
    rules_ = std::make_shared<const RuleSet>(*std::move(rules));
    Enroll("i-web1", kStart - 3600 * kSecond, kStart - 5 * kSecond);
    Enroll("i-db1", kStart - 3600 * kSecond, kStart - 5 * kSecond);
  }

  void Enroll(const std::string& id, int64_t enrolled_ns, int64_t last_seen_ns) {
    auto w = store_->BeginWrite();
    ASSERT_TRUE(w.ok());
    AgentRecord a;
    a.agent_id = id;
    a.public_key = std::string(32, 'k');
    a.durable_digest = std::string(32, '\0');
    a.enrolled_ns = enrolled_ns;
    a.last_seen_ns = last_seen_ns;
    ASSERT_TRUE(w->InsertAgent(a).ok());
    ASSERT_TRUE(w->Commit().ok());
  }

  void Heard(const std::string& id, int64_t when) {
    auto w = store_->BeginWrite();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->AdvanceAgentChain(id, 1, std::string(32, 'd'), when).ok());
    ASSERT_TRUE(w->Commit().ok());
  }

  std::unique_ptr<AbsenceMonitor> Monitor() {
    AbsenceMonitor::Options o;
    o.rules = [this] { return rules_; };
    o.on_opened = [this](const IncidentRecord& i) { notified_.push_back(i.id); };
    o.on_actions_queued = [this] { ++woken_; };
    return std::make_unique<AbsenceMonitor>(store_.get(), std::move(o), clock_);
  }

  std::vector<IncidentRecord> Incidents() { return *store_->ListIncidents("", 100); }

  const IncidentRecord* Find(const std::vector<IncidentRecord>& all, const std::string& rule,
                             const std::string& agent) {
    for (const IncidentRecord& i : all) {
      if (i.rule_id == rule && i.agent_id == agent) return &i;
    }
    return nullptr;
  }

  tripline::testing::TempDir dir_;
  std::unique_ptr<CollectorStore> store_;
  std::shared_ptr<const RuleSet> rules_;
  SteppedClock clock_;
  std::vector<int64_t> notified_;
  int woken_ = 0;
};

TEST(AbsenceRules, ParseAndCoverAgentsByGlob) {
  auto rules = ParseRules(R"(rules:
  - id: s
    title: t
    severity: low
    match: {kind: agent, agents: ["i-web*", "db-?"]}
    absence: {silent_for: 90s}
)",
                          "r.yaml");
  ASSERT_TRUE(rules.ok()) << rules.status();
  const Rule& r = rules->rules()[0];
  EXPECT_EQ(r.kind, RuleKind::kAgent);
  EXPECT_EQ(r.absence_ns, 90 * kSecond);
  EXPECT_TRUE(r.CoversAgent("i-web12"));
  EXPECT_TRUE(r.CoversAgent("db-1"));
  EXPECT_FALSE(r.CoversAgent("db-12"));
  EXPECT_FALSE(r.CoversAgent("i-db1"));
  // Absence rules never match events.
  tripline::v1::Event e;
  e.mutable_agent()->set_kind(tripline::v1::AgentEvent::HEARTBEAT);
  EXPECT_TRUE(rules->Match(e).empty());
  EXPECT_TRUE(rules->MatchLog(e).empty());
}

TEST(AbsenceRules, BadAbsenceRulesNameWhereAndWhy) {
  struct Case {
    const char* yaml;
    const char* want;
  } cases[] = {
      {"match: {kind: agent}", "r.yaml:2:5: rules[0]: kind: agent needs absence"},
      {"match: {kind: agent}\n    absence: {silent_for: 1s}",
       "r.yaml:6:27: rules[0].absence.silent_for: 1s is out of range"},
      {"match: {kind: agent}\n    absence: {}", "absence: silent_for is required"},
      {"match: {kind: agent}\n    absence: {silent_for: 1m, every: 2}", "every"},
      {"match: {kind: agent, paths: [/x]}\n    absence: {silent_for: 1m}",
       "paths: not for kind: agent"},
      {"match: {kind: file}\n    absence: {silent_for: 1m}", "absence: only for kind: agent"},
      {"match: {kind: log, agents: [x]}", "agents: only for kind: agent"},
      {"match: {kind: agent}\n    absence: {silent_for: 1m}\n    threshold: {count: 2, within: 1m}",
       "threshold: only for kind: log"},
  };
  for (const Case& c : cases) {
    const std::string yaml =
        std::string("rules:\n  - id: s\n    title: t\n    severity: low\n    ") + c.yaml + "\n";
    auto rules = ParseRules(yaml, "r.yaml");
    ASSERT_FALSE(rules.ok()) << yaml;
    EXPECT_NE(std::string(rules.status().message()).find(c.want), std::string::npos)
        << rules.status() << "\nfor:\n"
        << yaml;
  }
}

TEST_F(AbsenceMonitorTest, TheCollectorsOwnDowntimeIsNoSilence) {
  // Both agents were last seen an hour before this collector started: that hour says nothing.
  Heard("i-web1", kStart - 3600 * kSecond);
  auto m = Monitor();
  clock_.now = kStart + 59 * kSecond;
  ASSERT_TRUE(m->CheckOnce().ok());
  EXPECT_TRUE(Incidents().empty());
  clock_.now = kStart + 61 * kSecond;
  ASSERT_TRUE(m->CheckOnce().ok());
  auto all = Incidents();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].rule_id, "web-silent");
  EXPECT_EQ(all[0].agent_id, "i-web1");
}

TEST_F(AbsenceMonitorTest, OpensOncePerSilenceRespondsNotifiesAndSaysWhenHeardAgain) {
  auto m = Monitor();
  clock_.now = kStart + 30 * kSecond;
  ASSERT_TRUE(m->CheckOnce().ok());
  EXPECT_TRUE(Incidents().empty());

  clock_.now = kStart + 61 * kSecond;
  ASSERT_TRUE(m->CheckOnce().ok());
  ASSERT_TRUE(m->CheckOnce().ok());  // still silent: nothing new
  auto all = Incidents();
  ASSERT_EQ(all.size(), 1u);
  const IncidentRecord& web = all[0];
  EXPECT_EQ(web.rule_id, "web-silent");
  EXPECT_EQ(web.severity, "high");
  EXPECT_NE(web.summary.find("i-web1 sent nothing, not even a heartbeat, for more than 60s"),
            std::string::npos)
      << web.summary;
  EXPECT_EQ(notified_, std::vector<int64_t>{web.id});
  EXPECT_EQ(woken_, 1);
  auto actions = *store_->ListActions(web.id, 10);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, "isolate");
  EXPECT_EQ(actions[0].target, "i-web1");

  // Heard again: one line on the incident, the episode is over.
  Heard("i-web1", kStart + 70 * kSecond);
  clock_.now = kStart + 71 * kSecond;
  ASSERT_TRUE(m->CheckOnce().ok());
  ASSERT_TRUE(m->CheckOnce().ok());
  auto inc = *store_->GetIncident(web.id);
  ASSERT_TRUE(inc.has_value());
  EXPECT_NE(inc->summary.find("agent i-web1 reporting again"), std::string::npos) << inc->summary;
  EXPECT_EQ(inc->summary.find("reporting again"), inc->summary.rfind("reporting again"));
  EXPECT_TRUE(store_->ListAbsenceEpisodes()->empty());

  // Silent again while the incident is still open: a line on it, no second incident or action.
  clock_.now = kStart + 140 * kSecond;
  ASSERT_TRUE(m->CheckOnce().ok());
  inc = *store_->GetIncident(web.id);
  EXPECT_NE(inc->summary.find("silent again: "), std::string::npos) << inc->summary;
  EXPECT_EQ(Incidents().size(), 1u);
  EXPECT_EQ(store_->ListActions(web.id, 10)->size(), 1u);
  EXPECT_EQ(notified_.size(), 1u);
}

TEST_F(AbsenceMonitorTest, ARestartedCollectorKeepsTheEpisode) {
  auto m = Monitor();
  clock_.now = kStart + 61 * kSecond;
  ASSERT_TRUE(m->CheckOnce().ok());
  ASSERT_EQ(Incidents().size(), 1u);
  m.reset();
  clock_.now = kStart + 300 * kSecond;
  auto restarted = Monitor();
  clock_.now = kStart + 400 * kSecond;
  ASSERT_TRUE(restarted->CheckOnce().ok());
  EXPECT_EQ(Incidents().size(), 1u);  // the same silence: no second incident
  Heard("i-web1", kStart + 401 * kSecond);
  ASSERT_TRUE(restarted->CheckOnce().ok());
  EXPECT_NE(Incidents()[0].summary.find("reporting again"), std::string::npos);
}

TEST_F(AbsenceMonitorTest, EachRuleJudgesItsOwnAgentsAndIsolatedAgentsAreExpectedSilent) {
  {
    auto w = store_->BeginWrite();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->SetIsolationState("i-db1", "isolated").ok());
    ASSERT_TRUE(w->Commit().ok());
  }
  Enroll("i-app1", kStart - 3600 * kSecond, kStart);
  auto m = Monitor();
  clock_.now = kStart + 11 * 60 * kSecond;
  ASSERT_TRUE(m->CheckOnce().ok());
  auto all = Incidents();
  EXPECT_EQ(all.size(), 3u);  // web-silent and any-silent for i-web1, any-silent for i-app1
  EXPECT_NE(Find(all, "web-silent", "i-web1"), nullptr);
  EXPECT_NE(Find(all, "any-silent", "i-web1"), nullptr);
  EXPECT_NE(Find(all, "any-silent", "i-app1"), nullptr);
  EXPECT_EQ(Find(all, "web-silent", "i-app1"), nullptr);
  EXPECT_EQ(Find(all, "any-silent", "i-db1"), nullptr);
}

TEST_F(AbsenceMonitorTest, ARuleRemovedOnReloadEndsItsEpisodes) {
  auto m = Monitor();
  clock_.now = kStart + 61 * kSecond;
  ASSERT_TRUE(m->CheckOnce().ok());
  ASSERT_EQ(store_->ListAbsenceEpisodes()->size(), 1u);
  rules_ = std::make_shared<const RuleSet>();
  ASSERT_TRUE(m->CheckOnce().ok());
  EXPECT_TRUE(store_->ListAbsenceEpisodes()->empty());
  EXPECT_NE(Incidents()[0].summary.find("rule web-silent no longer watches for silence"),
            std::string::npos);
}

TEST_F(AbsenceMonitorTest, ResponseModeOffLeavesALineInsteadOfAnAction) {
  AbsenceMonitor::Options o;
  o.rules = [this] { return rules_; };
  o.auto_respond = false;
  AbsenceMonitor m(store_.get(), std::move(o), clock_);
  clock_.now = kStart + 61 * kSecond;
  ASSERT_TRUE(m.CheckOnce().ok());
  auto all = Incidents();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_TRUE(store_->ListActions(all[0].id, 10)->empty());
  EXPECT_NE(all[0].summary.find("response mode is off"), std::string::npos);
}

TEST_F(AbsenceMonitorTest, ItsThreadChecksEveryTickUntilStopped) {
  AbsenceMonitor::Options o;
  o.rules = [this] { return rules_; };
  o.tick = absl::Milliseconds(5);
  AbsenceMonitor m(store_.get(), std::move(o), clock_);
  clock_.now = kStart + 61 * kSecond;
  m.Start();
  for (int i = 0; i < 2000 && Incidents().empty(); ++i) absl::SleepFor(absl::Milliseconds(5));
  m.Stop();
  EXPECT_EQ(Incidents().size(), 1u);
}

}  // namespace
}  // namespace tripline::collector
