// How triplinectl shows the Operator service's answers to a person: tables and an incident report.
// Pure functions of the response (and of "now" for relative times); no I/O, thread-compatible.
//
// Every string that came from the collector (and so, often, from an agent or an attacker: paths,
// log lines, titles, hostnames) goes through tripline::Printable(), so control bytes never reach
// the terminal and odd bytes read as \xNN.
#pragma once

#include <cstdint>
#include <string>

#include "collector/cli/table.h"
#include "tripline/v1/operator.pb.h"

namespace tripline::cli {

// "2024-05-01T12:34:56Z" (UTC, ISO-8601); "-" for 0 (never happened).
std::string FormatUtcTime(int64_t unix_ns);

// How long before `now_unix_ns` `then_unix_ns` was: "12s ago", "5m ago", "3h ago", "2d ago";
// "in 4s" for a time in the future (clock skew); "never" for 0.
std::string FormatAgo(int64_t then_unix_ns, int64_t now_unix_ns);

// "512 B", "3.4 KiB", "1.2 MiB", "7.0 GiB".
std::string FormatBytes(uint64_t bytes);

// An agent's spool backlog from its last heartbeat: "0", "12 batches, 1.5 MiB", or "-" before
// the first heartbeat.
std::string SpoolBacklog(const tripline::v1::Agent& agent);

// "file", "log", "agent", or "?" for an event without a body.
std::string EventKind(const tripline::v1::Event& event);

// One line saying what happened. File events: change, path (old -> new for renames), the first
// 8 hex digits of the SHA-256 before -> after ("none" where there was none), mode and owner
// changes, the agent's note. Log events: source, path:offset, the line. Agent events: kind,
// message, path.
std::string EventSummary(const tripline::v1::Event& event);

// The time an event is shown at: the agent's time, or when the collector received it when the
// agent sent none.
int64_t EventTime(const tripline::v1::StoredEvent& event);

// One event as a line for a stream: "ID TIME AGENT KIND SUMMARY", printable.
std::string EventLine(const tripline::v1::StoredEvent& event);

Table AgentsTable(const tripline::v1::ListAgentsResponse& response, int64_t now_unix_ns);
Table EventsTable(const tripline::v1::QueryEventsResponse& response);
Table CloudEventsTable(const tripline::v1::QueryCloudEventsResponse& response);
Table IncidentsTable(const tripline::v1::ListIncidentsResponse& response);
Table ActionsTable(const tripline::v1::ListActionsResponse& response);

// The incident's fields, then its timeline: events and actions merged and sorted by time (events
// first at equal times), cut to `max_columns`.
std::string IncidentReport(const tripline::v1::GetIncidentResponse& response, int max_columns);

}  // namespace tripline::cli
