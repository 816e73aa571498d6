// The response worker against the in-memory AWS fake: the whole isolation recipe in order, resume
// after a stop between any two calls without repeating a call, release back to the recorded
// state, dry-run, and the guardrails (never-isolate, hourly cap, approval). End to end in process
// where an incident is involved: batch -> store writer -> rule -> incident -> isolate action ->
// response worker -> fake AWS -> audit trail.
#include "collector/response/isolation_worker.h"

#include <thread>

#include "absl/strings/match.h"
#include "collector/incidents/incident_recorder.h"
#include "gtest/gtest.h"
#include "tests/unit/collector/collector_test_env.h"

namespace tripline::collector {
namespace {

using testing::AddInstance;
using testing::FakeInstanceNetwork;
using testing::TestAgent;
using testing::TestCollector;
using testing::TwoInterfaceInstance;
using testing::WaitFor;

constexpr char kInstance[] = "i-0abc";

std::vector<ActionRecord> Actions(CollectorStore* store, int64_t incident_id) {
  absl::StatusOr<std::vector<ActionRecord>> a = store->ListActions(incident_id, 10000);
  return a.ok() ? *a : std::vector<ActionRecord>{};
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

// A store with one pending isolate action of kInstance (and its agent); returns the action id.
int64_t QueueIsolate(CollectorStore* store, const std::string& mode = "",
                     const std::string& instance = kInstance, const std::string& kind = "isolate") {
  auto w = store->BeginWrite();
  EXPECT_TRUE(w.ok());
  if (!(*w->GetAgent(instance)).has_value()) {
    AgentRecord agent;
    agent.agent_id = instance;
    agent.public_key = std::string(32, 'k');
    agent.durable_digest = std::string(32, '\0');
    EXPECT_TRUE(w->InsertAgent(agent).ok());
  }
  ActionRecord a;
  a.agent_id = instance;
  a.kind = kind;
  a.target = instance;
  a.status = "pending";
  a.actor = "operator";
  a.mode = mode;
  a.created_ns = a.updated_ns = SystemClock().NowUnixNanos();
  int64_t id = *w->InsertAction(a);
  EXPECT_TRUE(w->Commit().ok());
  return id;
}

bool ActionFinished(CollectorStore* store, int64_t id) {
  auto a = store->GetAction(id);
  return a.ok() && *a && ((*a)->status == "done" || (*a)->status == "failed");
}

// The calls of the whole recipe on TwoInterfaceInstance(kInstance), in order.
std::vector<std::string> RecipeCalls() {
  const std::string web = std::string("eni-web-") + kInstance;
  const std::string mgmt = std::string("eni-mgmt-") + kInstance;
  return {
      "DescribeInstances i-0abc",
      "DescribeSecurityGroups vpc-1 tripline-untrack",
      "CreateSecurityGroup vpc-1 tripline-untrack",
      "AuthorizeSecurityGroupIngress sg-new1",
      "DescribeSecurityGroups vpc-1 tripline-isolation",
      "CreateSecurityGroup vpc-1 tripline-isolation",
      "RevokeSecurityGroupEgress sg-new2",
      "ModifyNetworkInterfaceAttribute " + web + " sg-new1",
      "ModifyNetworkInterfaceAttribute " + web + " sg-new2",
      "ModifyNetworkInterfaceAttribute " + mgmt + " sg-new1",
      "ModifyNetworkInterfaceAttribute " + mgmt + " sg-new2",
      "DescribeInstanceAttribute i-0abc disableApiTermination",
      "DescribeInstanceAttribute i-0abc instanceInitiatedShutdownBehavior",
      "DescribeIamInstanceProfileAssociations i-0abc",
      "DescribeAutoScalingInstances i-0abc",
      "ModifyInstanceAttribute i-0abc DisableApiTermination=true",
      "ModifyInstanceAttribute i-0abc InstanceInitiatedShutdownBehavior=stop",
      "ModifyInstanceAttribute i-0abc DeleteOnTermination /dev/xvda=false",
      "ModifyInstanceAttribute i-0abc DeleteOnTermination /dev/xvdf=false",
      "EnterStandby web-asg i-0abc",
      "CreateTags i-0abc",
      "GetInstanceProfile web",
      "DisassociateIamInstanceProfile iip-assoc-i-0abc",
      "PutRolePolicy web-role tripline-revoke-sessions-incident-none",
      "CreateSnapshots i-0abc",
  };
}

class Recipe : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = CollectorStore::Open(dir_.Sub("collector.db"));
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    ec2_ = std::make_shared<FakeInstanceNetwork::State>();
    AddInstance(*ec2_, TwoInterfaceInstance(kInstance));
    {
      std::lock_guard<std::mutex> lock(ec2_->mu);
      ec2_->asg_of[kInstance] = "web-asg";
      ec2_->asg_state[kInstance] = "InService";
    }
  }
  std::unique_ptr<IsolationWorker> Worker(IsolationWorker::Options options = {}) {
    return std::make_unique<IsolationWorker>(store_.get(),
                                             std::make_unique<FakeInstanceNetwork>(ec2_),
                                             absl::OkStatus(), options, SystemClock());
  }
  std::vector<std::string> Calls() {
    std::lock_guard<std::mutex> lock(ec2_->mu);
    return ec2_->calls;
  }

