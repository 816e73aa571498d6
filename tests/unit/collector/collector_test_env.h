// What the collector's tests share: a collector running in process on 127.0.0.1:0 with a real
// SQLite file in a temp dir, an agent that signs and chains batches like the real one, a strict
// fake of the EC2 calls isolation makes, and waiting on a condition with a deadline.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "platform/runtime/status_macros.h"
#include "collector/daemon/collector_daemon.h"
#include "collector/response/isolation_worker.h"
#include "collector/rules/rule_set.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "platform/crypto/batch_signature.h"
#include "platform/crypto/signing_key.h"
#include "tests/support/temp_dir.h"
#include "tripline/v1/ingest.grpc.pb.h"
#include "tripline/v1/operator.grpc.pb.h"

namespace tripline::collector::testing {

inline constexpr char kEnrollmentToken[] = "enroll-secret-0123456789";
inline constexpr char kOperatorToken[] = "operator-secret-9876543210";
inline constexpr char kIsolationGroup[] = "sg-0isolation";

// Polls `done` every 5 ms until it holds or `timeout` passes; returns its last value.
inline bool WaitFor(const std::function<bool()>& done,
                    std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

// A strict in-memory fake of the AWS calls the response makes: instances with their interfaces,
// volumes and profile, security groups with "allow all in" / "default egress" flags, instance
// attributes, profile associations, Auto Scaling membership, role policies and snapshots. It
// records every call ("Action target detail") and can be told to fail an action with an AWS error
// code and message (`fail`, every time; `fail_once`, the next call only).
class FakeInstanceNetwork : public InstanceNetwork {
 public:
  struct Failure {
    std::string code, message;
  };
  struct Group {
    std::string vpc_id, name;
    std::map<std::string, std::string> tags;
    bool ingress_all = false;
    bool default_egress = true;
  };
  struct State {
    std::mutex mu;
    std::map<std::string, aws::Instance> instances;
    std::map<std::string, Group> groups;                       // by id
    std::map<std::string, std::string> shutdown_behavior;      // instance -> stop|terminate
    std::map<std::string, bool> termination_protection;        // instance -> on
    std::map<std::string, std::string> associations;           // instance -> association id
    std::map<std::string, std::vector<std::string>> profile_roles;  // profile name -> roles
    std::map<std::string, std::string> asg_of;                 // instance -> group
    std::map<std::string, std::string> asg_state;              // instance -> InService|Standby
    std::map<std::string, std::map<std::string, std::string>> role_policies;
    std::vector<std::string> snapshots;
    std::map<std::string, Failure> fail;       // action name -> error to answer with
    std::map<std::string, Failure> fail_once;  // action name -> error for the next call
    std::vector<std::string> calls;            // "DescribeInstances i-1", ...
    int next_id = 1;
    // Called (under mu) as a call starts, with the number of calls made before it.
    std::function<void(size_t)> on_call;
  };
  explicit FakeInstanceNetwork(std::shared_ptr<State> state) : state_(std::move(state)) {}

  absl::StatusOr<aws::Instance> DescribeInstance(const std::string& id,
                                                 aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("DescribeInstances", id, info));
    auto it = state_->instances.find(id);
    if (it == state_->instances.end()) {
      return Fail({"InvalidInstanceID.NotFound", "The instance ID '" + id + "' does not exist"},
                  info);
    }
    aws::Instance inst = it->second;
    inst.iam_instance_profile_arn =
        state_->associations.count(id) > 0 ? it->second.iam_instance_profile_arn : "";
    return inst;
  }
  absl::StatusOr<std::string> DescribeInstanceAttribute(const std::string& id,
                                                        const std::string& attribute,
                                                        aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("DescribeInstanceAttribute", id + " " + attribute, info));
    RETURN_IF_ERROR(Known(id, info));
    if (attribute == "disableApiTermination") {
      return std::string(state_->termination_protection[id] ? "true" : "false");
    }
    auto it = state_->shutdown_behavior.find(id);
    return it == state_->shutdown_behavior.end() ? std::string("stop") : it->second;
  }
  absl::StatusOr<aws::IamProfileAssociation> DescribeIamProfileAssociation(
      const std::string& id, aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("DescribeIamInstanceProfileAssociations", id, info));
    aws::IamProfileAssociation a;
    auto it = state_->associations.find(id);
    if (it != state_->associations.end()) {
      a.association_id = it->second;
      a.profile_arn = state_->instances[id].iam_instance_profile_arn;
    }
    return a;
  }
  absl::StatusOr<aws::AutoScalingClient::Membership> DescribeAutoScaling(
      const std::string& id, aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("DescribeAutoScalingInstances", id, info));
    aws::AutoScalingClient::Membership m;
    if (state_->asg_of.count(id) > 0) {
      m.group_name = state_->asg_of[id];
      m.lifecycle_state = state_->asg_state[id];
    }
    return m;
  }
  absl::StatusOr<std::string> FindSecurityGroup(const std::string& vpc, const std::string& name,
                                                aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("DescribeSecurityGroups", vpc + " " + name, info));
    for (const auto& [id, g] : state_->groups) {
      if (g.vpc_id == vpc && g.name == name) return id;
    }
    return std::string();
  }
  absl::StatusOr<std::string> CreateSecurityGroup(const std::string& vpc, const std::string& name,
                                                  const std::string&,
                                                  const std::map<std::string, std::string>& tags,
                                                  bool dry_run, aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("CreateSecurityGroup", vpc + " " + name, info, dry_run));
    if (dry_run) return std::string();
    for (const auto& [id, g] : state_->groups) {
      if (g.vpc_id == vpc && g.name == name) {
        return Fail({"InvalidGroup.Duplicate", "The security group '" + name + "' already exists"},
                    info);
      }
    }
    const std::string id = absl::StrFormat("sg-new%d", state_->next_id++);
    state_->groups[id] = Group{vpc, name, tags, false, true};
    return id;
  }
  absl::Status AuthorizeIngressFromAnywhere(const std::string& group, bool dry_run,
                                            aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("AuthorizeSecurityGroupIngress", group, info, dry_run));
    if (dry_run) return absl::OkStatus();
    RETURN_IF_ERROR(KnownGroup(group, info));
    state_->groups[group].ingress_all = true;
    return absl::OkStatus();
  }
  absl::Status RevokeDefaultEgress(const std::string& group, bool dry_run,
                                   aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("RevokeSecurityGroupEgress", group, info, dry_run));
    if (dry_run) return absl::OkStatus();
    RETURN_IF_ERROR(KnownGroup(group, info));
    state_->groups[group].default_egress = false;
    return absl::OkStatus();
  }
  absl::Status SetInterfaceSecurityGroups(const std::string& eni,
                                          const std::vector<std::string>& groups, bool dry_run,
                                          aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    std::string joined;
    for (const std::string& g : groups) joined += (joined.empty() ? "" : ",") + g;
    RETURN_IF_ERROR(Begin("ModifyNetworkInterfaceAttribute", eni + " " + joined, info, dry_run));
    if (dry_run) return absl::OkStatus();
    for (const std::string& g : groups) RETURN_IF_ERROR(KnownGroup(g, info));
    for (auto& [id, inst] : state_->instances) {
      for (aws::NetworkInterface& e : inst.interfaces) {
        if (e.interface_id == eni) {
          e.group_ids = groups;
          return absl::OkStatus();
        }
      }
    }
    return Fail({"InvalidNetworkInterfaceID.NotFound", "no interface " + eni}, info);
  }
  absl::Status ModifyInstanceAttribute(const std::string& id,
                                       const aws::InstanceAttributeChange& change, bool dry_run,
                                       aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    using Kind = aws::InstanceAttributeChange::Kind;
    const std::string what = change.kind == Kind::kDisableApiTermination ? "DisableApiTermination"
                             : change.kind == Kind::kShutdownBehavior
                                 ? "InstanceInitiatedShutdownBehavior"
                                 : "DeleteOnTermination " + change.device_name;
    RETURN_IF_ERROR(Begin("ModifyInstanceAttribute", id + " " + what + "=" + change.value, info,
                          dry_run));
    if (dry_run) return absl::OkStatus();
    RETURN_IF_ERROR(Known(id, info));
    if (change.kind == Kind::kDisableApiTermination) {
      state_->termination_protection[id] = change.value == "true";
    } else if (change.kind == Kind::kShutdownBehavior) {
      state_->shutdown_behavior[id] = change.value;
    } else {
      for (aws::Volume& v : state_->instances[id].volumes) {
        if (v.device_name == change.device_name) v.delete_on_termination = change.value == "true";
      }
    }
    return absl::OkStatus();
  }
  absl::Status CreateTags(const std::string& resource,
                          const std::map<std::string, std::string>& tags, bool dry_run,
                          aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("CreateTags", resource, info, dry_run));
    if (dry_run) return absl::OkStatus();
    RETURN_IF_ERROR(Known(resource, info));
    for (const auto& [k, v] : tags) state_->instances[resource].tags[k] = v;
    return absl::OkStatus();
  }
  absl::Status DisassociateIamInstanceProfile(const std::string& association, bool dry_run,
                                              aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("DisassociateIamInstanceProfile", association, info, dry_run));
    if (dry_run) return absl::OkStatus();
    for (auto it = state_->associations.begin(); it != state_->associations.end(); ++it) {
      if (it->second == association) {
        state_->associations.erase(it);
        return absl::OkStatus();
      }
    }
    return Fail({"InvalidAssociationID.NotFound", "no association " + association}, info);
  }
  absl::Status AssociateIamInstanceProfile(const std::string& id, const std::string& arn,
                                           bool dry_run, aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("AssociateIamInstanceProfile", id + " " + arn, info, dry_run));
    if (dry_run) return absl::OkStatus();
    RETURN_IF_ERROR(Known(id, info));
    if (state_->associations.count(id) > 0) {
      return Fail({"IncorrectState", "There is an existing association for instance " + id},
                  info);
    }
    state_->associations[id] = absl::StrFormat("iip-assoc-%d", state_->next_id++);
    state_->instances[id].iam_instance_profile_arn = arn;
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<std::string>> CreateSnapshots(
      const std::string& id, const std::string&, const std::map<std::string, std::string>& tags,
      bool dry_run, aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("CreateSnapshots", id, info, dry_run));
    if (dry_run) return std::vector<std::string>{};
    RETURN_IF_ERROR(Known(id, info));
    std::vector<std::string> ids;
    std::string tag_text;
    for (const auto& [k, v] : tags) tag_text += " " + k + "=" + v;
    for (const aws::Volume& v : state_->instances[id].volumes) {
      ids.push_back(absl::StrFormat("snap-%d", state_->next_id++));
      state_->snapshots.push_back(ids.back() + " " + v.volume_id + tag_text);
    }
    return ids;
  }
  absl::Status StopInstance(const std::string& id, bool dry_run, aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("StopInstances", id, info, dry_run));
    if (dry_run) return absl::OkStatus();
    RETURN_IF_ERROR(Known(id, info));
    state_->instances[id].state = "stopped";
    return absl::OkStatus();
  }
  absl::Status DisassociateAddress(const std::string& association, bool dry_run,
                                   aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("DisassociateAddress", association, info, dry_run));
    if (dry_run) return absl::OkStatus();
    for (auto& [id, inst] : state_->instances) {
      for (aws::NetworkInterface& e : inst.interfaces) {
        if (!association.empty() && e.eip_association_id == association) {
          e.eip_association_id.clear();
          e.public_ip.clear();
          return absl::OkStatus();
        }
      }
    }
    return Fail({"InvalidAssociationID.NotFound", "no association " + association}, info);
  }
  absl::StatusOr<std::string> AssociateAddress(const std::string& allocation,
                                               const std::string& eni, const std::string& ip,
                                               bool dry_run, aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("AssociateAddress", allocation + " " + eni + " " + ip, info, dry_run));
    if (dry_run) return std::string();
    for (auto& [id, inst] : state_->instances) {
      for (aws::NetworkInterface& e : inst.interfaces) {
        if (e.interface_id == eni) {
          e.eip_allocation_id = allocation;
          e.eip_association_id = absl::StrFormat("eipassoc-%d", state_->next_id++);
          e.public_ip = "198.51.100.10";
          return e.eip_association_id;
        }
      }
    }
    return Fail({"InvalidNetworkInterfaceID.NotFound", "no interface " + eni}, info);
  }
  absl::StatusOr<std::vector<std::string>> FindSnapshots(const std::string& key,
                                                         const std::string& value,
                                                         aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("DescribeSnapshots", key + "=" + value, info));
    std::vector<std::string> ids;
    for (const std::string& s : state_->snapshots) {
      if (s.find(" " + key + "=" + value) != std::string::npos) ids.push_back(s.substr(0, s.find(' ')));
    }
    return ids;
  }
  absl::StatusOr<std::vector<std::string>> InstanceProfileRoles(const std::string& profile,
                                                                aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("GetInstanceProfile", profile, info));
    auto it = state_->profile_roles.find(profile);
    if (it == state_->profile_roles.end()) {
      return Fail({"NoSuchEntity", "Instance Profile " + profile + " cannot be found."}, info);
    }
    return it->second;
  }
  absl::Status PutRolePolicy(const std::string& role, const std::string& name,
                             const std::string& document, aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("PutRolePolicy", role + " " + name, info));
    state_->role_policies[role][name] = document;
    return absl::OkStatus();
  }
  absl::Status EnterStandby(const std::string& group, const std::string& id,
                            aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("EnterStandby", group + " " + id, info));
    if (state_->asg_state[id] != "InService") {
      return Fail({"ValidationError", "The instance " + id + " is not in InService."}, info);
    }
    state_->asg_state[id] = "Standby";
    return absl::OkStatus();
  }
  absl::Status ExitStandby(const std::string& group, const std::string& id,
                           aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    RETURN_IF_ERROR(Begin("ExitStandby", group + " " + id, info));
    if (state_->asg_state[id] != "Standby") {
      return Fail({"ValidationError", "The instance " + id + " is not in Standby."}, info);
    }
    state_->asg_state[id] = "InService";
    return absl::OkStatus();
  }

 private:
  // Records the call, fills the request id, and answers with an injected failure if one is set.
  absl::Status Begin(const std::string& action, const std::string& what, aws::CallInfo* info,
                     bool dry_run = false) {
    *info = aws::CallInfo();
    info->action = action;
    info->attempts = 1;
    info->request_id = absl::StrFormat("req-%d", state_->next_id++);
    if (state_->on_call) state_->on_call(state_->calls.size());
    state_->calls.push_back(action + " " + what + (dry_run ? " (DryRun)" : ""));
    if (auto f = state_->fail_once.find(action); f != state_->fail_once.end()) {
      const Failure failure = f->second;
      state_->fail_once.erase(f);
      return Fail(failure, info);
    }
    if (auto f = state_->fail.find(action); f != state_->fail.end()) return Fail(f->second, info);
    info->http_status = 200;
    info->dry_run = dry_run;
    return absl::OkStatus();
  }
  absl::Status Known(const std::string& id, aws::CallInfo* info) {
    if (state_->instances.count(id) > 0) return absl::OkStatus();
    return Fail({"InvalidInstanceID.NotFound", "The instance ID '" + id + "' does not exist"},
                info);
  }
  absl::Status KnownGroup(const std::string& id, aws::CallInfo* info) {
    if (state_->groups.count(id) > 0) return absl::OkStatus();
    return Fail({"InvalidGroup.NotFound", "The security group '" + id + "' does not exist"}, info);
  }
  static absl::Status Fail(const Failure& f, aws::CallInfo* info) {
    info->http_status = 400;
    info->error_code = f.code;
    info->error_message = f.message;
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: %s: %s", info->action, f.code, f.message));
  }
  std::shared_ptr<State> state_;
};

