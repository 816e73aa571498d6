#include "collector/cli/operator_view.h"

#include <algorithm>
#include <tuple>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "platform/runtime/clock.h"
#include "platform/runtime/logging.h"

namespace tripline::cli {
namespace {

using tripline::v1::Action;
using tripline::v1::AgentEvent;
using tripline::v1::Event;
using tripline::v1::FileEvent;
using tripline::v1::FileState;
using tripline::v1::StoredEvent;

constexpr size_t kMaxPath = 4096;
constexpr size_t kMaxLine = 1024;
constexpr size_t kMaxText = 512;

// Strings from the collector: printable, capped, or "-" when empty so columns stay aligned.
std::string Text(std::string_view s, size_t max = kMaxText) {
  return s.empty() ? "-" : Printable(s, max);
}

std::string ShortSha(const FileState* state) {
  if (state == nullptr || state->sha256().empty()) return "none";
  return absl::BytesToHexString(state->sha256().substr(0, 4));
}

std::string FileSummary(const FileEvent& f) {
  std::string change = FileEvent::Change_IsValid(f.change())
                           ? FileEvent::Change_Name(f.change())
                           : absl::StrCat("change(", static_cast<int>(f.change()), ")");
  std::string out = change + " ";
  if (f.change() == FileEvent::RENAMED && !f.old_path().empty()) {
    absl::StrAppend(&out, Printable(f.old_path(), kMaxPath), " -> ");
  }
  absl::StrAppend(&out, Printable(f.path(), kMaxPath));
  const FileState* before = f.has_before() ? &f.before() : nullptr;
  const FileState* after = f.has_after() ? &f.after() : nullptr;
  if ((before != nullptr && !before->sha256().empty()) ||
      (after != nullptr && !after->sha256().empty())) {
    absl::StrAppend(&out, " sha256 ", ShortSha(before), "->", ShortSha(after));
  }
  if (before != nullptr && after != nullptr) {
    if ((before->mode() & 07777) != (after->mode() & 07777)) {
      absl::StrAppend(
          &out, absl::StrFormat(" mode %04o->%04o", before->mode() & 07777, after->mode() & 07777));
    }
    if (before->uid() != after->uid() || before->gid() != after->gid()) {
      absl::StrAppend(&out, absl::StrFormat(" owner %u:%u->%u:%u", before->uid(), before->gid(),
                                            after->uid(), after->gid()));
    }
  }
  if (!f.note().empty()) absl::StrAppend(&out, " (", Printable(f.note(), kMaxText), ")");
  return out;
}

std::string AgentSummary(const AgentEvent& a) {
  std::string out = AgentEvent::Kind_IsValid(a.kind())
                        ? AgentEvent::Kind_Name(a.kind())
                        : absl::StrCat("kind(", static_cast<int>(a.kind()), ")");
  if (!a.message().empty()) absl::StrAppend(&out, " ", Printable(a.message(), kMaxText));
  if (!a.path().empty()) absl::StrAppend(&out, " ", Printable(a.path(), kMaxPath));
  if (a.kind() == AgentEvent::HEARTBEAT) {
    absl::StrAppend(&out, " spool ", a.spool_batches(), " batch(es) ",
                    FormatBytes(a.spool_bytes()));
  }
  return out;
}

std::string ActionDetail(const Action& a) {
  std::string out = absl::StrCat(Text(a.kind()), " ", Text(a.target()), " ", Text(a.status()));
  if (!a.detail().empty()) absl::StrAppend(&out, " ", Printable(a.detail(), kMaxText));
  if (!a.actor().empty() && a.actor() != "collector") {
    absl::StrAppend(&out, " by ", Printable(a.actor(), 128));
  }
  if (!a.aws_request_id().empty()) {
    absl::StrAppend(&out, " request-id=", Printable(a.aws_request_id(), 128));
  }
  if (!a.error_code().empty() || !a.error_message().empty()) {
    absl::StrAppend(&out, " error=", Text(a.error_code(), 128), ": ",
                    Printable(a.error_message(), kMaxText));
  }
  return out;
}

}  // namespace

std::string FormatUtcTime(int64_t unix_ns) {
  if (unix_ns == 0) return "-";
  return Rfc3339Utc(unix_ns);
}

std::string FormatAgo(int64_t then_unix_ns, int64_t now_unix_ns) {
  if (then_unix_ns == 0) return "never";
  const bool future = then_unix_ns > now_unix_ns;
  // Difference in seconds, computed without overflowing for any pair of int64 nanoseconds.
  const int64_t seconds = future ? then_unix_ns / 1'000'000'000 - now_unix_ns / 1'000'000'000
                                 : now_unix_ns / 1'000'000'000 - then_unix_ns / 1'000'000'000;
  std::string amount;
  if (seconds < 60) {
    amount = absl::StrCat(seconds, "s");
  } else if (seconds < 60 * 60) {
    amount = absl::StrCat(seconds / 60, "m");
  } else if (seconds < 24 * 60 * 60) {
    amount = absl::StrCat(seconds / 3600, "h");
  } else {
    amount = absl::StrCat(seconds / 86400, "d");
  }
  return future ? "in " + amount : amount + " ago";
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(units)) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, units[u]);
}