  tripline::testing::TempDir dir_;
  std::unique_ptr<CollectorStore> store_;
  std::shared_ptr<FakeInstanceNetwork::State> ec2_;
};

// Renames the fake's sg-newN ids to sg-new1 / sg-new2 in order of appearance.
std::vector<std::string> Normalized(std::vector<std::string> calls) {
  std::map<std::string, std::string> names;
  for (std::string& c : calls) {
    size_t at = 0;
    while ((at = c.find("sg-new", at)) != std::string::npos) {
      size_t end = at + 6;
      while (end < c.size() && isdigit(static_cast<unsigned char>(c[end]))) ++end;
      const std::string id = c.substr(at, end - at);
      auto [it, added] = names.emplace(id, "sg-new" + std::to_string(names.size() + 1));
      c.replace(at, end - at, it->second);
      at += it->second.size();
    }
  }
  return calls;
}

TEST_F(Recipe, IsolatesATwoInterfaceInstanceStepByStepInTheDocumentedOrder) {
  const int64_t id = QueueIsolate(store_.get());
  auto worker = Worker();
  worker->Start();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), id); }));
  worker->Stop();

  EXPECT_EQ(Normalized(Calls()), RecipeCalls());
  const ActionRecord parent = **store_->GetAction(id);
  EXPECT_EQ(parent.status, "done") << parent.error_code << ": " << parent.error_message;
  std::vector<ActionRecord> steps = *store_->Steps(id);
  ASSERT_EQ(steps.size(), RecipeCalls().size());
  std::set<std::string> keys;
  for (const ActionRecord& s : steps) {
    EXPECT_EQ(s.status, "done") << s.step_key;
    EXPECT_TRUE(absl::StartsWith(s.aws_request_id, "req-")) << s.step_key;
    EXPECT_TRUE(keys.insert(s.step_key).second) << "step key repeats: " << s.step_key;
  }

  std::lock_guard<std::mutex> lock(ec2_->mu);
  std::string untrack, isolation;
  for (const auto& [gid, g] : ec2_->groups) {
    if (g.name == "tripline-untrack") untrack = gid;
    if (g.name == "tripline-isolation") isolation = gid;
  }
  ASSERT_FALSE(untrack.empty());
  ASSERT_FALSE(isolation.empty());
  EXPECT_TRUE(ec2_->groups[untrack].ingress_all);
  EXPECT_TRUE(ec2_->groups[untrack].default_egress);
  EXPECT_FALSE(ec2_->groups[isolation].ingress_all);
  EXPECT_FALSE(ec2_->groups[isolation].default_egress);
  EXPECT_EQ(ec2_->groups[isolation].tags.at("tripline:role"), "isolation");
  for (const aws::NetworkInterface& e : ec2_->instances[kInstance].interfaces) {
    EXPECT_EQ(e.group_ids, std::vector<std::string>{isolation}) << e.interface_id;
  }
  EXPECT_TRUE(ec2_->termination_protection[kInstance]);
  EXPECT_EQ(ec2_->shutdown_behavior[kInstance], "stop");
  for (const aws::Volume& v : ec2_->instances[kInstance].volumes) {
    EXPECT_FALSE(v.delete_on_termination) << v.device_name;
  }
  EXPECT_EQ(ec2_->asg_state[kInstance], "Standby");
  EXPECT_EQ(ec2_->associations.count(kInstance), 0u);
  const std::string& policy =
      ec2_->role_policies["web-role"]["tripline-revoke-sessions-incident-none"];
  EXPECT_NE(policy.find(R"("DateLessThan":{"aws:TokenIssueTime":")"), std::string::npos) << policy;
  EXPECT_NE(policy.find(R"("Effect":"Deny","Action":"*")"), std::string::npos) << policy;
  EXPECT_EQ(ec2_->snapshots.size(), 2u);
  EXPECT_EQ(ec2_->instances[kInstance].tags.at("tripline:incident"), "none");
}

}  // namespace
}  // namespace tripline::collector