// An instance with two interfaces in vpc-1 (groups sg-web,sg-ssh and sg-mgmt), two volumes, the
// "web" profile (role web-role) associated, shutdown behaviour "terminate"; the fake knows it and
// its groups.
inline aws::Instance TwoInterfaceInstance(const std::string& id) {
  aws::Instance inst;
  inst.instance_id = id;
  inst.state = "running";
  inst.vpc_id = "vpc-1";
  inst.iam_instance_profile_arn = "arn:aws:iam::111122223333:instance-profile/web";
  aws::NetworkInterface a;
  a.interface_id = "eni-web-" + id;
  a.vpc_id = "vpc-1";
  a.group_ids = {"sg-web", "sg-ssh"};
  a.public_ip = "198.51.100.10";
  a.eip_allocation_id = "eipalloc-" + id;
  a.eip_association_id = "eipassoc-" + id;
  aws::NetworkInterface b;
  b.interface_id = "eni-mgmt-" + id;
  b.vpc_id = "vpc-1";
  b.device_index = 1;
  b.group_ids = {"sg-mgmt"};
  inst.interfaces = {a, b};
  inst.volumes = {{"/dev/xvda", "vol-root-" + id, true}, {"/dev/xvdf", "vol-data-" + id, true}};
  inst.tags = {{"Name", "web-1"}};
  return inst;
}

