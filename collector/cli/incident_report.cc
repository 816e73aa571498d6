#include "collector/cli/incident_report.h"

#include <algorithm>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "collector/cli/operator_view.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "platform/runtime/logging.h"

namespace tripline::cli {
namespace {

namespace v1 = tripline::v1;
using google::protobuf::Struct;
using google::protobuf::Value;

// What the report says, computed once for both forms.
struct Facts {
  int64_t first_event_ns = 0;
  int64_t opened_ns = 0;
  int64_t contained_ns = 0;
  int64_t resolved_ns = 0;
  std::vector<const v1::Action*> actions;  // by time
  std::vector<const v1::StoredEvent*> events;
  std::vector<std::string> open_questions;
};

Facts Gather(const v1::GetIncidentResponse& r, const std::optional<v1::Agent>& agent) {
  Facts f;
  const v1::Incident& inc = r.incident();
  f.opened_ns = inc.opened_unix_ns();
  for (const auto& e : r.events()) f.events.push_back(&e);
  std::sort(f.events.begin(), f.events.end(),
            [](const auto* a, const auto* b) { return EventTime(*a) < EventTime(*b); });
  if (!f.events.empty()) f.first_event_ns = EventTime(*f.events.front());
  for (const auto& a : r.actions()) f.actions.push_back(&a);
  std::stable_sort(f.actions.begin(), f.actions.end(), [](const auto* a, const auto* b) {
    return a->created_unix_ns() < b->created_unix_ns();
  });
  int failed = 0;
  for (const v1::Action* a : f.actions) {
    const bool isolated = a->kind() == "isolate" && a->status() == "done";
    const bool marked =
        a->kind() == "incident:status" && absl::EndsWith(a->detail(), "-> contained");
    if ((isolated || marked) && f.contained_ns == 0) f.contained_ns = a->updated_unix_ns();
    if (a->kind() == "incident:status" && absl::EndsWith(a->detail(), "-> resolved")) {
      f.resolved_ns = a->updated_unix_ns();
    }
    if (a->status() == "failed") {
      ++failed;
      f.open_questions.push_back(absl::StrFormat(
          "Action %d (%s on %s) failed with %s: %s. Was this step done another way?", a->id(),
          Printable(a->kind(), 128), Printable(a->target(), 128), Printable(a->error_code(), 128),
          Printable(a->error_message(), 512)));
    }
  }
  if (f.contained_ns == 0 && inc.status() != "resolved") {
    f.open_questions.push_back(
        "The instance was not contained: is it still reachable by the attacker?");
  }
  if (f.contained_ns != 0) {
    f.open_questions.push_back(
        "Isolation does not cut ICMP or flows through NLB, GWLB, NAT gateway or Transit Gateway: "
        "were any in use? (only a subnet network ACL stops those)");
    for (const v1::StoredEvent* e : f.events) {
      if (EventTime(*e) > f.contained_ns) {
        f.open_questions.push_back(
            "Events kept arriving after containment: what was still running on the instance?");
        break;
      }
    }
  }
  if (inc.assignee().empty()) f.open_questions.push_back("Nobody is assigned to the incident.");
  if (inc.status() != "resolved") {
    f.open_questions.push_back(absl::StrFormat(
        "The incident is %s, not resolved: what is the root cause?", Printable(inc.status(), 32)));
  }
  if (agent.has_value() && agent->isolation_state() == "isolated") {
    f.open_questions.push_back(
        "The instance is still isolated: release it, or replace it from a clean image?");
  }
  (void)failed;
  return f;
}

std::string Seconds(int64_t from_ns, int64_t to_ns) {
  if (from_ns == 0 || to_ns == 0) return "-";
  return absl::StrFormat("%.3f s", static_cast<double>(to_ns - from_ns) / 1e9);
}

// Data in a Markdown table cell or line: printable, and no '|' or '`' to break the layout.
std::string Md(std::string_view s, size_t max = 512) {
  std::string out = Printable(s, max);
  for (char& c : out) {
    if (c == '|' || c == '`') c = '/';
  }
  return out.empty() ? "-" : out;
}

Value Str(const std::string& s) {
  Value v;
  v.set_string_value(s);
  return v;
}
Value Num(double d) {
  Value v;
  v.set_number_value(d);
  return v;
}

}  // namespace

std::string IncidentReportMarkdown(const v1::GetIncidentResponse& r,
                                   const std::optional<v1::Agent>& agent) {
  const v1::Incident& inc = r.incident();
  const Facts f = Gather(r, agent);
  std::string out = absl::StrFormat("# Incident %d: %s\n\n", inc.id(), Md(inc.title()));
  absl::StrAppend(&out, absl::StrFormat("| | |\n|---|---|\n| status | %s |\n| severity | %s |\n"
                                        "| rule | %s |\n| assignee | %s |\n| opened | %s |\n\n",
                                        Md(inc.status()), Md(inc.severity()), Md(inc.rule_id()),
                                        Md(inc.assignee()), FormatUtcTime(inc.opened_unix_ns())));
  absl::StrAppend(&out, "## Detection\n\n",
                  absl::StrFormat("Rule `%s` matched %d event(s); the first happened at %s and "
                                  "the incident opened at %s.\n\n",
                                  Md(inc.rule_id()), f.events.size(),
                                  FormatUtcTime(f.first_event_ns), FormatUtcTime(f.opened_ns)));
  absl::StrAppend(&out, "## Affected instance\n\n",
                  absl::StrFormat("- instance: %s\n", Md(inc.agent_id())));
  if (agent.has_value()) {
    absl::StrAppend(&out, absl::StrFormat("- hostname: %s\n- agent version: %s\n- isolation: %s\n"
                                          "- last seen: %s\n",
                                          Md(agent->hostname()), Md(agent->version()),
                                          Md(agent->isolation_state()),
                                          FormatUtcTime(agent->last_seen_unix_ns())));
  }
  absl::StrAppend(&out, "\n## Evidence\n\n| time | event | what |\n|---|---|---|\n");
  for (const v1::StoredEvent* e : f.events) {
    absl::StrAppend(&out, absl::StrFormat("| %s | %d | %s |\n", FormatUtcTime(EventTime(*e)),
                                          e->id(), Md(EventSummary(e->event()), 1024)));
  }
  absl::StrAppend(
      &out, absl::StrFormat("\nThe signed batches holding these events: `triplinectl evidence "
                            "export %d -o DIR`, checked offline with `triplinectl evidence verify "
                            "DIR`.\n\n",
                            inc.id()));
  absl::StrAppend(&out,
                  "## Actions and results\n\n| time | action | target | result | by | AWS "
                  "request id | detail |\n|---|---|---|---|---|---|---|\n");
  for (const v1::Action* a : f.actions) {
    std::string result = Md(a->status());
    if (!a->error_code().empty()) {
      absl::StrAppend(&result, ": ", Md(a->error_code()), " ", Md(a->error_message()));
    }
    absl::StrAppend(
        &out, absl::StrFormat("| %s | %s | %s | %s | %s | %s | %s |\n",
                              FormatUtcTime(a->created_unix_ns()), Md(a->kind()), Md(a->target()),
                              result, Md(a->actor()), Md(a->aws_request_id()), Md(a->detail())));
  }
  absl::StrAppend(
      &out, "\n## Timings\n\n| from | to | took |\n|---|---|---|\n",
      absl::StrFormat("| first event | detection | %s |\n", Seconds(f.first_event_ns, f.opened_ns)),
      absl::StrFormat("| detection | containment | %s |\n", Seconds(f.opened_ns, f.contained_ns)),
      absl::StrFormat("| detection | resolution | %s |\n", Seconds(f.opened_ns, f.resolved_ns)));
  absl::StrAppend(&out, "\n## Open questions\n\n");
  if (f.open_questions.empty()) absl::StrAppend(&out, "None recorded.\n");
  for (const std::string& q : f.open_questions) absl::StrAppend(&out, "- ", q, "\n");
  return out;
}

std::string IncidentReportJson(const v1::GetIncidentResponse& r,
                               const std::optional<v1::Agent>& agent) {
  const v1::Incident& inc = r.incident();
  const Facts f = Gather(r, agent);
  Struct root;
  auto& fields = *root.mutable_fields();
  fields["incident_id"] = Num(static_cast<double>(inc.id()));
  fields["title"] = Str(inc.title());
  fields["status"] = Str(inc.status());
  fields["severity"] = Str(inc.severity());
  fields["rule_id"] = Str(inc.rule_id());
  fields["assignee"] = Str(inc.assignee());
  fields["instance"] = Str(inc.agent_id());
  if (agent.has_value()) {
    fields["isolation_state"] = Str(agent->isolation_state());
    fields["hostname"] = Str(Printable(agent->hostname()));
  }
  Struct timings;
  auto& t = *timings.mutable_fields();
  t["first_event"] = Str(FormatUtcTime(f.first_event_ns));
  t["opened"] = Str(FormatUtcTime(f.opened_ns));
  t["contained"] = Str(FormatUtcTime(f.contained_ns));
  t["resolved"] = Str(FormatUtcTime(f.resolved_ns));
  auto span = [](int64_t a, int64_t b) {
    Value v;
    if (a == 0 || b == 0) {
      v.set_null_value(google::protobuf::NULL_VALUE);
    } else {
      v.set_number_value(static_cast<double>(b - a) / 1e9);
    }
    return v;
  };
  t["detect_seconds"] = span(f.first_event_ns, f.opened_ns);
  t["contain_seconds"] = span(f.opened_ns, f.contained_ns);
  t["resolve_seconds"] = span(f.opened_ns, f.resolved_ns);
  *fields["timings"].mutable_struct_value() = timings;
  auto* events = fields["events"].mutable_list_value();
  for (const v1::StoredEvent* e : f.events) {
    Struct ev;
    (*ev.mutable_fields())["id"] = Num(static_cast<double>(e->id()));
    (*ev.mutable_fields())["time"] = Str(FormatUtcTime(EventTime(*e)));
    (*ev.mutable_fields())["what"] = Str(EventSummary(e->event()));
    *events->add_values()->mutable_struct_value() = ev;
  }
  auto* actions = fields["actions"].mutable_list_value();
  for (const v1::Action* a : f.actions) {
    Struct ac;
    auto& m = *ac.mutable_fields();
    m["id"] = Num(static_cast<double>(a->id()));
    m["time"] = Str(FormatUtcTime(a->created_unix_ns()));
    m["kind"] = Str(a->kind());
    m["target"] = Str(a->target());
    m["status"] = Str(a->status());
    m["actor"] = Str(a->actor());
    m["aws_request_id"] = Str(a->aws_request_id());
    m["error_code"] = Str(a->error_code());
    m["error_message"] = Str(a->error_message());
    m["detail"] = Str(a->detail());
    *actions->add_values()->mutable_struct_value() = ac;
  }
  auto* questions = fields["open_questions"].mutable_list_value();
  for (const std::string& q : f.open_questions) *questions->add_values() = Str(q);

  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(root, &out, options).ok()) {
    // Only a string that is not UTF-8 can fail here: fall back to escaped text everywhere.
    return "{\"error\": \"the report holds text that is not UTF-8; use the Markdown form\"}\n";
  }
  return out;
}

}  // namespace tripline::cli
