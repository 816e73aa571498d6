#include "collector/api/operator_service.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "collector/rules/rule_replay.h"
#include "platform/runtime/clock.h"
#include "platform/runtime/logging.h"

namespace tripline::collector {
namespace {

using namespace tripline::v1;  // NOLINT: the service's many message types

constexpr int kDefaultLimit = 100;
constexpr int kMaxLimit = 1000;

int ClampLimit(uint32_t limit) {
  if (limit == 0) return kDefaultLimit;
  return static_cast<int>(std::min<uint32_t>(limit, kMaxLimit));
}

grpc::Status Internal(const absl::Status& s) {
  spdlog::error("api: store read failed: {}", s.ToString());
  return grpc::Status(grpc::StatusCode::INTERNAL, std::string(s.message()));
}

// What a read of incident `id` found: OK, NOT_FOUND naming the id, or INTERNAL for a store error.
grpc::Status FoundIncident(const absl::StatusOr<std::optional<IncidentRecord>>& incident,
                           int64_t id) {
  if (!incident.ok()) return Internal(incident.status());
  if (!*incident)
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrFormat("no incident %d", id));
  return grpc::Status::OK;
}

void ToProto(const AgentRecord& a, Agent* out) {
  out->set_agent_id(a.agent_id);
  out->set_hostname(a.hostname);
  out->set_version(a.version);
  out->set_public_key(a.public_key);
  out->set_enrolled_unix_ns(a.enrolled_ns);
  out->set_last_seen_unix_ns(a.last_seen_ns);
  out->set_durable_seq(a.durable_seq);
  out->set_isolation_state(a.isolation_state);
  out->set_heartbeat_unix_ns(a.heartbeat_ns);
  out->set_spool_backlog_batches(a.spool_batches);
  out->set_spool_backlog_bytes(a.spool_bytes);
}

void ToProto(const EventRecord& e, StoredEvent* out) {
  out->set_id(e.id);
  out->set_agent_id(e.agent_id);
  out->set_batch_seq(e.batch_seq);
  out->set_received_unix_ns(e.received_ns);
  // The bytes were produced by this collector from a parsed Event; a failure leaves it empty.
  if (!out->mutable_event()->ParseFromString(e.event)) out->clear_event();
}

void ToProto(const IncidentRecord& i, Incident* out) {
  out->set_id(i.id);
  out->set_agent_id(i.agent_id);
  out->set_rule_id(i.rule_id);
  out->set_title(i.title);
  out->set_severity(i.severity);
  out->set_status(i.status);
  out->set_opened_unix_ns(i.opened_ns);
  out->set_updated_unix_ns(i.updated_ns);
  out->set_summary(i.summary);
  out->set_assignee(i.assignee);
  for (int64_t id : i.event_ids) out->add_event_ids(id);
}

void ToProto(const ActionRecord& a, Action* out) {
  out->set_id(a.id);
  out->set_incident_id(a.incident_id);
  out->set_agent_id(a.agent_id);
  out->set_kind(a.kind);
  out->set_target(a.target);
  out->set_status(a.status);
  out->set_detail(a.detail);
  out->set_aws_request_id(a.aws_request_id);
  out->set_error_code(a.error_code);
  out->set_error_message(a.error_message);
  out->set_actor(a.actor);
  out->set_created_unix_ns(a.created_ns);
  out->set_updated_unix_ns(a.updated_ns);
  out->set_step_key(a.step_key);
  out->set_mode(a.mode);
}

bool ValidInstanceId(const std::string& id) {
  if (id.size() < 3 || id.size() > 64 || id.rfind("i-", 0) != 0) return false;
  return std::all_of(id.begin() + 2, id.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'); });
}

constexpr size_t kMaxNoteBytes = 4096;
// Batches one evidence export may carry (each at most a few MiB; the answer's size is bounded by
// the gRPC send limit as well).
constexpr uint64_t kMaxEvidenceBatches = 10000;
constexpr size_t kMaxAssigneeBytes = 64;
// The incident lifecycle, in order.
constexpr std::array<std::string_view, 4> kStatuses = {"open", "acknowledged", "contained",
                                                       "resolved"};

int StatusRank(std::string_view status) {
  for (size_t i = 0; i < kStatuses.size(); ++i) {
    if (kStatuses[i] == status) return static_cast<int>(i);
  }
  return -1;
}

bool PrintableText(std::string_view text, bool allow_newlines) {
  for (unsigned char c : text) {
    if (c < 0x20 && !(allow_newlines && (c == '\n' || c == '\t'))) return false;
    if (c == 0x7f) return false;
  }
  return true;
}

grpc::Status Invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

constexpr size_t kMaxGlobBytes = 4096;
constexpr size_t kMaxTextBytes = 1024;
constexpr std::chrono::milliseconds kWatchInterval{200};

// An operator's change as an audit row: done, by `caller`, at `now`.
ActionRecord OperatorAction(const Caller& caller, int64_t now, std::string kind, std::string target,
                            std::string detail, int64_t incident_id = 0,
                            std::string agent_id = "") {
  ActionRecord a;
  a.incident_id = incident_id;
  a.agent_id = std::move(agent_id);
  a.kind = std::move(kind);
  a.target = std::move(target);
  a.status = "done";
  a.detail = std::move(detail);
  a.actor = caller.name;
  a.created_ns = now;
  a.updated_ns = now;
  return a;
}

// Agent-time bounds of a query: 0 is unbounded; until, when given, must be after since.
grpc::Status CheckTimeRange(int64_t since_ns, int64_t until_ns) {
  if (since_ns < 0 || until_ns < 0 || (until_ns != 0 && until_ns <= since_ns)) {
    return Invalid("the time range is empty or negative (until must be after since)");
  }
  return grpc::Status::OK;
}

grpc::Status ToEventQuery(const QueryEventsRequest& req, EventQuery* q) {
  const std::string& kind = req.kind();
  if (!kind.empty() && kind != "file" && kind != "log" && kind != "agent") {
    return Invalid(
        absl::StrFormat("kind '%s' is not one of file, log, agent", Printable(kind, 64)));
  }
  if (req.after_id() < 0) return Invalid("after_id must not be negative");
  if (req.path_glob().size() > kMaxGlobBytes) {
    return Invalid(absl::StrFormat("path_glob: at most %d bytes", kMaxGlobBytes));
  }
  if (req.text().size() > kMaxTextBytes) {
    return Invalid(absl::StrFormat("text: at most %d bytes", kMaxTextBytes));
  }
  if (grpc::Status st = CheckTimeRange(req.since_unix_ns(), req.until_unix_ns()); !st.ok()) {
    return st;
  }
  q->agent_id = req.agent_id();
  q->kind = kind;
  q->after_id = req.after_id();
  q->limit = ClampLimit(req.limit());
  q->path_glob = req.path_glob();
  q->since_ns = req.since_unix_ns();
  q->until_ns = req.until_unix_ns();
  q->text = req.text();
  return grpc::Status::OK;
}

}  // namespace

OperatorService::OperatorService(CollectorStore* store, const OperatorAuthorizer* auth,
                                 std::function<void()> on_action)
    : store_(store), auth_(auth), on_action_(std::move(on_action)) {}

grpc::Status OperatorService::Authorize(const grpc::ServerContext* context, Role required,
                                        Caller* caller) const {
  Caller ignored;
  return auth_->Authorize(*context, required, caller != nullptr ? caller : &ignored);
}

grpc::Status OperatorService::ListAgents(grpc::ServerContext* context, const ListAgentsRequest*,
                                         ListAgentsResponse* resp) {
  if (grpc::Status st = Authorize(context, Role::kRead); !st.ok()) return st;
  absl::StatusOr<std::vector<AgentRecord>> agents = store_->ListAgents();
  if (!agents.ok()) return Internal(agents.status());
  for (const AgentRecord& a : *agents) ToProto(a, resp->add_agents());
  return grpc::Status::OK;
}

grpc::Status OperatorService::QueryEvents(grpc::ServerContext* context,
                                          const QueryEventsRequest* req,
                                          QueryEventsResponse* resp) {
  if (grpc::Status st = Authorize(context, Role::kRead); !st.ok()) return st;
  EventQuery q;
  if (grpc::Status st = ToEventQuery(*req, &q); !st.ok()) return st;
  absl::StatusOr<std::vector<EventRecord>> events = store_->QueryEvents(q);
  if (!events.ok()) return Internal(events.status());
  for (const EventRecord& e : *events) ToProto(e, resp->add_events());
  resp->set_next_after_id(
      static_cast<int>(events->size()) == q.limit && !events->empty() ? events->back().id : 0);
  return grpc::Status::OK;
}

grpc::Status OperatorService::QueryCloudEvents(grpc::ServerContext* context,
                                               const tripline::v1::QueryCloudEventsRequest* req,
                                               tripline::v1::QueryCloudEventsResponse* resp) {
  if (grpc::Status st = Authorize(context, Role::kRead); !st.ok()) return st;
  if (req->after_id() < 0 || req->limit() > static_cast<uint32_t>(kMaxLimit)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrFormat("after_id must be >= 0 and limit at most %d", kMaxLimit));
  }
  const int limit = req->limit() == 0 ? 100 : static_cast<int>(req->limit());
  absl::StatusOr<std::vector<CloudEventRecord>> events =
      store_->ListCloudEvents(req->after_id(), limit);
  if (!events.ok()) return Internal(events.status());
  for (const CloudEventRecord& e : *events) {
    tripline::v1::StoredCloudEvent* out = resp->add_events();
    out->set_id(e.id);
    out->set_region(e.region);
    out->set_event_id(e.event_id);
    out->set_event_name(e.event_name);
    out->set_event_source(e.event_source);
    out->set_time_unix_ns(e.time_ns);
    out->set_principal_arn(e.principal_arn);
    out->set_access_key_id(e.access_key_id);
    out->set_source_ip(e.source_ip);
    out->set_user_agent(e.user_agent);
    for (const std::string& r : e.resources) out->add_resources(r);
    out->set_raw_json(e.raw);
    out->set_received_unix_ns(e.received_ns);
  }
  resp->set_next_after_id(
      static_cast<int>(events->size()) == limit && !events->empty() ? events->back().id : 0);
  return grpc::Status::OK;
}