// Puts `inst` into the fake with its groups, profile association and attributes.
inline void AddInstance(FakeInstanceNetwork::State& s, const aws::Instance& inst) {
  std::lock_guard<std::mutex> lock(s.mu);
  s.instances[inst.instance_id] = inst;
  for (const aws::NetworkInterface& e : inst.interfaces) {
    for (const std::string& g : e.group_ids) s.groups.emplace(g, FakeInstanceNetwork::Group{e.vpc_id, g, {}, false, true});
  }
  if (!inst.iam_instance_profile_arn.empty()) {
    s.associations[inst.instance_id] = "iip-assoc-" + inst.instance_id;
    s.profile_roles["web"] = {"web-role"};
  }
  s.shutdown_behavior[inst.instance_id] = "terminate";
}

inline constexpr char kEtcRule[] = R"(rules:
  - id: etc-changed
    title: A file under /etc changed
    severity: high
    match:
      kind: file
      paths: ["/etc/**"]
    response: [isolate]
)";

// A collector in process: temp dir, database, rules file, plaintext on 127.0.0.1:0.
class TestCollector {
 public:
  explicit TestCollector(const std::string& rules_yaml = kEtcRule,
                         std::shared_ptr<FakeInstanceNetwork::State> ec2 = nullptr)
      : ec2_(ec2 ? std::move(ec2) : std::make_shared<FakeInstanceNetwork::State>()) {
    rules_yaml_ = rules_yaml;
  }
  ~TestCollector() { Stop(); }

