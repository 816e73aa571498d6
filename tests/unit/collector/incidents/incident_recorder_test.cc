#include "collector/incidents/incident_recorder.h"

#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace tripline::collector {
namespace {

using tripline::v1::Event;

class IncidentRecorderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = CollectorStore::Open(dir_.Sub("c.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto rules = ParseRules(R"(rules:
  - {id: iso, title: Isolating, severity: critical, match: {kind: file, paths: ["/etc/**"]},
     response: [isolate]}
  - {id: quiet, title: Quiet, severity: low, match: {kind: file}}
)", "rules.yaml");
    ASSERT_TRUE(rules.ok()) << rules.status();
    rules_ = *std::move(rules);
    auto w = store_->BeginWrite();
    ASSERT_TRUE(w.ok());
    AgentRecord a;
    a.agent_id = "i-1";
    a.public_key = std::string(32, 'k');
    a.durable_digest = std::string(32, '\0');
    ASSERT_TRUE(w->InsertAgent(a).ok());
    ASSERT_TRUE(w->InsertBatch("i-1", 1, "b", "s", 1).ok());
    for (int i = 0; i < 3; ++i) {
      event_ids_.push_back(*w->InsertEvent("i-1", 1, i, i, "file", "/etc/x", "modified", "", 1));
    }
    ASSERT_TRUE(w->Commit().ok());
    event_.mutable_file()->set_path("/etc/x");
    event_.mutable_file()->set_change(tripline::v1::FileEvent::MODIFIED);
  }

  RecordOutcome Record(const std::string& rule_id, int64_t event_id, bool auto_respond = true) {
    auto w = store_->BeginWrite();
    EXPECT_TRUE(w.ok());
    auto out = RecordRuleMatch(*w, *rules_.Find(rule_id), "i-1", event_id, event_, auto_respond, 9);
    EXPECT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(w->Commit().ok());
    return out.ok() ? *out : RecordOutcome{};
  }

  tripline::testing::TempDir dir_;
  std::unique_ptr<CollectorStore> store_;
  RuleSet rules_;
  std::vector<int64_t> event_ids_;
  Event event_;
};

TEST_F(IncidentRecorderTest, FurtherMatchesJoinTheOpenIncident) {
  RecordOutcome first = Record("iso", event_ids_[0]);
  EXPECT_TRUE(first.opened);
  EXPECT_TRUE(first.isolation_queued);
  RecordOutcome second = Record("iso", event_ids_[1]);
  EXPECT_FALSE(second.opened);
  EXPECT_FALSE(second.isolation_queued);
  EXPECT_EQ(second.incident_id, first.incident_id);
  auto inc = *store_->GetIncident(first.incident_id);
  ASSERT_TRUE(inc.has_value());
  EXPECT_EQ(inc->event_ids, (std::vector<int64_t>{event_ids_[0], event_ids_[1]}));
  EXPECT_EQ(inc->severity, "critical");
  EXPECT_NE(inc->summary.find("MODIFIED /etc/x"), std::string::npos) << inc->summary;
  auto actions = *store_->ListActions(first.incident_id, 10);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, "isolate");
  EXPECT_EQ(actions[0].status, "pending");
  EXPECT_EQ(actions[0].target, "i-1");
}

TEST_F(IncidentRecorderTest, DifferentRulesOpenSeparateIncidentsAndResolvedOnesStayClosed) {
  RecordOutcome iso = Record("iso", event_ids_[0]);
  RecordOutcome quiet = Record("quiet", event_ids_[0]);
  EXPECT_NE(iso.incident_id, quiet.incident_id);
  EXPECT_FALSE(quiet.isolation_queued);
  {
    auto w = store_->BeginWrite();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->SetIncidentStatus(quiet.incident_id, "resolved", 10).ok());
    ASSERT_TRUE(w->Commit().ok());
  }
  RecordOutcome again = Record("quiet", event_ids_[2]);
  EXPECT_TRUE(again.opened);
  EXPECT_NE(again.incident_id, quiet.incident_id);
}

TEST_F(IncidentRecorderTest, ResponseModeOffOpensTheIncidentWithoutAnAction) {
  RecordOutcome out = Record("iso", event_ids_[0], /*auto_respond=*/false);
  EXPECT_TRUE(out.opened);
  EXPECT_FALSE(out.isolation_queued);
  EXPECT_TRUE(store_->ListActions(out.incident_id, 10)->empty());
  EXPECT_NE((*store_->GetIncident(out.incident_id))->summary.find("response mode is off"),
            std::string::npos);
}

TEST_F(IncidentRecorderTest, IntegrityFailuresAppendToTheOpenIntegrityIncident) {
  auto w = store_->BeginWrite();
  ASSERT_TRUE(w.ok());
  auto a = RecordIntegrityFailure(*w, "i-1", "chain gap: first", 1);
  auto b = RecordIntegrityFailure(*w, "i-1", "chain fork: second", 2);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(w->Commit().ok());
  EXPECT_EQ(a->incident_id, b->incident_id);
  auto inc = *store_->GetIncident(a->incident_id);
  EXPECT_EQ(inc->rule_id, "integrity");
  EXPECT_EQ(inc->severity, "critical");
  EXPECT_EQ(inc->summary, "chain gap: first\nchain fork: second");
}

}  // namespace
}  // namespace tripline::collector