grpc::Status OperatorService::WatchEvents(grpc::ServerContext* context,
                                          const QueryEventsRequest* req,
                                          grpc::ServerWriter<StoredEvent>* writer) {
  if (grpc::Status st = Authorize(context, Role::kRead); !st.ok()) return st;
  EventQuery q;
  if (grpc::Status st = ToEventQuery(*req, &q); !st.ok()) return st;
  q.limit = kMaxLimit;
  if (q.after_id == 0) {
    absl::StatusOr<int64_t> newest = store_->MaxEventId();
    if (!newest.ok()) return Internal(newest.status());
    q.after_id = *newest;
  }
  // Polls the read connection: a watcher costs one small indexed query per interval and never
  // touches the ingest path. Ends when the caller cancels or the server shuts down.
  while (!context->IsCancelled()) {
    absl::StatusOr<std::vector<EventRecord>> events = store_->QueryEvents(q);
    if (!events.ok()) return Internal(events.status());
    for (const EventRecord& e : *events) {
      StoredEvent out;
      ToProto(e, &out);
      if (!writer->Write(out)) return grpc::Status::OK;  // the caller went away
      q.after_id = e.id;
    }
    if (static_cast<int>(events->size()) < q.limit) {
      std::this_thread::sleep_for(kWatchInterval);
    }
  }
  return grpc::Status::OK;
}

