#include "collector/incidents/incident_recorder.h"

#include "absl/strings/str_format.h"
#include "platform/runtime/clock.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {

using tripline::v1::Event;
using tripline::v1::FileEvent;

std::string DescribeEvent(const Event& event) {
  if (event.has_file()) {
    const FileEvent& f = event.file();
    std::string out =
        absl::StrFormat("%s %s", FileEvent::Change_Name(f.change()), Printable(f.path()));
    if (f.change() == FileEvent::RENAMED && !f.old_path().empty()) {
      out += absl::StrFormat(" (from %s)", Printable(f.old_path()));
    }
    return out;
  }
  if (event.has_log()) return absl::StrFormat("log %s", Printable(event.log().path()));
  if (event.has_agent()) return "agent event";
  return "event";
}

namespace {

// A new open incident of `rule` about `agent_id`.
IncidentRecord NewIncident(const Rule& rule, const std::string& agent_id, std::string summary,
                           int64_t now_ns) {
  IncidentRecord incident;
  incident.agent_id = agent_id;
  incident.rule_id = rule.id;
  incident.title = rule.title;
  incident.severity = rule.severity;
  incident.status = "open";
  incident.opened_ns = now_ns;
  incident.updated_ns = now_ns;
  incident.summary = std::move(summary);
  return incident;
}

// A pending action `kind` on `target` that `rule` asked for, on incident `out->incident_id`, in
// the rule's response mode; the response worker carries it out after the commit.
absl::Status QueueRuleAction(CollectorStore::Writer& writer, const Rule& rule,
                             const std::string& agent_id, const std::string& kind,
                             const std::string& target, std::string detail, int64_t now_ns,
                             RecordOutcome* out) {
  ActionRecord action;
  action.incident_id = out->incident_id;
  action.agent_id = agent_id;
  action.kind = kind;
  action.target = target;
  action.status = "pending";
  action.actor = "collector";
  action.mode = rule.response_mode;
  action.detail = std::move(detail);
  action.created_ns = now_ns;
  action.updated_ns = now_ns;
  RETURN_IF_ERROR(writer.InsertAction(action).status());
  out->isolation_queued = true;
  return absl::OkStatus();
}

// The response a rule asks for once it opened `out->incident_id`: an isolate action in the rule's
// response_mode (empty: the worker's default), or a line on the incident when responses are off.
absl::Status QueueRuleResponse(CollectorStore::Writer& writer, const Rule& rule,
                               const std::string& agent_id, bool auto_respond, int64_t now_ns,
                               RecordOutcome* out) {
  if (!rule.Isolates()) return absl::OkStatus();
  if (!auto_respond) {
    return writer.AppendIncidentSummary(out->incident_id,
                                        "isolation not started: response mode is off", now_ns);
  }
  return QueueRuleAction(writer, rule, agent_id, kIsolateActionKind, agent_id,
                         absl::StrFormat("rule %s responds with isolate", rule.id), now_ns, out);
}

}  // namespace

absl::StatusOr<RecordOutcome> RecordRuleMatch(CollectorStore::Writer& writer, const Rule& rule,
                                              const std::string& agent_id, int64_t event_id,
                                              const Event& event, bool auto_respond,
                                              int64_t now_ns) {
  RecordOutcome out;
  ASSIGN_OR_RETURN(std::optional<int64_t> open, writer.FindOpenIncident(rule.id, agent_id));
  if (open) {
    out.incident_id = *open;
    RETURN_IF_ERROR(writer.LinkIncidentEvent(*open, event_id, now_ns));
    return out;
  }
  ASSIGN_OR_RETURN(out.incident_id,
                   writer.InsertIncident(NewIncident(
                       rule, agent_id,
                       absl::StrFormat("rule %s matched event %d: %s", rule.id, event_id,
                                       DescribeEvent(event)),
                       now_ns)));
  out.opened = true;
  RETURN_IF_ERROR(writer.LinkIncidentEvent(out.incident_id, event_id, now_ns));
  RETURN_IF_ERROR(QueueRuleResponse(writer, rule, agent_id, auto_respond, now_ns, &out));
  return out;
}

