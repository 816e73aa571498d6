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

namespace tripline::collector {
namespace {

// A cloud rule's incident: isolate (or stop) actions for exactly the launched instances, a line
// instead when the response is off or the event launched nothing.
class CloudIncidentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = CollectorStore::Open(dir_.Sub("c.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto rules = ParseRules(R"(rules:
  - {id: launch-iso, title: Launch, severity: critical,
     match: {kind: cloud, event_names: [RunInstances, CreateKeyPair]}, response: [isolate],
     response_mode: approve}
)", "rules.yaml");
    ASSERT_TRUE(rules.ok()) << rules.status();
    rules_ = *std::move(rules);
  }

  RecordOutcome Record(const std::string& record, bool auto_respond, int64_t* incident) {
    absl::StatusOr<CloudEvent> e = ParseCloudTrailRecord(record, "us-east-1");
    EXPECT_TRUE(e.ok()) << e.status();
    auto w = store_->BeginWrite();
    EXPECT_TRUE(w.ok());
    CloudEventRecord r;
    r.region = "us-east-1";
    r.event_id = e->event_id;
    r.event_name = e->event_name;
    r.raw = record;
    const int64_t id = *w->InsertCloudEvent(r);
    LogRuleOutcome outcome;
    outcome.kind = LogRuleOutcome::Kind::kOpen;
    outcome.event_ids = {id};
    auto out = RecordCloudRuleOutcome(*w, rules_.rules()[0], "cloudtrail:us-east-1", outcome, id,
                                      *e, auto_respond, 9);
    EXPECT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(w->Commit().ok());
    *incident = out.ok() ? out->incident_id : 0;
    return out.ok() ? *out : RecordOutcome{};
  }

  tripline::testing::TempDir dir_;
  std::unique_ptr<CollectorStore> store_;
  RuleSet rules_;
};

TEST_F(CloudIncidentTest, IsolateRuleQueuesOneActionPerLaunchedInstanceInItsMode) {
  int64_t incident = 0;
  RecordOutcome out = Record(
      R"({"eventID":"e-1","eventName":"RunInstances","userIdentity":{"arn":"arn:aws:iam::1:user/x"},
          "responseElements":{"instancesSet":{"items":[{"instanceId":"i-01"},{"instanceId":"i-02"}]}}})",
      true, &incident);
  EXPECT_TRUE(out.opened);
  EXPECT_TRUE(out.isolation_queued);
  auto actions = store_->ListActions(incident, 10);
  ASSERT_TRUE(actions.ok());
  ASSERT_EQ(actions->size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ((*actions)[i].kind, "isolate");
    EXPECT_EQ((*actions)[i].target, i == 0 ? "i-01" : "i-02");
    EXPECT_EQ((*actions)[i].mode, "approve");
    EXPECT_EQ((*actions)[i].actor, "collector");
  }
  auto linked = store_->IncidentCloudEvents(incident);
  ASSERT_TRUE(linked.ok());
  ASSERT_EQ(linked->size(), 1u);
  EXPECT_EQ((*linked)[0].event_id, "e-1");
}

TEST_F(CloudIncidentTest, ResponseOffOrNothingLaunchedQueuesNothingAndSaysSo) {
  int64_t off = 0, none = 0;
  EXPECT_FALSE(Record(R"({"eventID":"e-2","eventName":"RunInstances",
      "responseElements":{"instancesSet":{"items":[{"instanceId":"i-03"}]}}})",
                      false, &off)
                   .isolation_queued);
  EXPECT_FALSE(Record(R"({"eventID":"e-3","eventName":"CreateKeyPair"})", true, &none)
                   .isolation_queued);
  auto actions = store_->ListActions(0, 10);
  ASSERT_TRUE(actions.ok());
  EXPECT_TRUE(actions->empty());
  EXPECT_NE((*store_->GetIncident(off))->summary.find("isolate of i-03 not started: response mode "
                                                      "is off"),
            std::string::npos);
  EXPECT_NE((*store_->GetIncident(none))->summary.find("launched no instance"), std::string::npos);
}

}  // namespace
}  // namespace tripline::collector
