#include "collector/cli/operator_commands.h"

#include <chrono>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "collector/cli/evidence.h"
#include "collector/cli/incident_report.h"
#include "collector/cli/operator_view.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/client_context.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/logging.h"

namespace tripline::cli {
namespace {

namespace v1 = tripline::v1;

void Prepare(const CallOptions& call, grpc::ClientContext* context) {
  context->AddMetadata("authorization", "Bearer " + call.token);
  context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(call.timeout));
}

// Writes `message` as one JSON document and a newline; an error when protobuf cannot (which for
// these messages means a string field that is not UTF-8).
grpc::Status WriteJson(const google::protobuf::Message& message, std::ostream& out) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        absl::StrCat("cannot write the answer as JSON: ", status.ToString()));
  }
  out << json << '\n';
  return grpc::Status::OK;
}

// Calls `method` on `stub` and, on success, writes the answer with `render` (tables) or as JSON.
template <typename Request, typename Response, typename Method, typename Render>
grpc::Status Call(OperatorStub& stub, Method method, const Request& request,
                  const CallOptions& call, const OutputOptions& output, std::ostream& out,
                  Render render) {
  grpc::ClientContext context;
  Prepare(call, &context);
  Response response;
  grpc::Status status = (stub.*method)(&context, request, &response);
  if (!status.ok()) return status;
  if (output.json) return WriteJson(response, out);
  out << render(response);
  return grpc::Status::OK;
}

}  // namespace

grpc::Status ListAgents(OperatorStub& stub, const CallOptions& call, const OutputOptions& output,
                        std::ostream& out) {
  return Call<v1::ListAgentsRequest, v1::ListAgentsResponse>(
      stub, &OperatorStub::ListAgents, v1::ListAgentsRequest(), call, output, out,
      [&](const v1::ListAgentsResponse& r) {
        return AgentsTable(r, output.now_unix_ns).Render(output.columns);
      });
}

grpc::Status QueryEvents(OperatorStub& stub, const v1::QueryEventsRequest& request,
                         const CallOptions& call, const OutputOptions& output, std::ostream& out) {
  return Call<v1::QueryEventsRequest, v1::QueryEventsResponse>(
      stub, &OperatorStub::QueryEvents, request, call, output, out,
      [&](const v1::QueryEventsResponse& r) {
        std::string text = EventsTable(r).Render(output.columns);
        if (r.next_after_id() != 0)
          absl::StrAppend(&text, "more: --after ", r.next_after_id(), "\n");
        return text;
      });
}

grpc::Status QueryCloudEvents(OperatorStub& stub, const v1::QueryCloudEventsRequest& request,
                              const CallOptions& call, const OutputOptions& output,
                              std::ostream& out) {
  return Call<v1::QueryCloudEventsRequest, v1::QueryCloudEventsResponse>(
      stub, &OperatorStub::QueryCloudEvents, request, call, output, out,
      [&](const v1::QueryCloudEventsResponse& r) {
        std::string text = CloudEventsTable(r).Render(output.columns);
        if (r.next_after_id() != 0)
          absl::StrAppend(&text, "more: --after ", r.next_after_id(), "\n");
        return text;
      });
}

grpc::Status FollowEvents(OperatorStub& stub, v1::QueryEventsRequest request,
                          const CallOptions& call, const OutputOptions& output, std::ostream& out) {
  // The stored backlog first (page by page), then the stream from the last one printed.
  for (;;) {
    grpc::ClientContext context;
    Prepare(call, &context);
    v1::QueryEventsResponse page;
    grpc::Status status = stub.QueryEvents(&context, request, &page);
    if (!status.ok()) return status;
    for (const auto& e : page.events()) {
      if (output.json) {
        if (grpc::Status st = WriteJson(e, out); !st.ok()) return st;
      } else {
        out << EventLine(e) << '\n';
      }
      request.set_after_id(e.id());
    }
    out.flush();
    if (page.next_after_id() == 0) break;
  }
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer " + call.token);  // no deadline: until stopped
  auto reader = stub.WatchEvents(&context, request);
  v1::StoredEvent e;
  while (reader->Read(&e)) {
    if (output.json) {
      if (grpc::Status st = WriteJson(e, out); !st.ok()) return st;
    } else {
      out << EventLine(e) << '\n';
    }
    out.flush();
  }
  return reader->Finish();
}

grpc::Status ListIncidents(OperatorStub& stub, const v1::ListIncidentsRequest& request,
                           const CallOptions& call, const OutputOptions& output,
                           std::ostream& out) {
  return Call<v1::ListIncidentsRequest, v1::ListIncidentsResponse>(
      stub, &OperatorStub::ListIncidents, request, call, output, out,
      [&](const v1::ListIncidentsResponse& r) { return IncidentsTable(r).Render(output.columns); });
}

