// An in-process tripline.v1.Operator for triplinectl's tests: canned data built here, served on
// 127.0.0.1 (port chosen by the OS) over plaintext, recording what each call carried.
#pragma once

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tripline/v1/operator.grpc.pb.h"

namespace tripline::cli::testing {

namespace v1 = tripline::v1;

// 2024-05-01T12:00:00Z.
inline constexpr int64_t kNowSeconds = 1714564800;
inline constexpr int64_t kNowNs = kNowSeconds * 1'000'000'000;
inline constexpr int64_t kSecond = 1'000'000'000;

// A path no terminal should ever see raw: not UTF-8, with an OSC title sequence and a bell.
inline const std::string kHostilePath = std::string(
    "/tmp/\xff\xfe\x1b]0;pwned\x07"
    "evil",
    21);

struct Fleet {
  v1::ListAgentsResponse agents;
  v1::QueryEventsResponse events;
  v1::ListIncidentsResponse incidents;
  v1::GetIncidentResponse incident7;
  v1::ListActionsResponse actions;
};

inline v1::StoredEvent FileEventRow(int64_t id, const std::string& agent, int64_t time,
                                    v1::FileEvent::Change change, const std::string& path,
                                    std::optional<char> before_byte,
                                    std::optional<char> after_byte) {
  v1::StoredEvent e;
  e.set_id(id);
  e.set_agent_id(agent);
  e.set_batch_seq(static_cast<uint64_t>(id));
  e.set_received_unix_ns(time + kSecond);
  e.mutable_event()->set_seq(static_cast<uint64_t>(id));
  e.mutable_event()->set_time_unix_ns(time);
  v1::FileEvent* f = e.mutable_event()->mutable_file();
  f->set_path(path);
  f->set_change(change);
  if (before_byte) {
    f->mutable_before()->set_sha256(std::string(32, *before_byte));
    f->mutable_before()->set_mode(0100644);
    f->mutable_before()->set_size(10);
  }
  if (after_byte) {
    f->mutable_after()->set_sha256(std::string(32, *after_byte));
    f->mutable_after()->set_mode(0100644);
    f->mutable_after()->set_size(12);
  }
  return e;
}

inline Fleet CannedFleet() {
  Fleet fleet;
  v1::Agent* a = fleet.agents.add_agents();
  a->set_agent_id("i-0aaa1111");
  a->set_hostname("web-1");
  a->set_version("0.1.0");
  a->set_public_key(std::string(32, '\x42'));
  a->set_enrolled_unix_ns(kNowNs - 86400 * kSecond);
  a->set_last_seen_unix_ns(kNowNs - 12 * kSecond);
  a->set_durable_seq(42);
  a->set_heartbeat_unix_ns(kNowNs - 30 * kSecond);
  a->set_spool_backlog_batches(12);
  a->set_spool_backlog_bytes(1572864);
  a = fleet.agents.add_agents();
  a->set_agent_id("i-0bbb2222");
  a->set_hostname("db-\x1b[31m1");  // an agent chooses its hostname
  a->set_version("0.1.0");
  a->set_last_seen_unix_ns(kNowNs - 3 * 3600 * kSecond);
  a->set_durable_seq(7);
  a->set_isolation_state("isolated");

  *fleet.events.add_events() = FileEventRow(1, "i-0aaa1111", kNowNs - 120 * kSecond,
                                            v1::FileEvent::MODIFIED, "/etc/hosts", '\x01', '\xab');
  *fleet.events.add_events() =
      FileEventRow(2, "i-0bbb2222", kNowNs - 62 * kSecond, v1::FileEvent::CREATED, kHostilePath,
                   std::nullopt, '\xcd');
  v1::StoredEvent* log = fleet.events.add_events();
  log->set_id(3);
  log->set_agent_id("i-0aaa1111");
  log->set_received_unix_ns(kNowNs - 30 * kSecond);
  log->mutable_event()->set_time_unix_ns(kNowNs - 31 * kSecond);
  log->mutable_event()->mutable_log()->set_source("auth");
  log->mutable_event()->mutable_log()->set_path("/var/log/auth.log");
  log->mutable_event()->mutable_log()->set_offset(100);
  log->mutable_event()->mutable_log()->set_line("Failed password for root\x1b[2J");
  v1::StoredEvent* started = fleet.events.add_events();
  started->set_id(4);
  started->set_agent_id("i-0bbb2222");
  started->mutable_event()->set_time_unix_ns(kNowNs - 10 * kSecond);
  started->mutable_event()->mutable_agent()->set_kind(v1::AgentEvent::STARTED);
  started->mutable_event()->mutable_agent()->set_message("tripline-agent 0.1.0");

  v1::Incident* i = fleet.incidents.add_incidents();
  i->set_id(7);
  i->set_agent_id("i-0bbb2222");
  i->set_rule_id("tmp-dropper");
  i->set_title("File created under /tmp: \x1b[31mevil");
  i->set_severity("high");
  i->set_status("contained");
  i->set_opened_unix_ns(kNowNs - 60 * kSecond);
  i->set_updated_unix_ns(kNowNs - 50 * kSecond);
  i->add_event_ids(2);
  i->set_summary("1 event");
  i = fleet.incidents.add_incidents();
  i->set_id(8);
  i->set_agent_id("i-0aaa1111");
  i->set_rule_id("ssh-bruteforce");
  i->set_title("SSH brute force");
  i->set_severity("medium");
  i->set_status("open");
  i->set_opened_unix_ns(kNowNs - 20 * kSecond);

  auto action = [&](int64_t id, int64_t created, const std::string& kind, const std::string& target,
                    const std::string& status) {
    v1::Action* act = fleet.actions.add_actions();
    act->set_id(id);
    act->set_incident_id(7);
    act->set_agent_id("i-0bbb2222");
    act->set_kind(kind);
    act->set_target(target);
    act->set_status(status);
    act->set_actor("collector");
    act->set_created_unix_ns(created);
    act->set_updated_unix_ns(created + kSecond);
    return act;
  };
  // Served out of time order on purpose: the incident timeline must sort them.
  action(1, kNowNs - 50 * kSecond, "isolate", "i-0bbb2222", "done");
  v1::Action* failed =
      action(3, kNowNs - 52 * kSecond, "ec2:ModifyNetworkInterfaceAttribute", "eni-1", "failed");
  failed->set_aws_request_id("req-2222");
  failed->set_error_code("UnauthorizedOperation");
  failed->set_error_message("You are not authorized to perform this operation.");
  v1::Action* described =
      action(2, kNowNs - 55 * kSecond, "ec2:DescribeInstances", "i-0bbb2222", "done");
  described->set_aws_request_id("req-1111");
  described->set_detail("2 interfaces: eni-1 sg-a,sg-b; eni-2 sg-a");

  *fleet.incident7.mutable_incident() = fleet.incidents.incidents(0);
  *fleet.incident7.add_events() = fleet.events.events(1);
  *fleet.incident7.mutable_actions() = fleet.actions.actions();
  return fleet;
}

class FakeOperator final : public v1::Operator::Service {
 public:
  explicit FakeOperator(Fleet fleet) : fleet_(std::move(fleet)) {}

