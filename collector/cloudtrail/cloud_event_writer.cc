#include "collector/cloudtrail/cloud_event_writer.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "collector/incidents/incident_recorder.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {

std::string CloudIncidentAgent(const std::string& region) { return "cloudtrail:" + region; }

CloudEventWriter::CloudEventWriter(CollectorStore* store, RulesSource rules, bool auto_respond,
                                   const Clock& clock, std::function<void()> wake_response)
    : store_(store),
      rules_(std::move(rules)),
      auto_respond_(auto_respond),
      clock_(clock),
      wake_response_(std::move(wake_response)) {}

absl::StatusOr<std::optional<int64_t>> CloudEventWriter::Cursor(const std::string& region) {
  return store_->GetCloudCursor(region);
}

absl::StatusOr<int> CloudEventWriter::Store(const std::string& region,
                                            const std::vector<CloudEvent>& events,
                                            const std::vector<MalformedRecord>& malformed,
                                            std::optional<int64_t> cursor) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::shared_ptr<const RuleSet> rules = rules_();
  const int64_t now = clock_.NowUnixNanos();
  int fresh = 0;
  bool queued = false;
  absl::Status st = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(CollectorStore::Writer w, store_->BeginWrite());
    for (const MalformedRecord& m : malformed) {
      ASSIGN_OR_RETURN(bool first, w.InsertCloudEventError(region, m.event_id, m.reason, m.raw, now));
      if (first) {
        spdlog::error("cloudtrail: region={} malformed record stored event_id={} reason=\"{}\"",
                      region, Printable(m.event_id, 128), Printable(m.reason, 256));
      }
    }
    for (const CloudEvent& e : events) {
      CloudEventRecord r;
      r.region = region;
      r.event_id = e.event_id;
      r.event_name = e.event_name;
      r.event_source = e.event_source;
      r.time_ns = e.time_ns;
      r.principal_arn = e.principal_arn;
      r.access_key_id = e.access_key_id;
      r.source_ip = e.source_ip;
      r.user_agent = e.user_agent;
      r.resources = e.resources;
      r.raw = e.raw;
      r.received_ns = now;
      ASSIGN_OR_RETURN(int64_t id, w.InsertCloudEvent(r));
      if (id == 0) continue;  // stored by an earlier window
      ++fresh;
      if (rules == nullptr) continue;
      const std::string agent = CloudIncidentAgent(e.region);
      for (const auto& [rule, fields] : rules->MatchCloud(e)) {
        const LogRuleOutcome outcome = thresholds_.Observe(*rule, agent, id, e.time_ns, fields);
        ASSIGN_OR_RETURN(RecordOutcome rec, RecordCloudRuleOutcome(w, *rule, agent, outcome, id, e,
                                                                   auto_respond_, now));
        queued = queued || rec.isolation_queued;
        if (rec.opened) {
          spdlog::warn("cloudtrail: incident={} rule={} event={} region={} principal={}",
                       rec.incident_id, rule->id, Printable(e.event_name, 128),
                       Printable(e.region, 64), Printable(e.principal_arn, 256));
          thresholds_.Opened(*rule, agent, outcome.group, rec.incident_id, e.time_ns);
        }
      }
    }
    if (cursor) RETURN_IF_ERROR(w.SetCloudCursor(region, *cursor, now));
    return w.Commit();
  }();
  if (!st.ok()) {
    // What the thresholds counted and opened did not happen: start the windows afresh.
    thresholds_.Clear();
    return absl::UnavailableError(
        absl::StrFormat("cloudtrail: region %s: storing a page failed: %s", region, st.message()));
  }
  if (queued && wake_response_) wake_response_();
  return fresh;
}

}  // namespace tripline::collector
