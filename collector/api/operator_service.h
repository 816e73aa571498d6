// The operators' gRPC service (tripline.v1.Operator): agents, events, incidents and the audit
// trail, read from the store's read connection so queries never hold up ingest. Synchronous
// service (gRPC's thread pool); it shares the server and port with Ingest.
//
// Auth: every call carries "authorization: Bearer <token>"; the token is compared with the
// operator token in constant time (keyed BLAKE2b hashes). Missing or wrong -> UNAUTHENTICATED.
// Paging: QueryEvents returns events with id > after_id, `limit` of them (default 100, at most
// 1000), and next_after_id (0 when there is nothing more).
#pragma once

#include <functional>
#include <string>

#include "collector/store/collector_store.h"
#include "tripline/v1/operator.grpc.pb.h"

namespace tripline::collector {

class OperatorService final : public tripline::v1::Operator::Service {
 public:
  // `store` outlives the service. `operator_token` is never logged. `on_action` is called after
  // an action was committed (the response worker's Wake).
  OperatorService(CollectorStore* store, const std::string& operator_token,
                  std::function<void()> on_action = nullptr);

  grpc::Status ListAgents(grpc::ServerContext* context, const tripline::v1::ListAgentsRequest* req,
                          tripline::v1::ListAgentsResponse* resp) override;
  grpc::Status QueryEvents(grpc::ServerContext* context,
                           const tripline::v1::QueryEventsRequest* req,
                           tripline::v1::QueryEventsResponse* resp) override;
  grpc::Status ListIncidents(grpc::ServerContext* context,
                             const tripline::v1::ListIncidentsRequest* req,
                             tripline::v1::ListIncidentsResponse* resp) override;
  grpc::Status GetIncident(grpc::ServerContext* context,
                           const tripline::v1::GetIncidentRequest* req,
                           tripline::v1::GetIncidentResponse* resp) override;
  grpc::Status ListActions(grpc::ServerContext* context,
                           const tripline::v1::ListActionsRequest* req,
                           tripline::v1::ListActionsResponse* resp) override;
  // Isolate / Release queue a pending action (actor "operator") for the response worker;
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

 private:
  // OK when the call carries the operator token; UNAUTHENTICATED otherwise.
  grpc::Status Authorize(const grpc::ServerContext* context) const;

  // Inserts a pending top-level action; its id.
  absl::StatusOr<int64_t> QueueAction(const std::string& kind, const std::string& instance_id,
                                      int64_t incident_id, const std::string& mode,
                                      const std::string& detail);

  CollectorStore* const store_;
  const std::function<void()> on_action_;
  const std::string token_key_;   // random, per process
  const std::string token_hash_;  // keyed BLAKE2b of the operator token
};

}  // namespace tripline::collector