  // Changes the config the next Start() uses (response guardrails, modes).
  void Configure(std::function<void(CollectorConfig&)> configure) {
    configure_ = std::move(configure);
  }

  // Starts (or restarts) the collector on the same database.
  void Start(size_t max_in_flight = 128) { StartWithNetwork(nullptr, max_in_flight); }

  // Starts it with `network` instead of the in-memory fake (a real AWS client in benchmarks).
  void StartWithNetwork(std::unique_ptr<InstanceNetwork> network, size_t max_in_flight = 128) {
    CollectorParts parts;
    parts.config.path = dir_.Sub("collector.yaml");
    parts.config.listen = "127.0.0.1:0";
    parts.config.tls.plaintext = true;
    parts.config.database = dir_.Sub("collector.db");
    parts.config.rules = dir_.Sub("rules.yaml");
    parts.enrollment_token = kEnrollmentToken;
    parts.operator_token = kOperatorToken;
    // The test agents here have no IMDS; tests of the identity check turn it on with Configure.
    parts.config.identity.require_document = false;
    if (configure_) configure_(parts.config);
    absl::StatusOr<RuleSet> rules = ParseRules(rules_yaml_, "rules.yaml");
    ASSERT_TRUE(rules.ok()) << rules.status();
    parts.rules = *std::move(rules);
    parts.network = network ? std::move(network) : std::make_unique<FakeInstanceNetwork>(ec2_);
    parts.max_in_flight = max_in_flight;
    absl::StatusOr<std::unique_ptr<CollectorDaemon>> d = CollectorDaemon::Start(std::move(parts));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    channel_ = grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials());
  }
  void Stop() {
    if (daemon_) daemon_->Stop();
    daemon_.reset();
  }

  CollectorDaemon* daemon() { return daemon_.get(); }
  CollectorStore* store() { return daemon_->store(); }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  FakeInstanceNetwork::State& ec2() { return *ec2_; }
  const tripline::testing::TempDir& dir() const { return dir_; }

  std::vector<IncidentRecord> Incidents() {
    absl::StatusOr<std::vector<IncidentRecord>> i = store()->ListIncidents("", 1000);
    return i.ok() ? *i : std::vector<IncidentRecord>{};
  }
  std::vector<IncidentRecord> IncidentsOf(const std::string& rule_id) {
    std::vector<IncidentRecord> out;
    for (IncidentRecord& i : Incidents()) {
      if (i.rule_id == rule_id) out.push_back(i);
    }
    return out;
  }

 private:
  tripline::testing::TempDir dir_;
  std::string rules_yaml_;
  std::shared_ptr<FakeInstanceNetwork::State> ec2_;
  std::function<void(CollectorConfig&)> configure_;
  std::unique_ptr<CollectorDaemon> daemon_;
  std::shared_ptr<grpc::Channel> channel_;
};

