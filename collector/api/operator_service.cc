#include "collector/api/operator_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "platform/crypto/digest.h"
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

void ToProto(const AgentRecord& a, Agent* out) {
  out->set_agent_id(a.agent_id);
  out->set_hostname(a.hostname);
  out->set_version(a.version);
  out->set_public_key(a.public_key);
  out->set_enrolled_unix_ns(a.enrolled_ns);
  out->set_last_seen_unix_ns(a.last_seen_ns);
  out->set_durable_seq(a.durable_seq);
  out->set_isolation_state(a.isolation_state);
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
  return std::all_of(id.begin() + 2, id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z');
  });
}

}  // namespace

OperatorService::OperatorService(CollectorStore* store, const std::string& operator_token,
                                 std::function<void()> on_action)
    : store_(store),
      on_action_(std::move(on_action)),
      token_key_(RandomBytes(32)),
      token_hash_(Blake2b256(operator_token, token_key_)) {}

grpc::Status OperatorService::Authorize(const grpc::ServerContext* context) const {
  const auto& md = context->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing \"authorization: Bearer <operator token>\" metadata");
  }
  std::string_view value(it->second.data(), it->second.size());
  constexpr std::string_view kBearer = "Bearer ";
  if (value.substr(0, kBearer.size()) != kBearer) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "authorization metadata must be \"Bearer <operator token>\"");
  }
  value.remove_prefix(kBearer.size());
  if (!ConstantTimeEquals(Blake2b256(value, token_key_), token_hash_)) {
    spdlog::warn("api: call with a wrong operator token from {}", context->peer());
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "operator token rejected");
  }
  return grpc::Status::OK;
}

grpc::Status OperatorService::ListAgents(grpc::ServerContext* context, const ListAgentsRequest*,
                                         ListAgentsResponse* resp) {
  if (grpc::Status st = Authorize(context); !st.ok()) return st;
  absl::StatusOr<std::vector<AgentRecord>> agents = store_->ListAgents();
  if (!agents.ok()) return Internal(agents.status());
  for (const AgentRecord& a : *agents) ToProto(a, resp->add_agents());
  return grpc::Status::OK;
}

grpc::Status OperatorService::QueryEvents(grpc::ServerContext* context,
                                          const QueryEventsRequest* req,
                                          QueryEventsResponse* resp) {
  if (grpc::Status st = Authorize(context); !st.ok()) return st;
  const std::string& kind = req->kind();
  if (!kind.empty() && kind != "file" && kind != "log" && kind != "agent") {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrFormat("kind '%s' is not one of file, log, agent",
                                        Printable(kind, 64)));
  }
  if (req->after_id() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "after_id must not be negative");
  }
  EventQuery q;
  q.agent_id = req->agent_id();
  q.kind = kind;
  q.after_id = req->after_id();
  q.limit = ClampLimit(req->limit());
  absl::StatusOr<std::vector<EventRecord>> events = store_->QueryEvents(q);
  if (!events.ok()) return Internal(events.status());
  for (const EventRecord& e : *events) ToProto(e, resp->add_events());
  resp->set_next_after_id(
      static_cast<int>(events->size()) == q.limit && !events->empty() ? events->back().id : 0);
  return grpc::Status::OK;
}

grpc::Status OperatorService::ListIncidents(grpc::ServerContext* context,
                                            const ListIncidentsRequest* req,
                                            ListIncidentsResponse* resp) {
  if (grpc::Status st = Authorize(context); !st.ok()) return st;
  absl::StatusOr<std::vector<IncidentRecord>> incidents =
      store_->ListIncidents(req->status(), ClampLimit(req->limit()));
  if (!incidents.ok()) return Internal(incidents.status());
  for (const IncidentRecord& i : *incidents) ToProto(i, resp->add_incidents());
  return grpc::Status::OK;
}

grpc::Status OperatorService::GetIncident(grpc::ServerContext* context,
                                          const GetIncidentRequest* req,
                                          GetIncidentResponse* resp) {
  if (grpc::Status st = Authorize(context); !st.ok()) return st;
  absl::StatusOr<std::optional<IncidentRecord>> incident = store_->GetIncident(req->id());
  if (!incident.ok()) return Internal(incident.status());
  if (!*incident) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrFormat("no incident %d", req->id()));
  }
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
  if (grpc::Status st = Authorize(context); !st.ok()) return st;
  absl::StatusOr<std::vector<ActionRecord>> actions =
      store_->ListActions(req->incident_id(), ClampLimit(req->limit()));
  if (!actions.ok()) return Internal(actions.status());
  for (const ActionRecord& a : *actions) ToProto(a, resp->add_actions());
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
                                                     const std::string& detail) {
  ActionRecord action;
  action.incident_id = incident_id;
  action.agent_id = instance_id;
  action.kind = kind;
  action.target = instance_id;
  action.status = "pending";
  action.actor = "operator";
  action.mode = mode;
  action.detail = detail;
  action.created_ns = action.updated_ns = absl::ToUnixNanos(absl::Now());
  absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
  if (!w.ok()) return w.status();
  absl::StatusOr<int64_t> id = w->InsertAction(action);
  if (!id.ok()) return id.status();
  if (incident_id > 0) {
    absl::Status st = w->AppendIncidentSummary(
        incident_id, absl::StrFormat("operator asked for %s of %s (action %d)", kind, instance_id, *id),
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
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrFormat("mode '%s' is not one of auto, dry-run", Printable(mode, 32)));
}
}  // namespace

