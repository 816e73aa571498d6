// Turns rule matches and integrity failures into incidents, inside the store writer's
// transaction: one incident per (rule, agent) while it is not resolved, so further matches are
// linked to the incident already open instead of opening another. A new incident of a rule that
// responds with isolate, when response mode is auto, gets a pending "isolate" action in the same
// transaction, which the response worker carries out after the commit. No threads, no state.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "collector/rules/log_thresholds.h"
#include "collector/rules/rule_set.h"
#include "collector/store/collector_store.h"
#include "tripline/v1/event.pb.h"

namespace tripline::collector {

// The rule id of incidents about a broken chain, a bad signature or a garbled batch.
inline constexpr char kIntegrityRuleId[] = "integrity";
inline constexpr char kIsolateActionKind[] = "isolate";
inline constexpr char kStopActionKind[] = "stop";

struct RecordOutcome {
  int64_t incident_id = 0;
  bool opened = false;           // a new incident (not linked to an open one)
  bool isolation_queued = false;  // a pending isolate action was created
};

// Links stored event `event_id` (which `rule` matched) to the open incident of (rule, agent) or
// opens one. `auto_respond`: response mode is auto.
absl::StatusOr<RecordOutcome> RecordRuleMatch(CollectorStore::Writer& writer, const Rule& rule,
                                              const std::string& agent_id, int64_t event_id,
                                              const tripline::v1::Event& event, bool auto_respond,
                                              int64_t now_ns);

// Records what a log rule's match led to (see LogThresholds): kOpen opens an incident holding
// the window's events, its summary naming the group, the count and the match's fields (parsed
// and captured); kLink links `event_id` to the group's incident. Isolation as RecordRuleMatch.
absl::StatusOr<RecordOutcome> RecordLogRuleOutcome(CollectorStore::Writer& writer, const Rule& rule,
                                                   const std::string& agent_id,
                                                   const LogRuleOutcome& outcome, int64_t event_id,
                                                   const tripline::v1::Event& event,
                                                   const LogMatchFields& fields, bool auto_respond,
                                                   int64_t now_ns);

// What a cloud rule's match of stored cloud event `cloud_event_id` led to (LogThresholds, with
// `incident_agent` "cloudtrail:<region>" as the agent): kOpen opens an incident holding the
// window's cloud events, kLink links the event to the group's incident. Either way, when the rule
// responds with stop or isolate and the event launched instances (RunInstances), one pending
// action per launched instance is queued in the rule's response_mode, so a launch is never left
// running because an earlier one already opened the incident.
absl::StatusOr<RecordOutcome> RecordCloudRuleOutcome(CollectorStore::Writer& writer,
                                                     const Rule& rule,
                                                     const std::string& incident_agent,
                                                     const LogRuleOutcome& outcome,
                                                     int64_t cloud_event_id, const CloudEvent& event,
                                                     bool auto_respond, int64_t now_ns);

// Records an integrity failure of `agent_id`'s stream (severity critical): opens the agent's
// integrity incident, or appends `reason` to the one still open.
absl::StatusOr<RecordOutcome> RecordIntegrityFailure(CollectorStore::Writer& writer,
                                                     const std::string& agent_id,
                                                     const std::string& reason, int64_t now_ns);

// Records that absence rule `rule` found `agent_id` silent (nothing since `last_seen_ns`; 0: never
// heard after enrollment): appends to the (rule, agent) incident still open, or opens one with the
// rule's response. Not inside the store writer: the AbsenceMonitor calls it in its own
// transaction.
absl::StatusOr<RecordOutcome> RecordAbsence(CollectorStore::Writer& writer, const Rule& rule,
                                            const std::string& agent_id, int64_t last_seen_ns,
                                            bool auto_respond, int64_t now_ns);

// A one-line, printable description of a file event: "MODIFIED /etc/passwd".
std::string DescribeEvent(const tripline::v1::Event& event);

}  // namespace tripline::collector