std::string SpoolBacklog(const tripline::v1::Agent& agent) {
  if (agent.heartbeat_unix_ns() == 0) return "-";
  if (agent.spool_backlog_batches() == 0) return "0";
  return absl::StrCat(agent.spool_backlog_batches(),
                      agent.spool_backlog_batches() == 1 ? " batch, " : " batches, ",
                      FormatBytes(agent.spool_backlog_bytes()));
}

std::string EventKind(const Event& event) {
  switch (event.body_case()) {
    case Event::kFile:
      return "file";
    case Event::kLog:
      return "log";
    case Event::kAgent:
      return "agent";
    case Event::BODY_NOT_SET:
      break;
  }
  return "?";
}

std::string EventSummary(const Event& event) {
  switch (event.body_case()) {
    case Event::kFile:
      return FileSummary(event.file());
    case Event::kLog: {
      const auto& l = event.log();
      std::string out = absl::StrCat(Text(l.source()), " ", Printable(l.path(), kMaxPath), ":",
                                     l.offset(), " ", Printable(l.line(), kMaxLine));
      if (l.truncated()) out += " [truncated]";
      return out;
    }
    case Event::kAgent:
      return AgentSummary(event.agent());
    case Event::BODY_NOT_SET:
      break;
  }
  return "(empty event)";
}

int64_t EventTime(const StoredEvent& event) {
  return event.event().time_unix_ns() != 0 ? event.event().time_unix_ns()
                                           : event.received_unix_ns();
}

std::string EventLine(const tripline::v1::StoredEvent& e) {
  return absl::StrCat(e.id(), "  ", FormatUtcTime(EventTime(e)), "  ", Text(e.agent_id()), "  ",
                      EventKind(e.event()), "  ", EventSummary(e.event()));
}

Table AgentsTable(const tripline::v1::ListAgentsResponse& response, int64_t now_unix_ns) {
  Table t({"ID", "HOSTNAME", "VERSION", "LAST SEEN", "DURABLE SEQ", "SPOOL BACKLOG", "ISOLATION"});
  for (const auto& a : response.agents()) {
    t.AddRow({Text(a.agent_id()), Text(a.hostname()), Text(a.version()),
              FormatAgo(a.last_seen_unix_ns(), now_unix_ns), absl::StrCat(a.durable_seq()),
              SpoolBacklog(a), Text(a.isolation_state())});
  }
  return t;
}

Table EventsTable(const tripline::v1::QueryEventsResponse& response) {
  Table t({"ID", "TIME", "AGENT", "KIND", "SUMMARY"});
  for (const auto& e : response.events()) {
    t.AddRow({absl::StrCat(e.id()), FormatUtcTime(EventTime(e)), Text(e.agent_id()),
              EventKind(e.event()), EventSummary(e.event())});
  }
  return t;
}