namespace tripline::collector {
namespace {

// A stop between any two calls (the collector shutting down) leaves the action running; the next
// worker on the same database resumes it from the step after the last one done, and the whole
// isolation makes every call of the recipe exactly once.
TEST(RecipeResume, StopBetweenAnyTwoCallsResumesWithoutRepeatingACall) {
  const size_t total = RecipeCalls().size();
  for (size_t k = 0; k + 1 < total; ++k) {
    SCOPED_TRACE(::testing::Message() << "stopped after call " << k + 1);
    tripline::testing::TempDir dir;
    auto store = *CollectorStore::Open(dir.Sub("collector.db"));
    auto ec2 = std::make_shared<FakeInstanceNetwork::State>();
    AddInstance(*ec2, TwoInterfaceInstance(kInstance));
    ec2->asg_of[kInstance] = "web-asg";
    ec2->asg_state[kInstance] = "InService";
    const int64_t id = QueueIsolate(store.get());

    auto first = std::make_unique<IsolationWorker>(
        store.get(), std::make_unique<FakeInstanceNetwork>(ec2), absl::OkStatus(),
        IsolationWorker::Options{}, SystemClock());
    std::thread stopper;
    ec2->on_call = [&](size_t made) {
      if (made != k) return;
      // Call k+1 is starting: stop the worker, and let the call go on only once the stop is
      // seen, so the worker stops right after recording it.
      stopper = std::thread([&] { first->Stop(); });
      while (!first->Stopping()) std::this_thread::yield();
    };
    first->Start();
    ASSERT_TRUE(WaitFor([&] {
      std::lock_guard<std::mutex> lock(ec2->mu);
      return stopper.joinable();
    }));
    stopper.join();
    {
      std::lock_guard<std::mutex> lock(ec2->mu);
      ec2->on_call = nullptr;
      ASSERT_EQ(ec2->calls.size(), k + 1);
    }
    EXPECT_EQ((*store->GetAction(id))->status, "running");

    IsolationWorker second(store.get(), std::make_unique<FakeInstanceNetwork>(ec2),
                           absl::OkStatus(), IsolationWorker::Options{}, SystemClock());
    second.Start();
    ASSERT_TRUE(WaitFor([&] { return ActionFinished(store.get(), id); }));
    second.Stop();
    EXPECT_EQ((*store->GetAction(id))->status, "done");
    std::lock_guard<std::mutex> lock(ec2->mu);
    EXPECT_EQ(Normalized(ec2->calls), RecipeCalls());
    EXPECT_EQ(store->Steps(id)->size(), total);
  }
}

// A step the collector was in the middle of when it died (still "running") is run again in the
// same row; nothing before it is.
TEST(RecipeResume, StepLeftRunningByACrashIsRunAgainInItsRow) {
  tripline::testing::TempDir dir;
  auto store = *CollectorStore::Open(dir.Sub("collector.db"));
  const int64_t id = QueueIsolate(store.get());
  int64_t stale = 0;
  {
    auto w = store->BeginWrite();
    ActionRecord parent = **store->GetAction(id);
    parent.status = "running";
    ASSERT_TRUE(w->UpdateAction(parent).ok());
    ActionRecord step = parent;
    step.parent_id = id;
    step.kind = "ec2:DescribeInstances";
    step.step_key = "describe";
    step.status = "running";
    stale = *w->InsertAction(step);
    ASSERT_TRUE(w->Commit().ok());
  }
  auto ec2 = std::make_shared<FakeInstanceNetwork::State>();
  AddInstance(*ec2, TwoInterfaceInstance(kInstance));
  IsolationWorker worker(store.get(), std::make_unique<FakeInstanceNetwork>(ec2), absl::OkStatus(),
                         IsolationWorker::Options{}, SystemClock());
  worker.Start();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store.get(), id); }));
  worker.Stop();
  std::vector<ActionRecord> steps = *store->Steps(id);
  ASSERT_FALSE(steps.empty());
  EXPECT_EQ(steps[0].id, stale);
  EXPECT_EQ(steps[0].status, "done");
  EXPECT_FALSE(steps[0].result.empty());
  std::lock_guard<std::mutex> lock(ec2->mu);
  EXPECT_EQ(ec2->calls.size(), RecipeCalls().size() - 1);  // not in an Auto Scaling group
}

TEST_F(Recipe, ReleaseRestoresExactlyTheRecordedState) {
  aws::Instance before;
  std::string profile_before;
  {
    std::lock_guard<std::mutex> lock(ec2_->mu);
    before = ec2_->instances[kInstance];
    profile_before = before.iam_instance_profile_arn;
  }
  const int64_t isolate = QueueIsolate(store_.get());
  auto worker = Worker();
  worker->Start();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), isolate); }));
  const int64_t release = QueueIsolate(store_.get(), "", kInstance, kReleaseActionKind);
  worker->Wake();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), release); }));
  worker->Stop();

  const ActionRecord r = **store_->GetAction(release);
  EXPECT_EQ(r.status, "done") << r.error_code << ": " << r.error_message;
  std::lock_guard<std::mutex> lock(ec2_->mu);
  const aws::Instance& after = ec2_->instances[kInstance];
  ASSERT_EQ(after.interfaces.size(), before.interfaces.size());
  for (size_t i = 0; i < before.interfaces.size(); ++i) {
    EXPECT_EQ(after.interfaces[i].group_ids, before.interfaces[i].group_ids);
  }
  EXPECT_EQ(ec2_->associations.count(kInstance), 1u);
  EXPECT_EQ(after.iam_instance_profile_arn, profile_before);
  EXPECT_EQ(ec2_->shutdown_behavior[kInstance], "terminate");  // as recorded
  EXPECT_EQ(ec2_->asg_state[kInstance], "InService");
  EXPECT_EQ(after.tags.count("tripline:released-at"), 1u);
  // Evidence protection stays.
  EXPECT_TRUE(ec2_->termination_protection[kInstance]);
  std::vector<std::string> tail(ec2_->calls.end() - 6, ec2_->calls.end());
  EXPECT_EQ(tail[0], "ModifyNetworkInterfaceAttribute eni-web-i-0abc sg-web,sg-ssh");
  EXPECT_EQ(tail[1], "ModifyNetworkInterfaceAttribute eni-mgmt-i-0abc sg-mgmt");
  EXPECT_EQ(tail[2], "AssociateIamInstanceProfile i-0abc " + profile_before);
  EXPECT_EQ(tail[3], "ModifyInstanceAttribute i-0abc InstanceInitiatedShutdownBehavior=terminate");
  EXPECT_EQ(tail[4], "ExitStandby web-asg i-0abc");
  EXPECT_EQ(tail[5], "CreateTags i-0abc");
}

