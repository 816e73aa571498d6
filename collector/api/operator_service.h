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

#include <string>

#include "collector/auth/operator_auth.h"
#include "collector/store/collector_store.h"
#include "tripline/v1/operator.grpc.pb.h"

namespace tripline::collector {

class OperatorService final : public tripline::v1::Operator::Service {
 public:
  // `store` and `auth` outlive the service.
  OperatorService(CollectorStore* store, const OperatorAuthorizer* auth);

  grpc::Status ListAgents(grpc::ServerContext* context, const tripline::v1::ListAgentsRequest* req,
                          tripline::v1::ListAgentsResponse* resp) override;
  grpc::Status QueryEvents(grpc::ServerContext* context,
                           const tripline::v1::QueryEventsRequest* req,
                           tripline::v1::QueryEventsResponse* resp) override;
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
  grpc::Status UpdateIncident(grpc::ServerContext* context,
                              const tripline::v1::UpdateIncidentRequest* req,
                              tripline::v1::UpdateIncidentResponse* resp) override;
  grpc::Status ExportEvidence(grpc::ServerContext* context,
                              const tripline::v1::ExportEvidenceRequest* req,
                              tripline::v1::ExportEvidenceResponse* resp) override;

 private:
  // OK when the caller is known and holds at least `required`; sets `*caller` when not null.
  grpc::Status Authorize(const grpc::ServerContext* context, Role required,
                         Caller* caller = nullptr) const;

  CollectorStore* const store_;
  const OperatorAuthorizer* const auth_;
};

}  // namespace tripline::collector
