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

// A strict fake of the EC2 calls: knows a set of instances, records every call, and can be told
// to fail a call with an AWS error code and message.
class FakeInstanceNetwork : public InstanceNetwork {
 public:
  struct Failure {
    std::string code, message;
  };
  struct State {
    std::mutex mu;
    std::map<std::string, aws::Instance> instances;
    std::map<std::string, Failure> fail;  // action name -> error to answer with
    std::vector<std::string> calls;       // "DescribeInstances i-1", "Modify eni-1 sg-x"
    int next_request = 1;
  };
  explicit FakeInstanceNetwork(std::shared_ptr<State> state) : state_(std::move(state)) {}

  absl::StatusOr<aws::Instance> DescribeInstance(const std::string& instance_id,
                                                 aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->calls.push_back("DescribeInstances " + instance_id);
    info->action = "DescribeInstances";
    info->request_id = absl::StrFormat("req-%d", state_->next_request++);
    if (auto f = state_->fail.find("DescribeInstances"); f != state_->fail.end()) {
      return Fail(f->second, info, "DescribeInstances");
    }
    auto it = state_->instances.find(instance_id);
    if (it == state_->instances.end()) {
      return Fail({"InvalidInstanceID.NotFound", "The instance ID '" + instance_id +
                                                     "' does not exist"},
                  info, "DescribeInstances");
    }
    info->http_status = 200;
    return it->second;
  }

  absl::Status SetInterfaceSecurityGroups(const std::string& interface_id,
                                          const std::vector<std::string>& group_ids,
                                          aws::CallInfo* info) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    std::string groups;
    for (const std::string& g : group_ids) groups += (groups.empty() ? "" : ",") + g;
    state_->calls.push_back("ModifyNetworkInterfaceAttribute " + interface_id + " " + groups);
    info->action = "ModifyNetworkInterfaceAttribute";
    info->request_id = absl::StrFormat("req-%d", state_->next_request++);
    if (auto f = state_->fail.find("ModifyNetworkInterfaceAttribute"); f != state_->fail.end()) {
      return Fail(f->second, info, "ModifyNetworkInterfaceAttribute");
    }
    for (auto& [id, inst] : state_->instances) {
      for (aws::NetworkInterface& eni : inst.interfaces) {
        if (eni.interface_id == interface_id) {
          eni.group_ids = group_ids;
          info->http_status = 200;
          return absl::OkStatus();
        }
      }
    }
    return Fail({"InvalidNetworkInterfaceID.NotFound", "no interface " + interface_id}, info,
                "ModifyNetworkInterfaceAttribute");
  }

 private:
  static absl::Status Fail(const Failure& f, aws::CallInfo* info, const std::string& action) {
    info->http_status = 400;
    info->error_code = f.code;
    info->error_message = f.message;
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: %s: %s", action, f.code, f.message));
  }
  std::shared_ptr<State> state_;
};

// An instance with two interfaces, as the fake knows it.
inline aws::Instance TwoInterfaceInstance(const std::string& id) {
  aws::Instance inst;
  inst.instance_id = id;
  inst.state = "running";
  aws::NetworkInterface a;
  a.interface_id = "eni-web";
  a.group_ids = {"sg-web", "sg-ssh"};
  aws::NetworkInterface b;
  b.interface_id = "eni-mgmt";
  b.group_ids = {"sg-mgmt"};
  inst.interfaces = {a, b};
  return inst;
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

  // Starts (or restarts) the collector on the same database.
  void Start(size_t max_in_flight = 128) {
    CollectorParts parts;
    parts.config.path = dir_.Sub("collector.yaml");
    parts.config.listen = "127.0.0.1:0";
    parts.config.tls.plaintext = true;
    parts.config.database = dir_.Sub("collector.db");
    parts.config.rules = dir_.Sub("rules.yaml");
    parts.config.aws.isolation_security_group = kIsolationGroup;
    parts.enrollment_token = kEnrollmentToken;
    parts.operator_token = kOperatorToken;
    absl::StatusOr<RuleSet> rules = ParseRules(rules_yaml_, "rules.yaml");
    ASSERT_TRUE(rules.ok()) << rules.status();
    parts.rules = *std::move(rules);
    parts.network = std::make_unique<FakeInstanceNetwork>(ec2_);
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