// Isolated twice (a second incident), released once: back to the state before the first
// isolation, not to the isolation groups the second one saw.
TEST_F(Recipe, ReleaseAfterTwoIsolationsRestoresTheStateBeforeTheFirst) {
  const int64_t first = QueueIsolate(store_.get());
  auto worker = Worker();
  worker->Start();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), first); }));
  const int64_t second = QueueIsolate(store_.get());
  worker->Wake();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), second); }));
  const int64_t release = QueueIsolate(store_.get(), "", kInstance, kReleaseActionKind);
  worker->Wake();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), release); }));
  EXPECT_EQ((*store_->GetAction(release))->status, "done");
  {
    std::lock_guard<std::mutex> lock(ec2_->mu);
    EXPECT_EQ(ec2_->instances[kInstance].interfaces[0].group_ids,
              (std::vector<std::string>{"sg-web", "sg-ssh"}));
    EXPECT_EQ(ec2_->shutdown_behavior[kInstance], "terminate");
  }
  // Isolated and released again: the next release works from the third isolation's record.
  const int64_t third = QueueIsolate(store_.get());
  worker->Wake();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), third); }));
  const int64_t again = QueueIsolate(store_.get(), "", kInstance, kReleaseActionKind);
  worker->Wake();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), again); }));
  worker->Stop();
  EXPECT_EQ((*store_->GetAction(again))->status, "done");
  std::lock_guard<std::mutex> lock(ec2_->mu);
  EXPECT_EQ(ec2_->instances[kInstance].interfaces[1].group_ids,
            (std::vector<std::string>{"sg-mgmt"}));
}

TEST_F(Recipe, DryRunSendsDryRunAndChangesNothing) {
  aws::Instance before;
  size_t groups_before;
  {
    std::lock_guard<std::mutex> lock(ec2_->mu);
    before = ec2_->instances[kInstance];
    groups_before = ec2_->groups.size();
  }
  const int64_t id = QueueIsolate(store_.get(), "dry-run");
  auto worker = Worker();
  worker->Start();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), id); }));
  worker->Stop();
  EXPECT_EQ((*store_->GetAction(id))->status, "done");
  const std::vector<ActionRecord> steps = *store_->Steps(id);
  for (const ActionRecord& s : steps) {
    EXPECT_EQ(s.status, "done") << s.step_key << " " << s.error_code;
  }
  EXPECT_EQ((*store_->GetAgent(kInstance))->isolation_state, "");
  std::lock_guard<std::mutex> lock(ec2_->mu);
  const aws::Instance& after = ec2_->instances[kInstance];
  for (size_t i = 0; i < before.interfaces.size(); ++i) {
    EXPECT_EQ(after.interfaces[i].group_ids, before.interfaces[i].group_ids);
  }
  EXPECT_EQ(after.tags, before.tags);
  EXPECT_EQ(ec2_->groups.size(), groups_before);
  EXPECT_EQ(ec2_->associations.count(kInstance), 1u);
  EXPECT_EQ(ec2_->shutdown_behavior[kInstance], "terminate");
  EXPECT_FALSE(ec2_->termination_protection[kInstance]);
  EXPECT_EQ(ec2_->asg_state[kInstance], "InService");
  EXPECT_TRUE(ec2_->role_policies.empty());
  EXPECT_TRUE(ec2_->snapshots.empty());
  for (const std::string& call : ec2_->calls) {
    const bool writes = !absl::StartsWith(call, "Describe") && !absl::StartsWith(call, "Get");
    EXPECT_EQ(writes, absl::EndsWith(call, "(DryRun)")) << call;
    EXPECT_FALSE(absl::StartsWith(call, "PutRolePolicy")) << "IAM has no DryRun: not sent";
    EXPECT_FALSE(absl::StartsWith(call, "EnterStandby")) << "Auto Scaling has no DryRun";
  }
}