// Signs and chains batches like tripline-agent.
class TestAgent {
 public:
  TestAgent(std::string agent_id, std::shared_ptr<grpc::Channel> channel)
      : agent_id_(std::move(agent_id)),
        key_(SigningKey::Generate()),
        stub_(tripline::v1::Ingest::NewStub(channel)) {}

  grpc::Status Enroll(const std::string& token = kEnrollmentToken,
                      tripline::v1::EnrollResponse* out = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    tripline::v1::EnrollRequest req;
    req.set_agent_id(agent_id_);
    req.set_public_key(key_->public_key());
    req.set_enrollment_token(token);
    req.set_hostname("test-host");
    tripline::v1::EnrollResponse resp;
    grpc::Status st = stub_->Enroll(&ctx, req, &resp);
    if (out != nullptr) *out = resp;
    return st;
  }

  // The next batch of the chain (seq and prev_digest advance), with `events`.
  tripline::v1::SignedBatch NextBatch(std::vector<tripline::v1::Event> events) {
    tripline::v1::EventBatch batch;
    batch.set_agent_id(agent_id_);
    batch.set_batch_seq(++seq_);
    batch.set_prev_digest(prev_digest_);
    for (tripline::v1::Event& e : events) *batch.add_events() = std::move(e);
    return Seal(batch);
  }
  // Signs `batch` as is and makes it the chain's tip.
  tripline::v1::SignedBatch Seal(const tripline::v1::EventBatch& batch) {
    tripline::v1::SignedBatch sb;
    sb.set_batch(batch.SerializeAsString());
    sb.set_signature(SignBatch(*key_, sb.batch()));
    seq_ = batch.batch_seq();
    prev_digest_ = ChainDigest(sb.batch());
    return sb;
  }