grpc::Status OperatorService::ListIncidents(grpc::ServerContext* context,
                                            const ListIncidentsRequest* req,
                                            ListIncidentsResponse* resp) {
  if (grpc::Status st = Authorize(context, Role::kRead); !st.ok()) return st;
  absl::StatusOr<std::vector<IncidentRecord>> incidents =
      store_->ListIncidents(req->status(), ClampLimit(req->limit()));
  if (!incidents.ok()) return Internal(incidents.status());
  for (const IncidentRecord& i : *incidents) ToProto(i, resp->add_incidents());
  return grpc::Status::OK;
}

grpc::Status OperatorService::GetIncident(grpc::ServerContext* context,
                                          const GetIncidentRequest* req,
                                          GetIncidentResponse* resp) {
  if (grpc::Status st = Authorize(context, Role::kRead); !st.ok()) return st;
  absl::StatusOr<std::optional<IncidentRecord>> incident = store_->GetIncident(req->id());
  if (grpc::Status st = FoundIncident(incident, req->id()); !st.ok()) return st;
  ToProto(**incident, resp->mutable_incident());
  absl::StatusOr<std::vector<EventRecord>> events = store_->IncidentEvents(req->id());
  if (!events.ok()) return Internal(events.status());
  for (const EventRecord& e : *events) ToProto(e, resp->add_events());
  absl::StatusOr<std::vector<ActionRecord>> actions = store_->ListActions(req->id(), 10000);
  if (!actions.ok()) return Internal(actions.status());
  for (const ActionRecord& a : *actions) ToProto(a, resp->add_actions());
  return grpc::Status::OK;
}

