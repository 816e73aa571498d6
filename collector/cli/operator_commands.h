// triplinectl's commands: each makes one call on tripline.v1.Operator through any stub (a real
// channel or, in tests, an in-process server) and writes the answer to `out`, as a table or as one
// proto3 JSON document. Thread-compatible; each call blocks until the answer or the deadline.
//
// JSON is protobuf's canonical mapping, so scripts can rely on it: field names as in the .proto,
// every primitive field printed even when zero, 64-bit integers as strings, enums by name, bytes
// fields (paths, hashes, log lines) base64.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/time/time.h"
#include "grpcpp/support/status.h"
#include "tripline/v1/operator.grpc.pb.h"

namespace tripline::cli {

struct CallOptions {
  std::string token;  // sent as "authorization: Bearer <token>"; never printed
  absl::Duration timeout = absl::Seconds(10);
};

struct OutputOptions {
  bool json = false;
  int columns = 120;        // tables are cut to this width
  int64_t now_unix_ns = 0;  // for "12s ago"
};

using OperatorStub = tripline::v1::Operator::StubInterface;

// Each returns the call's status; on OK the answer has been written to `out`, on an error nothing.
grpc::Status ListAgents(OperatorStub& stub, const CallOptions& call, const OutputOptions& output,
                        std::ostream& out);
grpc::Status QueryEvents(OperatorStub& stub, const tripline::v1::QueryEventsRequest& request,
                         const CallOptions& call, const OutputOptions& output, std::ostream& out);
// CloudTrail events the collector stored, oldest first.
grpc::Status QueryCloudEvents(OperatorStub& stub,
                              const tripline::v1::QueryCloudEventsRequest& request,
                              const CallOptions& call, const OutputOptions& output,
                              std::ostream& out);
// Prints the stored events that match, then new ones as the collector stores them, one line (or
// one JSON document) each, until the stream ends or the process is stopped.
grpc::Status FollowEvents(OperatorStub& stub, tripline::v1::QueryEventsRequest request,
                          const CallOptions& call, const OutputOptions& output, std::ostream& out);
grpc::Status ListIncidents(OperatorStub& stub, const tripline::v1::ListIncidentsRequest& request,
                           const CallOptions& call, const OutputOptions& output, std::ostream& out);
grpc::Status ShowIncident(OperatorStub& stub, int64_t incident_id, const CallOptions& call,
                          const OutputOptions& output, std::ostream& out);
grpc::Status ListActions(OperatorStub& stub, const tripline::v1::ListActionsRequest& request,
                         const CallOptions& call, const OutputOptions& output, std::ostream& out);

// Prints the incident as it is after the change (one-row table, or the response as JSON).
grpc::Status UpdateIncident(OperatorStub& stub, const tripline::v1::UpdateIncidentRequest& request,
                            const CallOptions& call, const OutputOptions& output,
                            std::ostream& out);

// Fetches incident `incident_id`'s evidence and writes it to `dir` (see evidence.h); prints what
// was written. A directory that cannot be written is FAILED_PRECONDITION.
grpc::Status ExportEvidence(OperatorStub& stub, int64_t incident_id, const std::string& collector,
                            const std::string& dir, const CallOptions& call,
                            const OutputOptions& output, std::ostream& out);

// The post-incident report of `incident_id` (Markdown, or JSON with output.json), to `file`
// (0600) or, when empty, to `out`.
grpc::Status IncidentReport(OperatorStub& stub, int64_t incident_id, const std::string& file,
                            const CallOptions& call, const OutputOptions& output,
                            std::ostream& out);

// Allows the agent's next enrollment with a new key, once (needs admin).
grpc::Status ReenrollAgent(OperatorStub& stub, const std::string& agent_id,
                           const CallOptions& call, const OutputOptions& output, std::ostream& out);
grpc::Status ReloadRules(OperatorStub& stub, const CallOptions& call, const OutputOptions& output,
                         std::ostream& out);

// Response actions: print the queued action's id (and, for a release, the instance).
grpc::Status Isolate(OperatorStub& stub, const tripline::v1::IsolateRequest& request,
                     const CallOptions& call, const OutputOptions& output, std::ostream& out);
grpc::Status Release(OperatorStub& stub, const tripline::v1::ReleaseRequest& request,
                     const CallOptions& call, const OutputOptions& output, std::ostream& out);
grpc::Status Respond(OperatorStub& stub, const tripline::v1::RespondRequest& request,
                     const CallOptions& call, const OutputOptions& output, std::ostream& out);
grpc::Status ApproveIncident(OperatorStub& stub, int64_t incident_id, const CallOptions& call,
                             const OutputOptions& output, std::ostream& out);

// What the rules of request.rules_yaml would have opened over the stored events.
grpc::Status TestRules(OperatorStub& stub, const tripline::v1::TestRuleRequest& request,
                       const CallOptions& call, const OutputOptions& output, std::ostream& out);

// Exit status for a call's outcome: 0 OK; 3 when the collector could not be reached in time
// (UNAVAILABLE, DEADLINE_EXCEEDED); 1 for any other error the collector answered with.
int ExitCodeFor(const grpc::Status& status);

// "UNAUTHENTICATED: operator token rejected": the code's name and the collector's message, made
// printable.
std::string DescribeRpcError(const grpc::Status& status);

}  // namespace tripline::cli
