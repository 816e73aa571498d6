// A file event that matches an isolating rule, end to end in process: batch -> store writer ->
// rule -> incident -> isolate action -> response worker -> (fake) EC2 -> audit trail.
#include "collector/response/isolation_worker.h"

#include "collector/incidents/incident_recorder.h"
#include "gtest/gtest.h"
#include "tests/unit/collector/collector_test_env.h"

namespace tripline::collector {
namespace {

using testing::TestAgent;
using testing::TestCollector;
using testing::WaitFor;

constexpr char kInstance[] = "i-0abc";

std::vector<ActionRecord> Actions(TestCollector& c, int64_t incident_id) {
  absl::StatusOr<std::vector<ActionRecord>> a = c.store()->ListActions(incident_id, 1000);
  return a.ok() ? *a : std::vector<ActionRecord>{};
}

const ActionRecord* Find(const std::vector<ActionRecord>& actions, const std::string& kind,
                         const std::string& target) {
  for (const ActionRecord& a : actions) {
    if (a.kind == kind && a.target == target) return &a;
  }
  return nullptr;
}

// Enrolls an agent and publishes one batch with the given file events.
void Publish(TestAgent& agent, std::vector<tripline::v1::Event> events) {
  if (agent.seq() == 0) {
    ASSERT_TRUE(agent.Enroll().ok());
  }
  const uint64_t seq = agent.seq() + 1;
  TestAgent::PublishOutcome out = agent.Publish({agent.NextBatch(std::move(events))}, seq);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
}

TEST(Isolation, MatchingFileEventOpensOneIncidentAndIsolatesEveryInterface) {
  auto ec2 = std::make_shared<testing::FakeInstanceNetwork::State>();
  ec2->instances[kInstance] = testing::TwoInterfaceInstance(kInstance);
  TestCollector c(testing::kEtcRule, ec2);
  c.Start();
  TestAgent agent(kInstance, c.channel());
  Publish(agent, {TestAgent::FileEvent("/etc/ssh/sshd_config", tripline::v1::FileEvent::MODIFIED, 1),
                     TestAgent::FileEvent("/etc/passwd", tripline::v1::FileEvent::MODIFIED, 2),
                     TestAgent::FileEvent("/var/log/x", tripline::v1::FileEvent::MODIFIED, 3)});

  ASSERT_TRUE(WaitFor([&] {
    auto i = c.IncidentsOf("etc-changed");
    return !i.empty() && i[0].status == "contained";
  })) << (c.IncidentsOf("etc-changed").empty() ? "no incident"
                                               : c.IncidentsOf("etc-changed")[0].summary);
  std::vector<IncidentRecord> incidents = c.IncidentsOf("etc-changed");
  ASSERT_EQ(incidents.size(), 1u);  // two matching events, one incident
  const IncidentRecord& inc = incidents[0];
  EXPECT_EQ(inc.event_ids.size(), 2u);
  EXPECT_EQ(inc.severity, "high");
  EXPECT_NE(inc.summary.find("contained"), std::string::npos) << inc.summary;

  std::vector<ActionRecord> actions = Actions(c, inc.id);
  const ActionRecord* isolate = Find(actions, "isolate", kInstance);
  ASSERT_NE(isolate, nullptr);
  EXPECT_EQ(isolate->status, "done");
  const ActionRecord* describe = Find(actions, "ec2:DescribeInstances", kInstance);
  ASSERT_NE(describe, nullptr);
  EXPECT_EQ(describe->status, "done");
  EXPECT_FALSE(describe->aws_request_id.empty());
  EXPECT_NE(describe->detail.find("eni-web: sg-web,sg-ssh"), std::string::npos) << describe->detail;
  const ActionRecord* web = Find(actions, "ec2:ModifyNetworkInterfaceAttribute", "eni-web");
  ASSERT_NE(web, nullptr);
  EXPECT_EQ(web->status, "done");
  EXPECT_EQ(web->detail, "eni-web: sg-web,sg-ssh -> sg-0isolation");
  EXPECT_FALSE(web->aws_request_id.empty());
  const ActionRecord* mgmt = Find(actions, "ec2:ModifyNetworkInterfaceAttribute", "eni-mgmt");
  ASSERT_NE(mgmt, nullptr);
  EXPECT_EQ(mgmt->detail, "eni-mgmt: sg-mgmt -> sg-0isolation");

  {
    std::lock_guard<std::mutex> lock(ec2->mu);
    for (const aws::NetworkInterface& eni : ec2->instances[kInstance].interfaces) {
      EXPECT_EQ(eni.group_ids, std::vector<std::string>{testing::kIsolationGroup});
    }
    EXPECT_EQ(ec2->calls.size(), 3u);
  }
  EXPECT_EQ((*c.store()->GetAgent(kInstance))->isolation_state, "isolated");

  // A later match joins the incident already open and does not isolate again.
  Publish(agent, {TestAgent::FileEvent("/etc/shadow", tripline::v1::FileEvent::ATTRIB, 4)});
  ASSERT_TRUE(WaitFor([&] { return c.IncidentsOf("etc-changed")[0].event_ids.size() == 3; }));
  EXPECT_EQ(c.IncidentsOf("etc-changed").size(), 1u);
  std::lock_guard<std::mutex> lock(ec2->mu);
  EXPECT_EQ(ec2->calls.size(), 3u);
}

TEST(Isolation, Ec2ErrorIsRecordedAndTheIncidentIsNotContained) {
  auto ec2 = std::make_shared<testing::FakeInstanceNetwork::State>();
  ec2->instances[kInstance] = testing::TwoInterfaceInstance(kInstance);
  ec2->fail["ModifyNetworkInterfaceAttribute"] = {"InvalidGroup.NotFound",
                                                  "The security group 'sg-0isolation' does not "
                                                  "exist"};
  TestCollector c(testing::kEtcRule, ec2);
  c.Start();
  TestAgent agent(kInstance, c.channel());
  Publish(agent, {TestAgent::FileEvent("/etc/hosts")});

  ASSERT_TRUE(WaitFor([&] {
    auto a = c.store()->GetAgent(kInstance);
    return a.ok() && *a && (*a)->isolation_state == "failed";
  }));
  std::vector<IncidentRecord> incidents = c.IncidentsOf("etc-changed");
  ASSERT_EQ(incidents.size(), 1u);
  EXPECT_EQ(incidents[0].status, "open");
  EXPECT_NE(incidents[0].summary.find("InvalidGroup.NotFound"), std::string::npos)
      << incidents[0].summary;
  std::vector<ActionRecord> actions = Actions(c, incidents[0].id);
  const ActionRecord* web = Find(actions, "ec2:ModifyNetworkInterfaceAttribute", "eni-web");
  ASSERT_NE(web, nullptr);
  EXPECT_EQ(web->status, "failed");
  EXPECT_EQ(web->error_code, "InvalidGroup.NotFound");
  EXPECT_EQ(web->error_message, "The security group 'sg-0isolation' does not exist");
  EXPECT_FALSE(web->aws_request_id.empty());
  const ActionRecord* isolate = Find(actions, "isolate", kInstance);
  ASSERT_NE(isolate, nullptr);
  EXPECT_EQ(isolate->status, "failed");
  EXPECT_EQ(isolate->error_code, "InvalidGroup.NotFound");
}

TEST(Isolation, UnknownInstanceFailsAtDescribe) {
  auto ec2 = std::make_shared<testing::FakeInstanceNetwork::State>();
  TestCollector c(testing::kEtcRule, ec2);
  c.Start();
  TestAgent agent("i-notinec2", c.channel());
  Publish(agent, {TestAgent::FileEvent("/etc/hosts")});
  ASSERT_TRUE(WaitFor([&] {
    auto i = c.IncidentsOf("etc-changed");
    return !i.empty() && i[0].summary.find("InvalidInstanceID.NotFound") != std::string::npos;
  }));
  std::vector<ActionRecord> actions = Actions(c, c.IncidentsOf("etc-changed")[0].id);
  const ActionRecord* describe = Find(actions, "ec2:DescribeInstances", "i-notinec2");
  ASSERT_NE(describe, nullptr);
  EXPECT_EQ(describe->status, "failed");
  EXPECT_EQ(Find(actions, "ec2:ModifyNetworkInterfaceAttribute", "eni-web"), nullptr);
}

// The worker alone: an action left running by a stopped collector is carried out at start, and
// the step it was in the middle of is closed as interrupted.
TEST(Isolation, UnfinishedActionIsResumedAtStart) {
  tripline::testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<CollectorStore>> store =
      CollectorStore::Open(dir.Sub("collector.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  int64_t incident_id = 0, stale_step = 0;
  {
    auto w = (*store)->BeginWrite();
    ASSERT_TRUE(w.ok());
    AgentRecord agent;
    agent.agent_id = kInstance;
    agent.public_key = std::string(32, 'k');
    agent.durable_digest = std::string(32, '\0');
    ASSERT_TRUE(w->InsertAgent(agent).ok());
    IncidentRecord inc;
    inc.agent_id = kInstance;
    inc.rule_id = "etc-changed";
    inc.title = "t";
    inc.severity = "high";
    inc.status = "open";
    incident_id = *w->InsertIncident(inc);
    ActionRecord parent;
    parent.incident_id = incident_id;
    parent.agent_id = kInstance;
    parent.kind = kIsolateActionKind;
    parent.target = kInstance;
    parent.status = "running";
    int64_t parent_id = *w->InsertAction(parent);
    ActionRecord step = parent;
    step.parent_id = parent_id;
    step.kind = "ec2:DescribeInstances";
    step.status = "running";
    stale_step = *w->InsertAction(step);
    ASSERT_TRUE(w->Commit().ok());
  }
  auto ec2 = std::make_shared<testing::FakeInstanceNetwork::State>();
  ec2->instances[kInstance] = testing::TwoInterfaceInstance(kInstance);
  IsolationWorker worker(store->get(), std::make_unique<testing::FakeInstanceNetwork>(ec2),
                         absl::OkStatus(), {testing::kIsolationGroup}, SystemClock());
  worker.Start();
  ASSERT_TRUE(WaitFor([&] {
    auto i = (*store)->GetIncident(incident_id);
    return i.ok() && *i && (*i)->status == "contained";
  }));
  worker.Stop();
  std::vector<ActionRecord> actions = *(*store)->ListActions(incident_id, 100);
  for (const ActionRecord& a : actions) {
    if (a.id == stale_step) {
      EXPECT_EQ(a.status, "failed");
      EXPECT_EQ(a.error_code, "Interrupted");
    }
  }
  EXPECT_EQ(actions.size(), 5u);  // parent, stale step, describe, two interfaces
}

TEST(Isolation, WithoutEc2CredentialsTheActionFailsWithAClearError) {
  tripline::testing::TempDir dir;
  auto store = CollectorStore::Open(dir.Sub("collector.db"));
  ASSERT_TRUE(store.ok());
  int64_t action_id = 0;
  {
    auto w = (*store)->BeginWrite();
    ASSERT_TRUE(w.ok());
    ActionRecord parent;
    parent.agent_id = kInstance;
    parent.kind = kIsolateActionKind;
    parent.target = kInstance;
    parent.status = "pending";
    action_id = *w->InsertAction(parent);
    ASSERT_TRUE(w->Commit().ok());
  }
  IsolationWorker worker(store->get(), nullptr,
                         absl::NotFoundError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are "
                                             "not set"),
                         {testing::kIsolationGroup}, SystemClock());
  worker.Start();
  ASSERT_TRUE(WaitFor([&] {
    auto a = (*store)->ListActions(0, 10);
    return a.ok() && !a->empty() && (*a)[0].status == "failed";
  }));
  worker.Stop();
  ActionRecord a = (*(*store)->ListActions(0, 10))[0];
  EXPECT_EQ(a.id, action_id);
  EXPECT_EQ(a.error_code, "NoCredentials");
  EXPECT_NE(a.error_message.find("AWS_ACCESS_KEY_ID"), std::string::npos);
}

}  // namespace
}  // namespace tripline::collector