grpc::Status ShowIncident(OperatorStub& stub, int64_t incident_id, const CallOptions& call,
                          const OutputOptions& output, std::ostream& out) {
  v1::GetIncidentRequest request;
  request.set_id(incident_id);
  return Call<v1::GetIncidentRequest, v1::GetIncidentResponse>(
      stub, &OperatorStub::GetIncident, request, call, output, out,
      [&](const v1::GetIncidentResponse& r) { return IncidentReport(r, output.columns); });
}

grpc::Status ListActions(OperatorStub& stub, const v1::ListActionsRequest& request,
                         const CallOptions& call, const OutputOptions& output, std::ostream& out) {
  return Call<v1::ListActionsRequest, v1::ListActionsResponse>(
      stub, &OperatorStub::ListActions, request, call, output, out,
      [&](const v1::ListActionsResponse& r) { return ActionsTable(r).Render(output.columns); });
}

grpc::Status UpdateIncident(OperatorStub& stub, const v1::UpdateIncidentRequest& request,
                            const CallOptions& call, const OutputOptions& output,
                            std::ostream& out) {
  return Call<v1::UpdateIncidentRequest, v1::UpdateIncidentResponse>(
      stub, &OperatorStub::UpdateIncident, request, call, output, out,
      [&](const v1::UpdateIncidentResponse& r) {
        v1::ListIncidentsResponse one;
        *one.add_incidents() = r.incident();
        return IncidentsTable(one).Render(output.columns);
      });
}

grpc::Status ExportEvidence(OperatorStub& stub, int64_t incident_id, const std::string& collector,
                            const std::string& dir, const CallOptions& call,
                            const OutputOptions& output, std::ostream& out) {
  grpc::ClientContext context;
  Prepare(call, &context);
  v1::ExportEvidenceRequest request;
  request.set_incident_id(incident_id);
  v1::ExportEvidenceResponse evidence;
  grpc::Status status = stub.ExportEvidence(&context, request, &evidence);
  if (!status.ok()) return status;
  if (absl::Status st = WriteEvidence(evidence, collector, dir); !st.ok()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("writing the evidence: ", st.message()));
  }
  if (output.json) {
    out << absl::StrFormat(
        "{\"incident_id\":\"%d\",\"directory\":\"%s\",\"batches\":%d,\"events\":%d}\n", incident_id,
        Printable(dir), evidence.batches_size(), evidence.events_size());
  } else {
    out << absl::StrFormat(
        "incident %d: %d signed batches, %d events, %d actions written to %s\n"
        "check it any time, offline: triplinectl evidence verify %s\n",
        incident_id, evidence.batches_size(), evidence.events_size(), evidence.actions_size(),
        Printable(dir), Printable(dir));
  }
  return grpc::Status::OK;
}

grpc::Status IncidentReport(OperatorStub& stub, int64_t incident_id, const std::string& file,
                            const CallOptions& call, const OutputOptions& output,
                            std::ostream& out) {
  v1::GetIncidentResponse incident;
  {
    grpc::ClientContext context;
    Prepare(call, &context);
    v1::GetIncidentRequest request;
    request.set_id(incident_id);
    grpc::Status status = stub.GetIncident(&context, request, &incident);
    if (!status.ok()) return status;
  }
  std::optional<v1::Agent> agent;
  {
    grpc::ClientContext context;
    Prepare(call, &context);
    v1::ListAgentsResponse agents;
    grpc::Status status = stub.ListAgents(&context, v1::ListAgentsRequest(), &agents);
    if (!status.ok()) return status;
    for (const auto& a : agents.agents()) {
      if (a.agent_id() == incident.incident().agent_id()) agent = a;
    }
  }
  const std::string text =
      output.json ? IncidentReportJson(incident, agent) : IncidentReportMarkdown(incident, agent);
  if (file.empty()) {
    out << text;
    return grpc::Status::OK;
  }
  if (absl::Status st = WriteFileAtomic(file, text, 0600); !st.ok()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("writing the report: ", st.message()));
  }
  out << "report of incident " << incident_id << " written to " << Printable(file) << '\n';
  return grpc::Status::OK;
}

grpc::Status ReenrollAgent(OperatorStub& stub, const std::string& agent_id,
                           const CallOptions& call, const OutputOptions& output, std::ostream& out) {
  v1::ReenrollAgentRequest request;
  request.set_agent_id(agent_id);
  return Call<v1::ReenrollAgentRequest, v1::ReenrollAgentResponse>(
      stub, &OperatorStub::ReenrollAgent, request, call, output, out,
      [&](const v1::ReenrollAgentResponse& r) {
        return absl::StrCat("agent ", Printable(agent_id),
                            " may enroll once with a new key; that key is then pinned (action ",
                            r.action_id(), ")\n");
      });
}

