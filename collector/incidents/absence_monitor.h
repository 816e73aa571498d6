// Absence rules (`kind: agent`, `absence: {silent_for: N}`): once a second, compares every enrolled
// agent's last-seen time (the last batch committed from it; agents send a HEARTBEAT at least
// every minute) with the rules that cover it. An agent silent for longer than a rule allows opens
// an incident for (rule, agent) with the rule's response, or a line on the one still open; once
// it is heard again, its incident says so. Each silence is an AbsenceEpisode row, so a restarted
// collector neither reopens nor forgets one.
//
// No false alarm from the collector's own downtime: an agent's silence counts from the later of
// its last batch and the monitor's start. Agents being isolated, or isolated, are expected to be
// silent and are skipped.
//
// Threads: Start() runs CheckOnce() on its own thread every `tick`; Stop() joins it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "collector/rules/rule_set.h"
#include "collector/store/collector_store.h"
#include "platform/runtime/clock.h"

namespace tripline::collector {

class AbsenceMonitor {
 public:
  struct Options {
    absl::Duration tick = absl::Seconds(1);
    bool auto_respond = true;  // response mode is not off
    // The current rules (they change on reload).
    std::function<std::shared_ptr<const RuleSet>()> rules;
    // Called after the commit, for each incident an absence opened (e.g. to notify people).
    std::function<void(const IncidentRecord&)> on_opened;
    // Called after the commit when a response action was queued.
    std::function<void()> on_actions_queued;
  };

  // `store` and `clock` outlive the monitor.
  AbsenceMonitor(CollectorStore* store, Options options, const Clock& clock);
  ~AbsenceMonitor();  // Stop()
  AbsenceMonitor(const AbsenceMonitor&) = delete;
  AbsenceMonitor& operator=(const AbsenceMonitor&) = delete;

  void Start();
  void Stop();

  // One pass over agents, rules and open episodes.
  absl::Status CheckOnce();

 private:
  void Run();

  CollectorStore* const store_;
  const Options options_;
  const Clock& clock_;
  const int64_t started_ns_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tripline::collector