Table CloudEventsTable(const tripline::v1::QueryCloudEventsResponse& response) {
  Table t({"ID", "TIME", "REGION", "EVENT", "PRINCIPAL", "SOURCE IP", "RESOURCES"});
  for (const auto& e : response.events()) {
    t.AddRow({absl::StrCat(e.id()), FormatUtcTime(e.time_unix_ns()), Text(e.region()),
              Text(e.event_name()), Text(e.principal_arn()), Text(e.source_ip()),
              Text(absl::StrJoin(e.resources(), ", "))});
  }
  return t;
}

Table IncidentsTable(const tripline::v1::ListIncidentsResponse& response) {
  Table t({"ID", "OPENED", "STATUS", "SEVERITY", "AGENT", "RULE", "ASSIGNEE", "TITLE"});
  for (const auto& i : response.incidents()) {
    t.AddRow({absl::StrCat(i.id()), FormatUtcTime(i.opened_unix_ns()), Text(i.status()),
              Text(i.severity()), Text(i.agent_id()), Text(i.rule_id()), Text(i.assignee()),
              Text(i.title())});
  }
  return t;
}

Table ActionsTable(const tripline::v1::ListActionsResponse& response) {
  Table t(
      {"ID", "TIME", "INCIDENT", "KIND", "TARGET", "STATUS", "DETAIL", "AWS REQUEST ID", "ERROR"});
  for (const auto& a : response.actions()) {
    t.AddRow({absl::StrCat(a.id()), FormatUtcTime(a.created_unix_ns()),
              a.incident_id() == 0 ? "-" : absl::StrCat(a.incident_id()), Text(a.kind()),
              Text(a.target()), Text(a.status()), Text(a.detail()), Text(a.aws_request_id(), 128),
              Text(a.error_code(), 128)});
  }
  return t;
}

std::string IncidentReport(const tripline::v1::GetIncidentResponse& response, int max_columns) {
  const auto& i = response.incident();
  Table fields({"FIELD", "VALUE"});
  fields.AddRow({"incident", absl::StrCat(i.id())});
  fields.AddRow({"title", Text(i.title())});
  fields.AddRow({"status", Text(i.status())});
  fields.AddRow({"severity", Text(i.severity())});
  fields.AddRow({"agent", Text(i.agent_id())});
  fields.AddRow({"rule", Text(i.rule_id())});
  fields.AddRow({"assignee", Text(i.assignee())});
  fields.AddRow({"opened", FormatUtcTime(i.opened_unix_ns())});
  fields.AddRow({"updated", FormatUtcTime(i.updated_unix_ns())});
  // The summary grows a line per thing that happened ("contained: ..."): one row each.
  bool first_line = true;
  for (absl::string_view line : absl::StrSplit(i.summary(), '\n', absl::SkipEmpty())) {
    fields.AddRow({first_line ? "summary" : "", Printable(std::string(line), kMaxText)});
    first_line = false;
  }

  struct Entry {
    int64_t time;
    int order;  // events before actions at the same time, then by id
    int64_t id;
    std::vector<std::string> cells;
  };
  std::vector<Entry> entries;
  for (const auto& e : response.events()) {
    entries.push_back({EventTime(e),
                       0,
                       e.id(),
                       {FormatUtcTime(EventTime(e)), "event", absl::StrCat(e.id()),
                        absl::StrCat(EventKind(e.event()), " ", Text(e.agent_id()), " ",
                                     EventSummary(e.event()))}});
  }
  for (const auto& a : response.actions()) {
    entries.push_back(
        {a.created_unix_ns(),
         1,
         a.id(),
         {FormatUtcTime(a.created_unix_ns()), "action", absl::StrCat(a.id()), ActionDetail(a)}});
  }
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.time, a.order, a.id) < std::tie(b.time, b.order, b.id);
  });
  Table timeline({"TIME", "WHAT", "ID", "DETAIL"});
  for (auto& e : entries) timeline.AddRow(std::move(e.cells));

  return absl::StrCat(fields.Render(max_columns), "\nTimeline (", entries.size(), " entries)\n",
                      timeline.Render(max_columns));
}

}  // namespace tripline::cli