  // Every later call fails with `status` (e.g. UNAUTHENTICATED).
  void FailWith(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    fail_ = std::move(status);
  }
  // Every later call waits until the client gives up (its deadline passes).
  void HangUntilCancelled() {
    absl::MutexLock lock(&mu_);
    hang_ = true;
  }
  std::string last_authorization() const {
    absl::MutexLock lock(&mu_);
    return authorization_;
  }
  int calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  v1::QueryEventsRequest last_events_request() const {
    absl::MutexLock lock(&mu_);
    return events_request_;
  }
  v1::ListIncidentsRequest last_incidents_request() const {
    absl::MutexLock lock(&mu_);
    return incidents_request_;
  }
  v1::ListActionsRequest last_actions_request() const {
    absl::MutexLock lock(&mu_);
    return actions_request_;
  }

  grpc::Status ListAgents(grpc::ServerContext* context, const v1::ListAgentsRequest*,
                          v1::ListAgentsResponse* resp) override {
    if (auto st = Begin(context); !st.ok()) return st;
    *resp = fleet_.agents;
    return grpc::Status::OK;
  }
  grpc::Status QueryEvents(grpc::ServerContext* context, const v1::QueryEventsRequest* req,
                           v1::QueryEventsResponse* resp) override {
    if (auto st = Begin(context); !st.ok()) return st;
    {
      absl::MutexLock lock(&mu_);
      events_request_ = *req;
    }
    const uint32_t limit = req->limit() == 0 ? 100 : req->limit();
    for (const auto& e : fleet_.events.events()) {
      if (e.id() <= req->after_id()) continue;
      if (!req->agent_id().empty() && e.agent_id() != req->agent_id()) continue;
      if (!req->kind().empty() && KindOf(e.event()) != req->kind()) continue;
      if (static_cast<uint32_t>(resp->events_size()) == limit) {
        resp->set_next_after_id(resp->events(resp->events_size() - 1).id());
        break;
      }
      *resp->add_events() = e;
    }
    return grpc::Status::OK;
  }
  // Streams the canned events after after_id once more (as if newly stored), then ends.
  grpc::Status WatchEvents(grpc::ServerContext* context, const v1::QueryEventsRequest* req,
                           grpc::ServerWriter<v1::StoredEvent>* writer) override {
    if (auto st = Begin(context); !st.ok()) return st;
    {
      absl::MutexLock lock(&mu_);
      watch_request_ = *req;
    }
    for (auto e : fleet_.events.events()) {
      e.set_id(e.id() + 100);
      if (e.id() > req->after_id()) writer->Write(e);
    }
    return grpc::Status::OK;
  }
  v1::QueryEventsRequest last_watch_request() const {
    absl::MutexLock lock(&mu_);
    return watch_request_;
  }
  grpc::Status ListIncidents(grpc::ServerContext* context, const v1::ListIncidentsRequest* req,
                             v1::ListIncidentsResponse* resp) override {
    if (auto st = Begin(context); !st.ok()) return st;
    {
      absl::MutexLock lock(&mu_);
      incidents_request_ = *req;
    }
    for (const auto& i : fleet_.incidents.incidents()) {
      if (req->status().empty() || i.status() == req->status()) *resp->add_incidents() = i;
    }
    return grpc::Status::OK;
  }
  grpc::Status GetIncident(grpc::ServerContext* context, const v1::GetIncidentRequest* req,
                           v1::GetIncidentResponse* resp) override {
    if (auto st = Begin(context); !st.ok()) return st;
    if (req->id() != fleet_.incident7.incident().id()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no incident " + std::to_string(req->id()));
    }
    *resp = fleet_.incident7;
    return grpc::Status::OK;
  }
  grpc::Status UpdateIncident(grpc::ServerContext* context, const v1::UpdateIncidentRequest* req,
                              v1::UpdateIncidentResponse* resp) override {
    if (auto st = Begin(context); !st.ok()) return st;
    {
      absl::MutexLock lock(&mu_);
      update_request_ = *req;
    }
    if (req->id() != fleet_.incident7.incident().id()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no incident " + std::to_string(req->id()));
    }
    *resp->mutable_incident() = fleet_.incident7.incident();
    if (!req->status().empty()) resp->mutable_incident()->set_status(req->status());
    if (!req->assignee().empty()) resp->mutable_incident()->set_assignee(req->assignee());
    return grpc::Status::OK;
  }
  v1::UpdateIncidentRequest last_update_request() const {
    absl::MutexLock lock(&mu_);
    return update_request_;
  }
  grpc::Status ListActions(grpc::ServerContext* context, const v1::ListActionsRequest* req,
                           v1::ListActionsResponse* resp) override {
    if (auto st = Begin(context); !st.ok()) return st;
    {
      absl::MutexLock lock(&mu_);
      actions_request_ = *req;
    }
    for (const auto& a : fleet_.actions.actions()) {
      if (req->incident_id() == 0 || a.incident_id() == req->incident_id())
        *resp->add_actions() = a;
    }
    return grpc::Status::OK;
  }