  static tripline::v1::Event FileEvent(const std::string& path,
                                       tripline::v1::FileEvent::Change change =
                                           tripline::v1::FileEvent::MODIFIED,
                                       uint64_t seq = 1) {
    tripline::v1::Event e;
    e.set_seq(seq);
    e.set_time_unix_ns(1700000000000000000LL + static_cast<int64_t>(seq));
    e.mutable_file()->set_path(path);
    e.mutable_file()->set_change(change);
    return e;
  }

  // One Publish stream: sends `batches` in order and reads acks until the last ack reaches
  // `until_seq` or the server ends the stream; returns the final status and the acks seen.
  struct PublishOutcome {
    grpc::Status status;
    std::vector<uint64_t> acks;
  };
  PublishOutcome Publish(const std::vector<tripline::v1::SignedBatch>& batches,
                         uint64_t until_seq, const std::string& stream_agent_id = "") {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    ctx.AddMetadata("tripline-agent-id", stream_agent_id.empty() ? agent_id_ : stream_agent_id);
    auto stream = stub_->Publish(&ctx);
    for (const auto& b : batches) {
      if (!stream->Write(b)) break;
    }
    PublishOutcome out;
    tripline::v1::PublishAck ack;
    bool reached = false;
    while (!reached && stream->Read(&ack)) {
      out.acks.push_back(ack.durable_seq());
      reached = ack.durable_seq() >= until_seq;
    }
    stream->WritesDone();
    while (stream->Read(&ack)) out.acks.push_back(ack.durable_seq());
    out.status = stream->Finish();
    return out;
  }

  // Talks to a (restarted) collector through `channel`.
  void Reconnect(std::shared_ptr<grpc::Channel> channel) {
    stub_ = tripline::v1::Ingest::NewStub(channel);
  }
  const std::string& agent_id() const { return agent_id_; }
  const SigningKey& key() const { return *key_; }
  void ReplaceKey() { key_ = SigningKey::Generate(); }
  uint64_t seq() const { return seq_; }

 private:
  std::string agent_id_;
  std::unique_ptr<SigningKey> key_;
  std::unique_ptr<tripline::v1::Ingest::Stub> stub_;
  uint64_t seq_ = 0;
  std::string prev_digest_ = GenesisDigest();
};

}  // namespace tripline::collector::testing