grpc::Status OperatorService::Isolate(grpc::ServerContext* context, const IsolateRequest* req,
                                      IsolateResponse* resp) {
  if (grpc::Status st = Authorize(context); !st.ok()) return st;
  if (!ValidInstanceId(req->instance_id())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrFormat("'%s' is not an instance id (i-...)",
                                        Printable(req->instance_id(), 80)));
  }
  if (grpc::Status st = CheckMode(req->mode()); !st.ok()) return st;
  if (req->incident_id() != 0) {
    absl::StatusOr<std::optional<IncidentRecord>> inc = store_->GetIncident(req->incident_id());
    if (!inc.ok()) return Internal(inc.status());
    if (!*inc) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrFormat("no incident %d", req->incident_id()));
    }
  }
  absl::StatusOr<int64_t> id = QueueAction("isolate", req->instance_id(), req->incident_id(),
                                           req->mode(), "operator asked for isolation");
  if (!id.ok()) return Internal(id.status());
  resp->set_action_id(*id);
  return grpc::Status::OK;
}

grpc::Status OperatorService::Respond(grpc::ServerContext* context,
                                      const tripline::v1::RespondRequest* req,
                                      tripline::v1::RespondResponse* resp) {
  if (grpc::Status st = Authorize(context); !st.ok()) return st;
  if (req->action() != "stop" && req->action() != "disassociate-eips") {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrFormat("action '%s' is not one of stop, disassociate-eips",
                                        Printable(req->action(), 40)));
  }
  if (!ValidInstanceId(req->instance_id())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrFormat("'%s' is not an instance id (i-...)",
                                        Printable(req->instance_id(), 80)));
  }
  if (grpc::Status st = CheckMode(req->mode()); !st.ok()) return st;
  if (req->incident_id() != 0) {
    absl::StatusOr<std::optional<IncidentRecord>> inc = store_->GetIncident(req->incident_id());
    if (!inc.ok()) return Internal(inc.status());
    if (!*inc) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrFormat("no incident %d", req->incident_id()));
    }
  }
  absl::StatusOr<int64_t> id =
      QueueAction(req->action(), req->instance_id(), req->incident_id(), req->mode(),
                  absl::StrCat("operator asked for ", req->action()));
  if (!id.ok()) return Internal(id.status());
  resp->set_action_id(*id);
  return grpc::Status::OK;
}

grpc::Status OperatorService::Release(grpc::ServerContext* context, const ReleaseRequest* req,
                                      ReleaseResponse* resp) {
  if (grpc::Status st = Authorize(context); !st.ok()) return st;
  if (grpc::Status st = CheckMode(req->mode()); !st.ok()) return st;
  std::string instance = req->instance_id();
  if (req->incident_id() != 0) {
    absl::StatusOr<std::optional<IncidentRecord>> inc = store_->GetIncident(req->incident_id());
    if (!inc.ok()) return Internal(inc.status());
    if (!*inc) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrFormat("no incident %d", req->incident_id()));
    }
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
                                           "operator asked for release");
  if (!id.ok()) return Internal(id.status());
  resp->set_action_id(*id);
  resp->set_instance_id(instance);
  return grpc::Status::OK;
}

grpc::Status OperatorService::ApproveIncident(grpc::ServerContext* context,
                                              const ApproveIncidentRequest* req,
                                              ApproveIncidentResponse* resp) {
  if (grpc::Status st = Authorize(context); !st.ok()) return st;
  absl::StatusOr<std::vector<ActionRecord>> actions = store_->ListActions(req->incident_id(), 10000);
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
    a.actor = "operator";  // not counted against the hourly cap of automatic isolations
    a.updated_ns = now;
    if (absl::Status st = w->UpdateAction(a); !st.ok()) return Internal(st);
    resp->add_action_ids(a.id);
  }
  if (resp->action_ids_size() == 0) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrFormat("incident %d has no action waiting for approval",
                                        req->incident_id()));
  }
  if (absl::Status st = w->AppendIncidentSummary(
          req->incident_id(), absl::StrFormat("operator approved %d action(s)", resp->action_ids_size()),
          now);
      !st.ok()) {
    return Internal(st);
  }
  if (absl::Status st = w->Commit(); !st.ok()) return Internal(st);
  if (on_action_) on_action_();
  return grpc::Status::OK;
}

}  // namespace tripline::collector
