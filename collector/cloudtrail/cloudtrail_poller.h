// The CloudTrail source: one poller thread per configured region calls LookupEvents for the
// window [cursor - overlap, now], page by page (NextToken), and hands each page to a
// CloudEventSink, which stores it in one transaction. The cursor (the end of the last window read
// whole) is persisted with the window's last page, so a collector stopped in the middle of a
// window reads that window again on its next start; events seen twice (overlapping windows, a
// re-read window, CloudTrail's late delivery) are dropped by EventId: in memory for the overlap
// window, and by the store's unique index across restarts.
//
// Rate: at most one call per `min_call_interval` per region (LookupEvents allows about 2 per
// second per region). Errors (ThrottlingException after the connection's own retries, transport
// errors, bad answers) back off exponentially (a random wait in [cap/2, cap]) up to `backoff_max`, and the window
// is retried from its first page; nothing is skipped.
//
// Threads: one per region, owned here; Stop() wakes and joins them. The source is used only by
// its poller's thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "collector/cloudtrail/cloud_event.h"
#include "platform/runtime/clock.h"

namespace tripline::collector {

// One region's LookupEvents. The real one is LookupEventsClient (lookup_events_client.h).
class LookupEventsSource {
 public:
  virtual ~LookupEventsSource() = default;
  // One call for events with start_ns <= EventTime <= end_ns (whole seconds), continuing at
  // `next_token` when not empty; returns the answer's JSON text. Unavailable for throttling (after
  // retries) and transport errors; other codes for answers that will not change by retrying.
  virtual absl::StatusOr<std::string> LookupEvents(int64_t start_ns, int64_t end_ns,
                                                   const std::string& next_token,
                                                   int max_results) = 0;
};

// Where pages go (CloudEventWriter). Store() keeps `events` (skipping those already stored) and
// `malformed`, and when `cursor` is set moves the region's cursor there, all or nothing. Returns
// how many events were new.
class CloudEventSink {
 public:
  virtual ~CloudEventSink() = default;
  virtual absl::StatusOr<int> Store(const std::string& region, const std::vector<CloudEvent>& events,
                                    const std::vector<MalformedRecord>& malformed,
                                    std::optional<int64_t> cursor) = 0;
  // The region's persisted cursor; nullopt before its first window.
  virtual absl::StatusOr<std::optional<int64_t>> Cursor(const std::string& region) = 0;
};

struct CloudTrailPollerOptions {
  std::string region;
  int64_t poll_interval_ns = int64_t{60} * 1000000000;
  int64_t lookback_ns = int64_t{3600} * 1000000000;  // the first window, when no cursor is stored
  // How far each window reaches back before the cursor: CloudTrail delivers events minutes late.
  int64_t overlap_ns = int64_t{600} * 1000000000;
  int64_t min_call_interval_ns = 500000000;  // 2 calls per second
  int max_results = 50;                      // LookupEvents' maximum
  int max_pages_per_window = 10000;          // a runaway NextToken chain ends here
  int64_t backoff_base_ns = 1000000000;
  int64_t backoff_max_ns = int64_t{300} * 1000000000;
};

// What one poller did, for tests and logs.
struct CloudTrailPollerStats {
  int64_t calls = 0;
  int64_t failed_calls = 0;
  int64_t windows = 0;      // windows read whole (cursor moved)
  int64_t events_new = 0;   // stored for the first time
  int64_t events_seen = 0;  // dropped as already seen (memory or store)
  int64_t malformed = 0;
};

class CloudTrailPoller {
 public:
  // `sink` and `clock` outlive the poller.
  CloudTrailPoller(CloudTrailPollerOptions options, std::unique_ptr<LookupEventsSource> source,
                   CloudEventSink* sink, const Clock& clock);
  ~CloudTrailPoller();  // Stop()s
  CloudTrailPoller(const CloudTrailPoller&) = delete;
  CloudTrailPoller& operator=(const CloudTrailPoller&) = delete;

  void Start();
  // Wakes the thread out of any wait and joins it; a call in flight finishes first. Idempotent.
  void Stop();
  // Reads one window now, on the caller's thread (tests; the thread must not be running).
  // Ok when the window was read whole.
  absl::Status PollOnce();
  CloudTrailPollerStats stats();

 private:
  void Loop();
  // Waits `ns` or until Stop(); false when stopping.
  bool WaitFor(int64_t ns);
  bool Stopping();
  // One call, honouring the rate.
  absl::StatusOr<std::string> Call(int64_t start_ns, int64_t end_ns, const std::string& token);

  // Constant after construction.
  const CloudTrailPollerOptions options_;
  const std::unique_ptr<LookupEventsSource> source_;  // poller thread only
  CloudEventSink* const sink_;
  const Clock& clock_;

  // Poller thread only.
  int64_t last_call_mono_ns_ = 0;
  std::map<std::string, int64_t> seen_;  // event id -> event time, for the overlap window
  std::mt19937_64 jitter_{std::random_device{}()};

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;         // guarded by mu_
  CloudTrailPollerStats stats_;   // guarded by mu_
  std::thread thread_;
};

}  // namespace tripline::collector
