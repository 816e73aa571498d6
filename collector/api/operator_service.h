// The operators' gRPC service (tripline.v1.Operator): agents, events, incidents and the audit
// trail, read from the store's read connection so queries never hold up ingest. Synchronous
// service (gRPC's thread pool); it shares the server and port with Ingest.
//
// Auth: every call carries "authorization: Bearer <token>"; the token is compared with the
// operator token in constant time (keyed BLAKE2b hashes). Missing or wrong -> UNAUTHENTICATED.
// Paging: QueryEvents returns events with id > after_id, `limit` of them (default 100, at most
// 1000), and next_after_id (0 when there is nothing more).
#pragma once

#include <string>

#include "collector/store/collector_store.h"
#include "tripline/v1/operator.grpc.pb.h"

namespace tripline::collector {

class OperatorService final : public tripline::v1::Operator::Service {
 public:
  // `store` outlives the service. `operator_token` is never logged.
  OperatorService(CollectorStore* store, const std::string& operator_token);

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

 private:
  // OK when the call carries the operator token; UNAUTHENTICATED otherwise.
  grpc::Status Authorize(const grpc::ServerContext* context) const;

  CollectorStore* const store_;
  const std::string token_key_;   // random, per process
  const std::string token_hash_;  // keyed BLAKE2b of the operator token
};

}  // namespace tripline::collector