TEST_F(Recipe, NeverIsolateByIdMakesNoCallAndByTagStopsAfterDescribe) {
  IsolationWorker::Options options;
  options.never_isolate_ids = {"i-0collector"};
  options.never_isolate_tags = {{"tripline:never-isolate", ""}};
  aws::Instance tagged = TwoInterfaceInstance("i-0bastion");
  tagged.tags["tripline:never-isolate"] = "yes";
  AddInstance(*ec2_, tagged);
  AddInstance(*ec2_, TwoInterfaceInstance("i-0collector"));
  const int64_t by_id = QueueIsolate(store_.get(), "", "i-0collector");
  const int64_t by_tag = QueueIsolate(store_.get(), "", "i-0bastion");
  auto worker = Worker(options);
  worker->Start();
  ASSERT_TRUE(WaitFor(
      [&] { return ActionFinished(store_.get(), by_id) && ActionFinished(store_.get(), by_tag); }));
  worker->Stop();
  for (int64_t id : {by_id, by_tag}) {
    const ActionRecord a = **store_->GetAction(id);
    EXPECT_EQ(a.status, "failed");
    EXPECT_EQ(a.error_code, "NeverIsolate");
  }
  EXPECT_NE((*store_->GetAction(by_tag))->error_message.find("tripline:never-isolate=yes"),
            std::string::npos);
  std::lock_guard<std::mutex> lock(ec2_->mu);
  EXPECT_EQ(ec2_->calls, std::vector<std::string>{"DescribeInstances i-0bastion"});
}

TEST_F(Recipe, FailedContainmentCallStopsTheActionWithAwsErrorOnIt) {
  ec2_->fail["ModifyNetworkInterfaceAttribute"] = {"UnauthorizedOperation",
                                                   "You are not authorized to perform this "
                                                   "operation."};
  const int64_t id = QueueIsolate(store_.get());
  auto worker = Worker();
  worker->Start();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), id); }));
  worker->Stop();
  const ActionRecord a = **store_->GetAction(id);
  EXPECT_EQ(a.status, "failed");
  EXPECT_EQ(a.error_code, "UnauthorizedOperation");
  EXPECT_EQ((*store_->GetAgent(kInstance))->isolation_state, "failed");
  std::lock_guard<std::mutex> lock(ec2_->mu);
  // Containment first: every interface was tried, then nothing after containment ran.
  int modifies = 0;
  for (const std::string& c : ec2_->calls) {
    if (absl::StartsWith(c, "ModifyNetworkInterfaceAttribute")) ++modifies;
    EXPECT_FALSE(absl::StartsWith(c, "ModifyInstanceAttribute")) << c;
  }
  EXPECT_EQ(modifies, 2);
}

TEST(Isolation, WithoutAwsCredentialsTheActionFailsWithAClearError) {
  tripline::testing::TempDir dir;
  auto store = *CollectorStore::Open(dir.Sub("collector.db"));
  const int64_t id = QueueIsolate(store.get());
  IsolationWorker worker(store.get(), nullptr,
                         absl::NotFoundError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are "
                                             "not set"),
                         IsolationWorker::Options{}, SystemClock());
  worker.Start();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store.get(), id); }));
  worker.Stop();
  const ActionRecord a = **store->GetAction(id);
  EXPECT_EQ(a.status, "failed");
  EXPECT_EQ(a.error_code, "NoCredentials");
  EXPECT_NE(a.error_message.find("AWS_ACCESS_KEY_ID"), std::string::npos);
}

