// The CloudEventSink the pollers share: stores a page's new CloudEvents and malformed records,
// runs the cloud rules over the new events (thresholds and suppression as for log rules, per
// "cloudtrail:<region>"), opens or links incidents and queues their stop / isolate actions, and
// moves the region's cursor, all in one store transaction; then wakes the response worker.
//
// Threads: Store() may be called from every poller thread; a mutex serialises them (the store's
// write lock would anyway) and guards the threshold state.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "collector/cloudtrail/cloudtrail_poller.h"
#include "collector/rules/log_thresholds.h"
#include "collector/rules/rule_set.h"
#include "collector/store/collector_store.h"
#include "platform/runtime/clock.h"

namespace tripline::collector {

// The incident "agent" of cloud events of `region`.
std::string CloudIncidentAgent(const std::string& region);

class CloudEventWriter : public CloudEventSink {
 public:
  using RulesSource = std::function<std::shared_ptr<const RuleSet>()>;
  // `rules` gives the rules in force (reloads swap them); `auto_respond`: response mode is not
  // off; `wake_response` is called after a commit that queued actions. `store` and `clock`
  // outlive the writer.
  CloudEventWriter(CollectorStore* store, RulesSource rules, bool auto_respond, const Clock& clock,
                   std::function<void()> wake_response);

  absl::StatusOr<int> Store(const std::string& region, const std::vector<CloudEvent>& events,
                            const std::vector<MalformedRecord>& malformed,
                            std::optional<int64_t> cursor) override;
  absl::StatusOr<std::optional<int64_t>> Cursor(const std::string& region) override;

 private:
  // Constant after construction.
  CollectorStore* const store_;
  const RulesSource rules_;
  const bool auto_respond_;
  const Clock& clock_;
  const std::function<void()> wake_response_;

  std::mutex mu_;
  LogThresholds thresholds_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tripline::collector