 private:
  static std::string KindOf(const v1::Event& e) {
    if (e.has_file()) return "file";
    if (e.has_log()) return "log";
    if (e.has_agent()) return "agent";
    return "";
  }

  grpc::Status Begin(grpc::ServerContext* context) {
    bool hang;
    {
      absl::MutexLock lock(&mu_);
      ++calls_;
      auto it = context->client_metadata().find("authorization");
      authorization_ = it == context->client_metadata().end()
                           ? ""
                           : std::string(it->second.data(), it->second.size());
      if (!fail_.ok()) return fail_;
      hang = hang_;
    }
    if (hang) {
      // Bounded: the client's deadline in these tests is far shorter.
      for (int i = 0; i < 1000 && !context->IsCancelled(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      return grpc::Status(grpc::StatusCode::CANCELLED, "client gave up");
    }
    return grpc::Status::OK;
  }

  const Fleet fleet_;
  mutable absl::Mutex mu_;
  grpc::Status fail_ ABSL_GUARDED_BY(mu_);
  bool hang_ ABSL_GUARDED_BY(mu_) = false;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::string authorization_ ABSL_GUARDED_BY(mu_);
  v1::QueryEventsRequest events_request_ ABSL_GUARDED_BY(mu_);
  v1::ListIncidentsRequest incidents_request_ ABSL_GUARDED_BY(mu_);
  v1::ListActionsRequest actions_request_ ABSL_GUARDED_BY(mu_);
  v1::UpdateIncidentRequest update_request_ ABSL_GUARDED_BY(mu_);
  v1::QueryEventsRequest watch_request_ ABSL_GUARDED_BY(mu_);
};

// FakeOperator served on 127.0.0.1:<port chosen by the OS>, plaintext.
class FakeCollector {
 public:
  FakeCollector() : service_(CannedFleet()) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    EXPECT_GT(port_, 0);
  }
  ~FakeCollector() { server_->Shutdown(std::chrono::system_clock::now()); }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  FakeOperator& service() { return service_; }
  std::unique_ptr<v1::Operator::Stub> NewStub() const {
    return v1::Operator::NewStub(
        grpc::CreateChannel(address(), grpc::InsecureChannelCredentials()));
  }

 private:
  FakeOperator service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace tripline::cli::testing