grpc::Status OperatorService::ListActions(grpc::ServerContext* context,
                                          const ListActionsRequest* req,
                                          ListActionsResponse* resp) {
  if (grpc::Status st = Authorize(context, Role::kRead); !st.ok()) return st;
  absl::StatusOr<std::vector<ActionRecord>> actions =
      store_->ListActions(req->incident_id(), ClampLimit(req->limit()));
  if (!actions.ok()) return Internal(actions.status());
  for (const ActionRecord& a : *actions) ToProto(a, resp->add_actions());
  return grpc::Status::OK;
}

grpc::Status OperatorService::UpdateIncident(grpc::ServerContext* context,
                                             const UpdateIncidentRequest* req,
                                             UpdateIncidentResponse* resp) {
  Caller caller;
  if (grpc::Status st = Authorize(context, Role::kRespond, &caller); !st.ok()) return st;
  if (req->id() <= 0) return Invalid("id must be a positive incident id");
  if (!req->status().empty() && StatusRank(req->status()) < 0) {
    return Invalid(
        absl::StrFormat("status '%s' is not one of open, acknowledged, contained, "
                        "resolved",
                        Printable(req->status(), 64)));
  }
  if (req->note().size() > kMaxNoteBytes || !PrintableText(req->note(), true)) {
    return Invalid(absl::StrFormat("note: at most %d bytes of text without control characters",
                                   kMaxNoteBytes));
  }
  if (req->assignee().size() > kMaxAssigneeBytes || !PrintableText(req->assignee(), false)) {
    return Invalid(absl::StrFormat("assignee: at most %d bytes without control characters",
                                   kMaxAssigneeBytes));
  }
  if (req->unassign() && !req->assignee().empty()) {
    return Invalid("assignee and unassign exclude each other");
  }
  if (req->status().empty() && req->note().empty() && req->assignee().empty() && !req->unassign()) {
    return Invalid("nothing to change: give a status, a note or an assignee");
  }

  const int64_t now = SystemClock().NowUnixNanos();
  absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
  if (!w.ok()) return Internal(w.status());
  absl::StatusOr<std::optional<IncidentRecord>> incident = w->GetIncident(req->id());
  if (grpc::Status st = FoundIncident(incident, req->id()); !st.ok()) return st;
  IncidentRecord& inc = **incident;
  auto audit = [&](const std::string& kind, const std::string& detail) {
    return w
        ->InsertAction(OperatorAction(caller, now, kind, absl::StrFormat("incident %d", inc.id),
                                      detail, inc.id, inc.agent_id))
        .status();
  };

  if (!req->status().empty() && req->status() != inc.status) {
    const int from = StatusRank(inc.status), to = StatusRank(req->status());
    const bool reopen = inc.status == "resolved" && req->status() == "open";
    if (to < from && !reopen) {
      return grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrFormat("incident %d is %s: it moves forward (open, acknowledged, contained, "
                          "resolved) or, once resolved, back to open; not to %s",
                          inc.id, inc.status, req->status()));
    }
    if (absl::Status st = w->SetIncidentStatus(inc.id, req->status(), now); !st.ok()) {
      return Internal(st);
    }
    if (absl::Status st =
            audit("incident:status", absl::StrFormat("%s -> %s", inc.status, req->status()));
        !st.ok()) {
      return Internal(st);
    }
    inc.status = req->status();
  }
  if (!req->assignee().empty() || req->unassign()) {
    const std::string& who = req->assignee();
    if (absl::Status st = w->SetIncidentAssignee(inc.id, who, now); !st.ok()) return Internal(st);
    if (absl::Status st = audit("incident:assign", who.empty() ? "unassigned" : "to " + who);
        !st.ok()) {
      return Internal(st);
    }
    inc.assignee = who;
  }
  if (!req->note().empty()) {
    if (absl::Status st = audit("incident:note", req->note()); !st.ok()) return Internal(st);
  }
  if (absl::Status st = w->Commit(); !st.ok()) return Internal(st);
  spdlog::info("api: incident {} updated by {} status={}", inc.id, caller.name, inc.status);
  inc.updated_ns = now;
  ToProto(inc, resp->mutable_incident());
  return grpc::Status::OK;
}