// In process, end to end: a burst of 50 incidents from 50 instances, with an hourly cap of 5
// automatic isolations and two instances on the never-isolate list (by id, by tag): exactly 5 are
// isolated, the two are refused, the other 43 wait for approval; an approval lets one go.
TEST(Guardrails, HourlyCapAndNeverIsolateHoldUnderABurstOf50Incidents) {
  auto ec2 = std::make_shared<FakeInstanceNetwork::State>();
  std::vector<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    ids.push_back(absl::StrFormat("i-0burst%02d", i));
    aws::Instance inst = TwoInterfaceInstance(ids.back());
    if (i == 2) inst.tags["role"] = "bastion";
    AddInstance(*ec2, inst);
  }
  TestCollector c(testing::kEtcRule, ec2);
  c.Configure([](CollectorConfig& config) {
    config.response.max_auto_isolations_per_hour = 5;
    config.response.self_instance_id = "i-0burst07";
    config.response.never_isolate_tags = {{"role", "bastion"}};
  });
  c.Start();
  std::vector<std::unique_ptr<TestAgent>> agents;
  for (const std::string& id : ids) {
    agents.push_back(std::make_unique<TestAgent>(id, c.channel()));
    Publish(*agents.back(), {TestAgent::FileEvent("/etc/passwd")});
  }
  auto settled = [&] {
    int done = 0, refused = 0, waiting = 0;
    for (const ActionRecord& a : Actions(c.store(), 0)) {
      if (a.parent_id != 0) continue;
      if (a.status == "done") ++done;
      if (a.status == "failed" && a.error_code == "NeverIsolate") ++refused;
      if (a.status == "approval") ++waiting;
    }
    return std::make_tuple(done, refused, waiting);
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        auto [done, refused, waiting] = settled();
        return done + refused + waiting == 50;
      },
      std::chrono::seconds(60)));
  auto [done, refused, waiting] = settled();
  EXPECT_EQ(done, 5);
  EXPECT_EQ(refused, 2);
  EXPECT_EQ(waiting, 43);
  {
    std::lock_guard<std::mutex> lock(ec2->mu);
    int describes = 0;
    for (const std::string& call : ec2->calls) {
      if (absl::StartsWith(call, "DescribeInstances ")) ++describes;
      EXPECT_EQ(call.find("i-0burst07"), std::string::npos) << "the collector's own instance";
    }
    EXPECT_EQ(describes, 6);  // 5 isolated + the tagged one, refused after its describe
  }

  // One waiting incident approved: its isolation runs, not counted against the cap.
  int64_t waiting_incident = 0;
  for (const ActionRecord& a : Actions(c.store(), 0)) {
    if (a.parent_id == 0 && a.status == "approval") waiting_incident = a.incident_id;
  }
  ASSERT_GT(waiting_incident, 0);
  EXPECT_NE((*c.store()->GetIncident(waiting_incident))->summary.find("waits for approval"),
            std::string::npos);
  auto stub = tripline::v1::Operator::NewStub(c.channel());
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + testing::kOperatorToken);
  tripline::v1::ApproveIncidentRequest req;
  req.set_incident_id(waiting_incident);
  tripline::v1::ApproveIncidentResponse resp;
  ASSERT_TRUE(stub->ApproveIncident(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.action_ids_size(), 1);
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(c.store(), resp.action_ids(0)); }));
  EXPECT_EQ((*c.store()->GetAction(resp.action_ids(0)))->status, "done");
  EXPECT_EQ((*c.store()->GetIncident(waiting_incident))->status, "contained");
}

}  // namespace
}  // namespace tripline::collector

namespace tripline::collector {
namespace {

// A rule with response_mode approve: its isolation waits, untouched, until an operator approves
// the incident; a rule with dry-run only asks AWS.
TEST(Guardrails, RuleResponseModeApproveWaitsForTheOperator) {
  auto ec2 = std::make_shared<FakeInstanceNetwork::State>();
  AddInstance(*ec2, TwoInterfaceInstance(kInstance));
  TestCollector c(R"(rules:
  - id: etc-changed
    title: A file under /etc changed
    severity: high
    match:
      kind: file
      paths: ["/etc/**"]
    response: [isolate]
    response_mode: approve
)",
                  ec2);
  c.Start();
  TestAgent agent(kInstance, c.channel());
  Publish(agent, {TestAgent::FileEvent("/etc/hosts")});
  ASSERT_TRUE(WaitFor([&] {
    auto a = Actions(c.store(), 0);
    return !a.empty() && a[0].status == "approval";
  }));
  {
    std::lock_guard<std::mutex> lock(ec2->mu);
    EXPECT_TRUE(ec2->calls.empty());
  }
  const int64_t incident = c.IncidentsOf("etc-changed")[0].id;
  auto stub = tripline::v1::Operator::NewStub(c.channel());
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + testing::kOperatorToken);
  tripline::v1::ApproveIncidentRequest req;
  req.set_incident_id(incident);
  tripline::v1::ApproveIncidentResponse resp;
  ASSERT_TRUE(stub->ApproveIncident(&ctx, req, &resp).ok());
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(c.store(), resp.action_ids(0)); }));
  EXPECT_EQ((*c.store()->GetAction(resp.action_ids(0)))->status, "done");
  EXPECT_EQ((*c.store()->GetAction(resp.action_ids(0)))->actor, "bootstrap");
  // Nothing left to approve.
  grpc::ClientContext again;
  again.AddMetadata("authorization", std::string("Bearer ") + testing::kOperatorToken);
  EXPECT_EQ(stub->ApproveIncident(&again, req, &resp).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

// Operator RPCs: isolate and release by instance or incident; bad ids are refused up front.
TEST(OperatorResponse, IsolateAndReleaseQueueActionsTheWorkerRuns) {
  auto ec2 = std::make_shared<FakeInstanceNetwork::State>();
  AddInstance(*ec2, TwoInterfaceInstance(kInstance));
  TestCollector c(testing::kEtcRule, ec2);
  c.Start();
  auto stub = tripline::v1::Operator::NewStub(c.channel());
  auto call = [&](auto method, const auto& req, auto* resp) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Bearer ") + testing::kOperatorToken);
    return ((*stub).*method)(&ctx, req, resp);
  };
  tripline::v1::IsolateRequest bad;
  bad.set_instance_id("web-1; rm -rf /");
  tripline::v1::IsolateResponse iso;
  EXPECT_EQ(call(&tripline::v1::Operator::Stub::Isolate, bad, &iso).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  tripline::v1::IsolateRequest req;
  req.set_instance_id(kInstance);
  ASSERT_TRUE(call(&tripline::v1::Operator::Stub::Isolate, req, &iso).ok());
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(c.store(), iso.action_id()); }));
  EXPECT_EQ((*c.store()->GetAction(iso.action_id()))->status, "done");
  EXPECT_EQ((*c.store()->GetAction(iso.action_id()))->actor, "bootstrap");

  tripline::v1::ReleaseRequest rel;
  rel.set_incident_id(424242);
  tripline::v1::ReleaseResponse released;
  EXPECT_EQ(call(&tripline::v1::Operator::Stub::Release, rel, &released).error_code(),
            grpc::StatusCode::NOT_FOUND);
  rel.set_incident_id(0);
  rel.set_instance_id(kInstance);
  ASSERT_TRUE(call(&tripline::v1::Operator::Stub::Release, rel, &released).ok());
  EXPECT_EQ(released.instance_id(), kInstance);
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(c.store(), released.action_id()); }));
  EXPECT_EQ((*c.store()->GetAction(released.action_id()))->status, "done");
  std::lock_guard<std::mutex> lock(ec2->mu);
  EXPECT_EQ(ec2->instances[kInstance].interfaces[0].group_ids,
            (std::vector<std::string>{"sg-web", "sg-ssh"}));
}

}  // namespace
}  // namespace tripline::collector