absl::StatusOr<RecordOutcome> RecordLogRuleOutcome(CollectorStore::Writer& writer, const Rule& rule,
                                                   const std::string& agent_id,
                                                   const LogRuleOutcome& outcome, int64_t event_id,
                                                   const Event& event, const LogMatchFields& fields,
                                                   bool auto_respond, int64_t now_ns) {
  RecordOutcome out;
  if (outcome.kind == LogRuleOutcome::Kind::kLink) {
    out.incident_id = outcome.incident_id;
    RETURN_IF_ERROR(writer.LinkIncidentEvent(outcome.incident_id, event_id, now_ns));
    return out;
  }
  if (outcome.kind != LogRuleOutcome::Kind::kOpen) return out;
  std::string summary = absl::StrFormat("rule %s matched", rule.id);
  if (rule.threshold) {
    summary += absl::StrFormat(" %d times within %ds", outcome.count,
                               rule.threshold->within_ns / 1000000000);
  }
  if (!outcome.group.empty()) summary += absl::StrFormat(" (%s)", outcome.group);
  summary += absl::StrFormat("; last event %d: %s", event_id, DescribeEvent(event));
  summary += "; fields:";
  for (const auto& [k, v] : fields) {
    summary += absl::StrFormat(" %s=\"%s\"", k, Printable(v, 256));
  }
  summary += absl::StrFormat("; line: \"%s\"", Printable(event.log().line(), 512));
  ASSIGN_OR_RETURN(out.incident_id,
                   writer.InsertIncident(NewIncident(rule, agent_id, summary, now_ns)));
  out.opened = true;
  for (int64_t id : outcome.event_ids) {
    RETURN_IF_ERROR(writer.LinkIncidentEvent(out.incident_id, id, now_ns));
  }
  RETURN_IF_ERROR(QueueRuleResponse(writer, rule, agent_id, auto_respond, now_ns, &out));
  return out;
}

absl::StatusOr<RecordOutcome> RecordAbsence(CollectorStore::Writer& writer, const Rule& rule,
                                            const std::string& agent_id, int64_t last_seen_ns,
                                            bool auto_respond, int64_t now_ns) {
  const std::string since = last_seen_ns > 0 ? absl::StrFormat("since %s", Rfc3339Utc(last_seen_ns))
                                             : std::string("since its enrollment");
  const std::string what = absl::StrFormat(
      "rule %s: agent %s sent nothing, not even a heartbeat, for more than %ds (%s)", rule.id,
      Printable(agent_id), rule.absence_ns / 1000000000, since);
  RecordOutcome out;
  ASSIGN_OR_RETURN(std::optional<int64_t> open, writer.FindOpenIncident(rule.id, agent_id));
  if (open) {
    out.incident_id = *open;
    RETURN_IF_ERROR(writer.AppendIncidentSummary(*open, "silent again: " + what, now_ns));
    return out;
  }
  ASSIGN_OR_RETURN(out.incident_id,
                   writer.InsertIncident(NewIncident(rule, agent_id, what, now_ns)));
  out.opened = true;
  RETURN_IF_ERROR(QueueRuleResponse(writer, rule, agent_id, auto_respond, now_ns, &out));
  return out;
}

namespace {

// Queues the stop or isolate actions of a cloud rule for the instances `event` launched.
absl::Status QueueCloudResponse(CollectorStore::Writer& writer, const Rule& rule,
                                const std::string& incident_agent, int64_t cloud_event_id,
                                const CloudEvent& event, bool auto_respond, int64_t now_ns,
                                RecordOutcome* out) {
  if (!rule.Stops() && !rule.Isolates()) return absl::OkStatus();
  const char* kind = rule.Stops() ? kStopActionKind : kIsolateActionKind;
  if (event.instance_ids.empty()) {
    return writer.AppendIncidentSummary(
        out->incident_id,
        absl::StrFormat("cloud event %d (%s) launched no instance: nothing to %s", cloud_event_id,
                        event.event_name, kind),
        now_ns);
  }
  if (!auto_respond) {
    return writer.AppendIncidentSummary(
        out->incident_id,
        absl::StrFormat("%s of %s not started: response mode is off", kind,
                        absl::StrJoin(event.instance_ids, ", ")),
        now_ns);
  }
  for (const std::string& id : event.instance_ids) {
    RETURN_IF_ERROR(QueueRuleAction(
        writer, rule, incident_agent, kind, id,
        absl::StrFormat("rule %s responds with %s: %s by %s launched %s", rule.id, kind,
                        event.event_name, Printable(event.principal_arn, 256), id),
        now_ns, out));
  }
  return absl::OkStatus();
}

std::string DescribeCloudEvent(int64_t id, const CloudEvent& e) {
  std::string out = absl::StrFormat("cloud event %d: %s in %s by %s from %s at %s", id,
                                    Printable(e.event_name, 128), Printable(e.region, 64),
                                    Printable(e.principal_arn, 256), Printable(e.source_ip, 64),
                                    absl::FormatTime(absl::RFC3339_sec, absl::FromUnixNanos(e.time_ns),
                                                     absl::UTCTimeZone()));
  if (!e.access_key_id.empty()) out += absl::StrFormat(" (key %s)", Printable(e.access_key_id, 64));
  if (!e.resources.empty()) {
    std::vector<std::string> shown;
    for (size_t i = 0; i < e.resources.size() && i < 20; ++i) {
      shown.push_back(Printable(e.resources[i], 128));
    }
    out += absl::StrFormat("; resources: %s%s", absl::StrJoin(shown, ", "),
                           e.resources.size() > 20 ? ", ..." : "");
  }
  out += absl::StrFormat("; event id %s", Printable(e.event_id, 64));
  return out;
}

}  // namespace