grpc::Status OperatorService::ExportEvidence(grpc::ServerContext* context,
                                             const ExportEvidenceRequest* req,
                                             ExportEvidenceResponse* resp) {
  Caller caller;
  if (grpc::Status st = Authorize(context, Role::kRead, &caller); !st.ok()) return st;
  absl::StatusOr<std::optional<IncidentRecord>> incident = store_->GetIncident(req->incident_id());
  if (grpc::Status st = FoundIncident(incident, req->incident_id()); !st.ok()) return st;
  ToProto(**incident, resp->mutable_incident());
  absl::StatusOr<std::vector<EventRecord>> events = store_->IncidentEvents(req->incident_id());
  if (!events.ok()) return Internal(events.status());
  // Per agent, the seq range to export.
  std::map<std::string, std::pair<uint64_t, uint64_t>> ranges;
  for (const EventRecord& e : *events) {
    ToProto(e, resp->add_events());
    auto [it, fresh] = ranges.try_emplace(e.agent_id, e.batch_seq, e.batch_seq);
    if (!fresh) {
      it->second.first = std::min(it->second.first, e.batch_seq);
      it->second.second = std::max(it->second.second, e.batch_seq);
    }
  }
  for (const auto& [agent_id, range] : ranges) {
    if (range.second - range.first >= kMaxEvidenceBatches) {
      return grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrFormat("incident %d spans batches %d..%d of %s, more than %d: too large to "
                          "export in one answer",
                          req->incident_id(), range.first, range.second, agent_id,
                          kMaxEvidenceBatches));
    }
    absl::StatusOr<std::optional<AgentRecord>> agent = store_->GetAgent(agent_id);
    if (!agent.ok()) return Internal(agent.status());
    if (*agent) {
      EvidenceAgent* a = resp->add_agents();
      a->set_agent_id(agent_id);
      a->set_public_key((*agent)->public_key);
      a->set_enrolled_unix_ns((*agent)->enrolled_ns);
      absl::StatusOr<std::vector<AgentKeyRecord>> keys = store_->AgentKeys(agent_id);
      if (!keys.ok()) return Internal(keys.status());
      for (const AgentKeyRecord& k : *keys) {
        EvidenceKey* key = a->add_keys();
        key->set_public_key(k.public_key);
        key->set_from_batch_seq(k.from_seq);
        key->set_pinned_unix_ns(k.pinned_ns);
      }
    }
    absl::StatusOr<std::vector<BatchRecord>> batches =
        store_->Batches(agent_id, range.first, range.second, kMaxEvidenceBatches);
    if (!batches.ok()) return Internal(batches.status());
    for (const BatchRecord& b : *batches) {
      SignedBatch signed_batch;
      signed_batch.set_batch(b.batch);
      signed_batch.set_signature(b.signature);
      EvidenceBatch* out = resp->add_batches();
      out->set_agent_id(b.agent_id);
      out->set_batch_seq(b.batch_seq);
      out->set_signed_batch(signed_batch.SerializeAsString());
      out->set_received_unix_ns(b.received_ns);
    }
  }
  const int64_t now = SystemClock().NowUnixNanos();
  {
    // Chain of custody: who took the evidence, and when. Recorded before it is handed over.
    absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
    if (!w.ok()) return Internal(w.status());
    ActionRecord a = OperatorAction(
        caller, now, "evidence:export", absl::StrFormat("incident %d", req->incident_id()),
        absl::StrFormat("%d batches, %d events", resp->batches_size(), resp->events_size()),
        req->incident_id(), (*incident)->agent_id);
    if (absl::Status st = w->InsertAction(a).status(); !st.ok()) return Internal(st);
    if (absl::Status st = w->Commit(); !st.ok()) return Internal(st);
  }
  absl::StatusOr<std::vector<ActionRecord>> actions =
      store_->ListActions(req->incident_id(), 10000);
  if (!actions.ok()) return Internal(actions.status());
  for (const ActionRecord& a : *actions) ToProto(a, resp->add_actions());
  resp->set_exported_unix_ns(now);
  resp->set_exported_by(caller.name);
  return grpc::Status::OK;
}

