// The operators' gRPC service (tripline.v1.Operator): agents, events, incidents and the audit
// trail, read from the store's read connection so queries never hold up ingest. Synchronous
// service (gRPC's thread pool); it shares the server and port with Ingest.
//
// Auth: every call is authorized by OperatorAuthorizer (collector/auth) for the role it needs:
// reads need `read`; calls that change something need `respond` or `admin` and record the caller
// in the audit trail. Unidentified -> UNAUTHENTICATED, too little role -> PERMISSION_DENIED.
// Paging: QueryEvents returns events with id > after_id, `limit` of them (default 100, at most
// 1000), and next_after_id (0 when there is nothing more).
#pragma once

#include <functional>
#include <string>

#include "collector/auth/operator_auth.h"
#include "collector/store/collector_store.h"
#include "tripline/v1/operator.grpc.pb.h"

namespace tripline::collector {

class OperatorService final : public tripline::v1::Operator::Service {
 public:
  // `store` and `auth` outlive the service. `on_action` is called after an action was committed
  // (the response worker's Wake).
  OperatorService(CollectorStore* store, const OperatorAuthorizer* auth,
                  std::function<void()> on_action = nullptr);

  grpc::Status ListAgents(grpc::ServerContext* context, const tripline::v1::ListAgentsRequest* req,
                          tripline::v1::ListAgentsResponse* resp) override;
  grpc::Status QueryEvents(grpc::ServerContext* context,
                           const tripline::v1::QueryEventsRequest* req,
                           tripline::v1::QueryEventsResponse* resp) override;
  grpc::Status QueryCloudEvents(grpc::ServerContext* context,
                                const tripline::v1::QueryCloudEventsRequest* req,
                                tripline::v1::QueryCloudEventsResponse* resp) override;
  grpc::Status WatchEvents(grpc::ServerContext* context,
                           const tripline::v1::QueryEventsRequest* req,
                           grpc::ServerWriter<tripline::v1::StoredEvent>* writer) override;
  grpc::Status ListIncidents(grpc::ServerContext* context,
                             const tripline::v1::ListIncidentsRequest* req,
                             tripline::v1::ListIncidentsResponse* resp) override;
  grpc::Status GetIncident(grpc::ServerContext* context,
                           const tripline::v1::GetIncidentRequest* req,
                           tripline::v1::GetIncidentResponse* resp) override;
  grpc::Status ListActions(grpc::ServerContext* context,
                           const tripline::v1::ListActionsRequest* req,
                           tripline::v1::ListActionsResponse* resp) override;
  // Isolate / Release queue a pending action (actor: the caller) for the response worker;
  // ApproveIncident turns the incident's isolations waiting in "approval" back to pending.
  grpc::Status Isolate(grpc::ServerContext* context, const tripline::v1::IsolateRequest* req,
                       tripline::v1::IsolateResponse* resp) override;
  grpc::Status Release(grpc::ServerContext* context, const tripline::v1::ReleaseRequest* req,
                       tripline::v1::ReleaseResponse* resp) override;
  grpc::Status Respond(grpc::ServerContext* context, const tripline::v1::RespondRequest* req,
                       tripline::v1::RespondResponse* resp) override;
  grpc::Status ApproveIncident(grpc::ServerContext* context,
                               const tripline::v1::ApproveIncidentRequest* req,
                               tripline::v1::ApproveIncidentResponse* resp) override;
  grpc::Status UpdateIncident(grpc::ServerContext* context,
                              const tripline::v1::UpdateIncidentRequest* req,
                              tripline::v1::UpdateIncidentResponse* resp) override;
  grpc::Status ExportEvidence(grpc::ServerContext* context,
                              const tripline::v1::ExportEvidenceRequest* req,
                              tripline::v1::ExportEvidenceResponse* resp) override;

  // Leaves a pending "agent:reenroll" action naming the caller (admin): the agent's next
  // enrollment with a new key is let in once (collector/ingest/store_writer.cc).
  grpc::Status ReenrollAgent(grpc::ServerContext* context,
                             const tripline::v1::ReenrollAgentRequest* req,
                             tripline::v1::ReenrollAgentResponse* resp) override;

  grpc::Status TestRule(grpc::ServerContext* context, const tripline::v1::TestRuleRequest* req,
                        tripline::v1::TestRuleResponse* resp) override;

  // What ReloadRules calls: reloads and returns the number of rules in force, or the error (the
  // old rules stay). Set before the server starts; without it ReloadRules is UNIMPLEMENTED.
  using RulesReloader = std::function<absl::StatusOr<size_t>()>;
  void SetRulesReloader(RulesReloader reloader) { reload_rules_ = std::move(reloader); }

  grpc::Status ReloadRules(grpc::ServerContext* context,
                           const tripline::v1::ReloadRulesRequest* req,
                           tripline::v1::ReloadRulesResponse* resp) override;

 private:
  // OK when the caller is known and holds at least `required`; sets `*caller` when not null.
  grpc::Status Authorize(const grpc::ServerContext* context, Role required,
                         Caller* caller = nullptr) const;

  // Inserts a pending top-level action; its id.
  absl::StatusOr<int64_t> QueueAction(const std::string& kind, const std::string& instance_id,
                                      int64_t incident_id, const std::string& mode,
                                      const std::string& detail, const std::string& actor);
  // Checks an operator's request to act on `instance_id` (an instance id, a known mode, an
  // incident that exists when one is named), then queues it: `*action_id`.
  grpc::Status QueueInstanceAction(const std::string& kind, const std::string& instance_id,
                                   int64_t incident_id, const std::string& mode,
                                   const std::string& detail, const std::string& actor,
                                   int64_t* action_id);

  CollectorStore* const store_;
  const OperatorAuthorizer* const auth_;
  RulesReloader reload_rules_;
  const std::function<void()> on_action_;
};

}  // namespace tripline::collector