absl::StatusOr<RecordOutcome> RecordCloudRuleOutcome(CollectorStore::Writer& writer,
                                                     const Rule& rule,
                                                     const std::string& incident_agent,
                                                     const LogRuleOutcome& outcome,
                                                     int64_t cloud_event_id, const CloudEvent& event,
                                                     bool auto_respond, int64_t now_ns) {
  RecordOutcome out;
  if (outcome.kind == LogRuleOutcome::Kind::kLink) {
    out.incident_id = outcome.incident_id;
    RETURN_IF_ERROR(writer.LinkIncidentCloudEvent(outcome.incident_id, cloud_event_id, now_ns));
    RETURN_IF_ERROR(writer.AppendIncidentSummary(
        out.incident_id, DescribeCloudEvent(cloud_event_id, event), now_ns));
    RETURN_IF_ERROR(QueueCloudResponse(writer, rule, incident_agent, cloud_event_id, event,
                                       auto_respond, now_ns, &out));
    return out;
  }
  if (outcome.kind != LogRuleOutcome::Kind::kOpen) return out;
  std::string summary = absl::StrFormat("rule %s matched", rule.id);
  if (rule.threshold) {
    summary += absl::StrFormat(" %d times within %ds", outcome.count,
                               rule.threshold->within_ns / 1000000000);
  }
  if (!outcome.group.empty()) summary += absl::StrFormat(" (%s)", outcome.group);
  summary += absl::StrFormat("; last %s", DescribeCloudEvent(cloud_event_id, event));
  ASSIGN_OR_RETURN(out.incident_id,
                   writer.InsertIncident(NewIncident(rule, incident_agent, summary, now_ns)));
  out.opened = true;
  for (int64_t id : outcome.event_ids) {
    RETURN_IF_ERROR(writer.LinkIncidentCloudEvent(out.incident_id, id, now_ns));
  }
  RETURN_IF_ERROR(QueueCloudResponse(writer, rule, incident_agent, cloud_event_id, event,
                                     auto_respond, now_ns, &out));
  return out;
}

absl::StatusOr<RecordOutcome> RecordIntegrityFailure(CollectorStore::Writer& writer,
                                                     const std::string& agent_id,
                                                     const std::string& reason, int64_t now_ns) {
  RecordOutcome out;
  ASSIGN_OR_RETURN(std::optional<int64_t> open,
                   writer.FindOpenIncident(kIntegrityRuleId, agent_id));
  if (open) {
    out.incident_id = *open;
    RETURN_IF_ERROR(writer.AppendIncidentSummary(*open, reason, now_ns));
    return out;
  }
  IncidentRecord incident;
  incident.agent_id = agent_id;
  incident.rule_id = kIntegrityRuleId;
  incident.title = "Batch integrity check failed";
  incident.severity = "critical";
  incident.status = "open";
  incident.opened_ns = now_ns;
  incident.updated_ns = now_ns;
  incident.summary = reason;
  ASSIGN_OR_RETURN(out.incident_id, writer.InsertIncident(incident));
  out.opened = true;
  return out;
}

}  // namespace tripline::collector