grpc::Status OperatorService::ReloadRules(grpc::ServerContext* context, const ReloadRulesRequest*,
                                          ReloadRulesResponse* resp) {
  Caller caller;
  if (grpc::Status st = Authorize(context, Role::kAdmin, &caller); !st.ok()) return st;
  if (!reload_rules_) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this collector cannot reload rules");
  }
  absl::StatusOr<size_t> count = reload_rules_();
  const int64_t now = SystemClock().NowUnixNanos();
  ActionRecord a = OperatorAction(
      caller, now, "rules:reload", "",
      count.ok() ? absl::StrFormat("%d rule(s) in force", *count) : "the old rules stay in force");
  if (!count.ok()) {
    a.status = "failed";
    a.error_message = std::string(count.status().message());
  }
  absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
  if (!w.ok()) return Internal(w.status());
  if (absl::Status st = w->InsertAction(a).status(); !st.ok()) return Internal(st);
  if (absl::Status st = w->Commit(); !st.ok()) return Internal(st);
  if (!count.ok()) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrFormat("rules not reloaded, the old ones stay: %s", count.status().message()));
  }
  resp->set_rules(static_cast<uint32_t>(*count));
  return grpc::Status::OK;
}

grpc::Status OperatorService::ReenrollAgent(grpc::ServerContext* context,
                                            const tripline::v1::ReenrollAgentRequest* req,
                                            tripline::v1::ReenrollAgentResponse* resp) {
  Caller caller;
  if (grpc::Status st = Authorize(context, Role::kAdmin, &caller); !st.ok()) return st;
  const std::string& agent_id = req->agent_id();
  if (agent_id.empty() || agent_id.size() > 128) {
    return Invalid("agent_id must be 1-128 characters");
  }
  absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
  if (!w.ok()) return Internal(w.status());
  absl::StatusOr<std::optional<AgentRecord>> agent = w->GetAgent(agent_id);
  if (!agent.ok()) return Internal(agent.status());
  if (!*agent) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrFormat("agent %s has never enrolled: nothing to re-enroll (its "
                                        "first enrollment needs no operator)",
                                        Printable(agent_id, 128)));
  }
  absl::StatusOr<std::optional<ActionRecord>> pending =
      w->PendingAction(kReenrollActionKind, agent_id);
  if (!pending.ok()) return Internal(pending.status());
  if (*pending) {
    resp->set_action_id((*pending)->id);
    return grpc::Status::OK;  // already allowed and not used yet; the write rolls back
  }
  const int64_t now = SystemClock().NowUnixNanos();
  ActionRecord a = OperatorAction(
      caller, now, kReenrollActionKind, agent_id,
      "the agent's next enrollment with a new key will be accepted once and pin that key", 0,
      agent_id);
  a.status = "pending";
  absl::StatusOr<int64_t> id = w->InsertAction(a);
  if (!id.ok()) return Internal(id.status());
  if (absl::Status st = w->Commit(); !st.ok()) return Internal(st);
  spdlog::warn("operator: {} allowed agent={} to enroll once with a new key (action {})",
               caller.name, Printable(agent_id, 128), *id);
  resp->set_action_id(*id);
  return grpc::Status::OK;
}

}  // namespace tripline::collector