namespace tripline::collector {
namespace {

// The separate actions: Elastic IP disassociation (undone by release) and StopInstances.
TEST_F(Recipe, ElasticIpDisassociationIsUndoneByReleaseAndStopStops) {
  const int64_t isolate = QueueIsolate(store_.get());
  auto worker = Worker();
  worker->Start();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), isolate); }));
  const int64_t eips = QueueIsolate(store_.get(), "", kInstance, kDisassociateEipsActionKind);
  worker->Wake();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), eips); }));
  EXPECT_EQ((*store_->GetAction(eips))->status, "done");
  {
    std::lock_guard<std::mutex> lock(ec2_->mu);
    EXPECT_EQ(ec2_->instances[kInstance].interfaces[0].eip_association_id, "");
    EXPECT_EQ(ec2_->calls.back(), "DisassociateAddress eipassoc-i-0abc");
  }
  const int64_t stop = QueueIsolate(store_.get(), "", kInstance, kStopActionKind);
  worker->Wake();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), stop); }));
  EXPECT_EQ((*store_->GetAction(stop))->status, "done");
  const int64_t release = QueueIsolate(store_.get(), "", kInstance, kReleaseActionKind);
  worker->Wake();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), release); }));
  worker->Stop();
  EXPECT_EQ((*store_->GetAction(release))->status, "done");
  std::lock_guard<std::mutex> lock(ec2_->mu);
  const aws::NetworkInterface& front = ec2_->instances[kInstance].interfaces[0];
  EXPECT_EQ(front.eip_allocation_id, "eipalloc-i-0abc");
  EXPECT_FALSE(front.eip_association_id.empty());
  EXPECT_EQ(ec2_->instances[kInstance].state, "stopped");  // release does not start it
  EXPECT_NE(std::find(ec2_->calls.begin(), ec2_->calls.end(),
                      "AssociateAddress eipalloc-i-0abc eni-web-i-0abc "),
            ec2_->calls.end());
}

TEST_F(Recipe, StopOfANeverIsolateInstanceIsRefused) {
  IsolationWorker::Options options;
  options.never_isolate_ids = {kInstance};
  const int64_t stop = QueueIsolate(store_.get(), "", kInstance, kStopActionKind);
  auto worker = Worker(options);
  worker->Start();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), stop); }));
  worker->Stop();
  EXPECT_EQ((*store_->GetAction(stop))->error_code, "NeverIsolate");
  std::lock_guard<std::mutex> lock(ec2_->mu);
  EXPECT_TRUE(ec2_->calls.empty());
}

}  // namespace
}  // namespace tripline::collector

namespace tripline::collector {
namespace {

TEST_F(Recipe, OperatorRequestIsItsOwnApprovalButDryRunModeHolds) {
  const int64_t op = QueueIsolate(store_.get());  // actor operator, mode ""
  IsolationWorker::Options options;
  options.default_mode = "approve";
  auto worker = Worker(options);
  worker->Start();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), op); }));
  worker->Stop();
  EXPECT_EQ((*store_->GetAction(op))->status, "done");
  EXPECT_EQ((*store_->GetAction(op))->mode, "auto");

  const int64_t dry = QueueIsolate(store_.get(), "", kInstance, kReleaseActionKind);
  options.default_mode = "dry-run";
  auto second = Worker(options);
  second->Start();
  ASSERT_TRUE(WaitFor([&] { return ActionFinished(store_.get(), dry); }));
  second->Stop();
  EXPECT_EQ((*store_->GetAction(dry))->mode, "dry-run");
  std::lock_guard<std::mutex> lock(ec2_->mu);
  EXPECT_TRUE(absl::EndsWith(ec2_->calls.back(), "(DryRun)")) << ec2_->calls.back();
}

}  // namespace
}  // namespace tripline::collector