grpc::Status ReloadRules(OperatorStub& stub, const CallOptions& call, const OutputOptions& output,
                         std::ostream& out) {
  return Call<v1::ReloadRulesRequest, v1::ReloadRulesResponse>(
      stub, &OperatorStub::ReloadRules, v1::ReloadRulesRequest(), call, output, out,
      [](const v1::ReloadRulesResponse& r) {
        return absl::StrFormat("rules reloaded: %d rule(s) in force\n", r.rules());
      });
}

grpc::Status Isolate(OperatorStub& stub, const v1::IsolateRequest& request, const CallOptions& call,
                     const OutputOptions& output, std::ostream& out) {
  return Call<v1::IsolateRequest, v1::IsolateResponse>(
      stub, &OperatorStub::Isolate, request, call, output, out, [&](const v1::IsolateResponse& r) {
        return absl::StrCat("isolation of ", Printable(request.instance_id()), " queued: action ",
                            r.action_id(), " (triplinectl actions to follow it)\n");
      });
}

grpc::Status Release(OperatorStub& stub, const v1::ReleaseRequest& request, const CallOptions& call,
                     const OutputOptions& output, std::ostream& out) {
  return Call<v1::ReleaseRequest, v1::ReleaseResponse>(
      stub, &OperatorStub::Release, request, call, output, out, [&](const v1::ReleaseResponse& r) {
        return absl::StrCat("release of ", Printable(r.instance_id()), " queued: action ",
                            r.action_id(), "\n");
      });
}

grpc::Status Respond(OperatorStub& stub, const v1::RespondRequest& request, const CallOptions& call,
                     const OutputOptions& output, std::ostream& out) {
  return Call<v1::RespondRequest, v1::RespondResponse>(
      stub, &OperatorStub::Respond, request, call, output, out, [&](const v1::RespondResponse& r) {
        return absl::StrCat(request.action(), " of ", Printable(request.instance_id()),
                            " queued: action ", r.action_id(), "\n");
      });
}

grpc::Status ApproveIncident(OperatorStub& stub, int64_t incident_id, const CallOptions& call,
                             const OutputOptions& output, std::ostream& out) {
  v1::ApproveIncidentRequest request;
  request.set_incident_id(incident_id);
  return Call<v1::ApproveIncidentRequest, v1::ApproveIncidentResponse>(
      stub, &OperatorStub::ApproveIncident, request, call, output, out,
      [&](const v1::ApproveIncidentResponse& r) {
        std::string ids;
        for (int64_t id : r.action_ids()) absl::StrAppend(&ids, ids.empty() ? "" : ", ", id);
        return absl::StrCat("incident ", incident_id, ": approved action(s) ", ids, "\n");
      });
}

grpc::Status TestRules(OperatorStub& stub, const v1::TestRuleRequest& request,
                       const CallOptions& call, const OutputOptions& output, std::ostream& out) {
  return Call<v1::TestRuleRequest, v1::TestRuleResponse>(
      stub, &OperatorStub::TestRule, request, call, output, out,
      [&](const v1::TestRuleResponse& r) {
        Table t({"RULE", "AGENT", "FIRST EVENT", "EVENTS", "GROUP", "EVENT IDS"});
        for (const auto& f : r.firings()) {
          std::string ids;
          for (int i = 0; i < f.event_ids_size() && i < 10; ++i) {
            absl::StrAppend(&ids, i == 0 ? "" : ",", f.event_ids(i));
          }
          if (f.event_ids_size() > 10) absl::StrAppend(&ids, ",...");
          t.AddRow({Printable(f.rule_id()), Printable(f.agent_id()),
                    FormatUtcTime(f.first_unix_ns()), absl::StrCat(f.event_ids_size()),
                    f.group().empty() ? "-" : Printable(f.group()), ids});
        }
        return absl::StrCat(
            t.Render(output.columns),
            absl::StrFormat("%d incident(s) would open; %d match(es) in %d event(s) scanned%s\n",
                            r.firings_size(), r.matches(), r.events_scanned(),
                            r.truncated() ? " (truncated: narrow --since/--until)" : ""));
      });
}

int ExitCodeFor(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
      return 0;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 3;
    default:
      return 1;
  }
}

std::string DescribeRpcError(const grpc::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                      ": ", Printable(status.error_message(), 1024));
}

}  // namespace tripline::cli