namespace tripline::collector {

using tripline::v1::ApproveIncidentRequest;
using tripline::v1::ApproveIncidentResponse;
using tripline::v1::IsolateRequest;
using tripline::v1::IsolateResponse;
using tripline::v1::ReleaseRequest;
using tripline::v1::ReleaseResponse;

absl::StatusOr<int64_t> OperatorService::QueueAction(const std::string& kind,
                                                     const std::string& instance_id,
                                                     int64_t incident_id, const std::string& mode,
                                                     const std::string& detail,
                                                     const std::string& actor) {
  ActionRecord action;
  action.incident_id = incident_id;
  action.agent_id = instance_id;
  action.kind = kind;
  action.target = instance_id;
  action.status = "pending";
  action.actor = actor;
  action.mode = mode;
  action.detail = detail;
  action.created_ns = action.updated_ns = absl::ToUnixNanos(absl::Now());
  absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
  if (!w.ok()) return w.status();
  absl::StatusOr<int64_t> id = w->InsertAction(action);
  if (!id.ok()) return id.status();
  if (incident_id > 0) {
    absl::Status st = w->AppendIncidentSummary(
        incident_id,
        absl::StrFormat("operator asked for %s of %s (action %d)", kind, instance_id, *id),
        action.created_ns);
    if (!st.ok()) return st;
  }
  if (absl::Status st = w->Commit(); !st.ok()) return st;
  spdlog::info("api: operator queued {} action={} instance={} incident={} mode={}", kind, *id,
               instance_id, incident_id, mode.empty() ? "default" : mode);
  if (on_action_) on_action_();
  return *id;
}

namespace {
grpc::Status CheckMode(const std::string& mode) {
  if (mode.empty() || mode == "auto" || mode == "dry-run") return grpc::Status::OK;
  return grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT,
      absl::StrFormat("mode '%s' is not one of auto, dry-run", Printable(mode, 32)));
}
}  // namespace

grpc::Status OperatorService::QueueInstanceAction(const std::string& kind,
                                                  const std::string& instance_id,
                                                  int64_t incident_id, const std::string& mode,
                                                  const std::string& detail,
                                                  const std::string& actor, int64_t* action_id) {
  if (!ValidInstanceId(instance_id)) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrFormat("'%s' is not an instance id (i-...)", Printable(instance_id, 80)));
  }
  if (grpc::Status st = CheckMode(mode); !st.ok()) return st;
  if (incident_id != 0) {
    absl::StatusOr<std::optional<IncidentRecord>> inc = store_->GetIncident(incident_id);
    if (grpc::Status st = FoundIncident(inc, incident_id); !st.ok()) return st;
  }
  absl::StatusOr<int64_t> id = QueueAction(kind, instance_id, incident_id, mode, detail, actor);
  if (!id.ok()) return Internal(id.status());
  *action_id = *id;
  return grpc::Status::OK;
}

grpc::Status OperatorService::Isolate(grpc::ServerContext* context, const IsolateRequest* req,
                                      IsolateResponse* resp) {
  Caller caller;
  if (grpc::Status st = Authorize(context, Role::kRespond, &caller); !st.ok()) return st;
  int64_t id = 0;
  grpc::Status st =
      QueueInstanceAction("isolate", req->instance_id(), req->incident_id(), req->mode(),
                          "operator asked for isolation", caller.name, &id);
  resp->set_action_id(id);
  return st;
}

grpc::Status OperatorService::Respond(grpc::ServerContext* context,
                                      const tripline::v1::RespondRequest* req,
                                      tripline::v1::RespondResponse* resp) {
  Caller caller;
  if (grpc::Status st = Authorize(context, Role::kRespond, &caller); !st.ok()) return st;
  if (req->action() != "stop" && req->action() != "disassociate-eips") {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrFormat("action '%s' is not one of stop, disassociate-eips",
                                        Printable(req->action(), 40)));
  }
  int64_t id = 0;
  grpc::Status st =
      QueueInstanceAction(req->action(), req->instance_id(), req->incident_id(), req->mode(),
                          absl::StrCat("operator asked for ", req->action()), caller.name, &id);
  resp->set_action_id(id);
  return st;
}

grpc::Status OperatorService::Release(grpc::ServerContext* context, const ReleaseRequest* req,
                                      ReleaseResponse* resp) {
  Caller caller;
  if (grpc::Status st = Authorize(context, Role::kRespond, &caller); !st.ok()) return st;
  if (grpc::Status st = CheckMode(req->mode()); !st.ok()) return st;
  std::string instance = req->instance_id();
  if (req->incident_id() != 0) {
    absl::StatusOr<std::optional<IncidentRecord>> inc = store_->GetIncident(req->incident_id());
    if (grpc::Status st = FoundIncident(inc, req->incident_id()); !st.ok()) return st;
    if (!instance.empty() && instance != (*inc)->agent_id) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrFormat("incident %d is about %s, not %s", req->incident_id(),
                                          (*inc)->agent_id, Printable(instance, 80)));
    }
    instance = (*inc)->agent_id;
  }
  if (!ValidInstanceId(instance)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrFormat("'%s' is not an instance id (i-...); give an instance id "
                                        "or an incident id",
                                        Printable(instance, 80)));
  }
  absl::StatusOr<int64_t> id = QueueAction("release", instance, req->incident_id(), req->mode(),
                                           "operator asked for release", caller.name);
  if (!id.ok()) return Internal(id.status());
  resp->set_action_id(*id);
  resp->set_instance_id(instance);
  return grpc::Status::OK;
}