namespace tripline::collector {
namespace {

// The same holds for a log rule: its response_mode reaches the isolate action.
TEST(Guardrails, LogRuleResponseModeApproveWaitsForTheOperator) {
  auto ec2 = std::make_shared<FakeInstanceNetwork::State>();
  AddInstance(*ec2, TwoInterfaceInstance(kInstance));
  TestCollector c(R"(rules:
  - id: root-login
    title: root logged in
    severity: high
    match:
      kind: log
      source: [auth]
      regex: 'Accepted password for root'
    response: [isolate]
    response_mode: approve
)",
                  ec2);
  c.Start();
  TestAgent agent(kInstance, c.channel());
  tripline::v1::Event line;
  line.set_seq(1);
  line.set_time_unix_ns(1700000000000000000LL);
  line.mutable_log()->set_source("auth");
  line.mutable_log()->set_line("sshd[7]: Accepted password for root from 203.0.113.9 port 22");
  Publish(agent, {line});
  ASSERT_TRUE(WaitFor([&] {
    auto a = Actions(c.store(), 0);
    return !a.empty() && a[0].status == "approval";
  }));
  EXPECT_EQ(Actions(c.store(), 0)[0].mode, "approve");
  std::lock_guard<std::mutex> lock(ec2->mu);
  EXPECT_TRUE(ec2->calls.empty());
}

}  // namespace
}  // namespace tripline::collector

namespace tripline::collector {
namespace {

// A stop the collector queued on its own (a CloudTrail rule), as QueueCloudResponse writes it.
int64_t QueueAutomaticStop(CollectorStore* store, const std::string& instance,
                           const std::string& mode = "") {
  auto w = store->BeginWrite();
  EXPECT_TRUE(w.ok());
  ActionRecord a;
  a.agent_id = "cloudtrail:us-east-1";
  a.kind = kStopActionKind;
  a.target = instance;
  a.status = "pending";
  a.actor = "collector";
  a.mode = mode;
  a.created_ns = a.updated_ns = SystemClock().NowUnixNanos();
  int64_t id = *w->InsertAction(a);
  EXPECT_TRUE(w->Commit().ok());
  return id;
}

// The guardrails of isolation hold for automatic stops: never-isolate ids and tags (after one
// describe), approve mode, and the hourly cap, counted apart from isolations.
TEST_F(Recipe, AutomaticStopsGoThroughTheIsolationGuardrails) {
  IsolationWorker::Options options;
  options.never_isolate_ids = {"i-0collector"};
  options.never_isolate_tags = {{"tripline:never-isolate", ""}};
  options.max_auto_per_hour = 2;
  aws::Instance tagged = TwoInterfaceInstance("i-0bastion");
  tagged.tags["tripline:never-isolate"] = "yes";
  AddInstance(*ec2_, tagged);
  for (const char* id : {"i-0collector", "i-0l1", "i-0l2", "i-0l3", "i-0l4"}) {
    AddInstance(*ec2_, TwoInterfaceInstance(id));
  }
  const int64_t by_id = QueueAutomaticStop(store_.get(), "i-0collector");
  const int64_t by_tag = QueueAutomaticStop(store_.get(), "i-0bastion");
  const int64_t approve = QueueAutomaticStop(store_.get(), "i-0l1", "approve");
  const int64_t first = QueueAutomaticStop(store_.get(), "i-0l2");
  const int64_t second = QueueAutomaticStop(store_.get(), "i-0l3");
  const int64_t over_cap = QueueAutomaticStop(store_.get(), "i-0l4");
  auto worker = Worker(options);
  worker->Start();
  auto status = [&](int64_t id) { return (*store_->GetAction(id))->status; };
  ASSERT_TRUE(WaitFor([&] {
    return ActionFinished(store_.get(), by_id) && ActionFinished(store_.get(), by_tag) &&
           ActionFinished(store_.get(), first) && ActionFinished(store_.get(), second) &&
           status(approve) == "approval" && status(over_cap) == "approval";
  }));
  worker->Stop();
  EXPECT_EQ((*store_->GetAction(by_id))->error_code, "NeverIsolate");
  EXPECT_EQ((*store_->GetAction(by_tag))->error_code, "NeverIsolate");
  EXPECT_EQ(status(first), "done");
  EXPECT_EQ(status(second), "done");
  std::lock_guard<std::mutex> lock(ec2_->mu);
  EXPECT_EQ(ec2_->instances["i-0l2"].state, "stopped");
  EXPECT_EQ(ec2_->instances["i-0l3"].state, "stopped");
  EXPECT_NE(ec2_->instances["i-0l1"].state, "stopped");
  EXPECT_NE(ec2_->instances["i-0l4"].state, "stopped");
  EXPECT_NE(ec2_->instances["i-0bastion"].state, "stopped");
  for (const std::string& call : ec2_->calls) {
    EXPECT_EQ(call.find("i-0collector"), std::string::npos) << call;
  }
}

}  // namespace
}  // namespace tripline::collector