grpc::Status OperatorService::ApproveIncident(grpc::ServerContext* context,
                                              const ApproveIncidentRequest* req,
                                              ApproveIncidentResponse* resp) {
  Caller caller;
  if (grpc::Status st = Authorize(context, Role::kRespond, &caller); !st.ok()) return st;
  absl::StatusOr<std::vector<ActionRecord>> actions =
      store_->ListActions(req->incident_id(), 10000);
  if (!actions.ok()) return Internal(actions.status());
  if (req->incident_id() <= 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "an incident id is required");
  }
  const int64_t now = absl::ToUnixNanos(absl::Now());
  absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
  if (!w.ok()) return Internal(w.status());
  for (ActionRecord a : *actions) {
    if (a.parent_id != 0 || a.status != "approval") continue;
    a.status = "pending";
    a.mode = "auto";
    a.actor = caller.name;  // not counted against the hourly cap of automatic isolations
    a.updated_ns = now;
    if (absl::Status st = w->UpdateAction(a); !st.ok()) return Internal(st);
    resp->add_action_ids(a.id);
  }
  if (resp->action_ids_size() == 0) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrFormat("incident %d has no action waiting for approval", req->incident_id()));
  }
  if (absl::Status st = w->AppendIncidentSummary(
          req->incident_id(),
          absl::StrFormat("%s approved %d action(s)", caller.name, resp->action_ids_size()), now);
      !st.ok()) {
    return Internal(st);
  }
  if (absl::Status st = w->Commit(); !st.ok()) return Internal(st);
  if (on_action_) on_action_();
  return grpc::Status::OK;
}

grpc::Status OperatorService::TestRule(grpc::ServerContext* context, const TestRuleRequest* req,
                                       TestRuleResponse* resp) {
  if (grpc::Status st = Authorize(context, Role::kRespond); !st.ok()) return st;
  constexpr size_t kMaxRulesBytes = 1 << 20;
  constexpr uint32_t kMaxReplayEvents = 200000;
  if (req->rules_yaml().size() > kMaxRulesBytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "rules_yaml: at most 1 MiB");
  }
  absl::StatusOr<RuleSet> rules = ParseRules(req->rules_yaml(), "rules_yaml");
  if (!rules.ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(rules.status().message()));
  }
  if (grpc::Status st = CheckTimeRange(req->since_unix_ns(), req->until_unix_ns()); !st.ok()) {
    return st;
  }
  const uint32_t max_events =
      req->max_events() == 0 ? kMaxReplayEvents : std::min(req->max_events(), kMaxReplayEvents);
  RuleReplay replay(&*rules);
  EventQuery q;
  q.agent_id = req->agent_id();
  q.since_ns = req->since_unix_ns();
  q.until_ns = req->until_unix_ns();
  q.limit = kMaxLimit;
  uint64_t scanned = 0;
  for (;;) {
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    absl::StatusOr<std::vector<EventRecord>> page = store_->QueryEvents(q);
    if (!page.ok()) return Internal(page.status());
    for (const EventRecord& e : *page) {
      if (scanned == max_events) {
        resp->set_truncated(true);
        break;
      }
      Event event;
      if (!event.ParseFromString(e.event)) continue;
      replay.Feed(e.agent_id, e.id, event);
      ++scanned;
      q.after_id = e.id;
    }
    if (resp->truncated() || static_cast<int>(page->size()) < q.limit) break;
  }
  for (const RuleFiring& f : replay.firings()) {
    tripline::v1::RuleFiring* out = resp->add_firings();
    out->set_rule_id(f.rule_id);
    out->set_agent_id(f.agent_id);
    out->set_first_unix_ns(f.first_time_ns);
    for (int64_t id : f.event_ids) out->add_event_ids(id);
    out->set_group(f.group);
  }
  resp->set_events_scanned(scanned);
  resp->set_matches(static_cast<uint64_t>(replay.matches()));
  return grpc::Status::OK;
}

}  // namespace tripline::collector
