#include "collector/cloudtrail/cloudtrail_poller.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_format.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {
namespace {

constexpr int64_t kSecondNs = 1000000000;
constexpr size_t kMaxSeenIds = 200000;

}  // namespace

CloudTrailPoller::CloudTrailPoller(CloudTrailPollerOptions options,
                                   std::unique_ptr<LookupEventsSource> source,
                                   CloudEventSink* sink, const Clock& clock)
    : options_(std::move(options)), source_(std::move(source)), sink_(sink), clock_(clock) {}

CloudTrailPoller::~CloudTrailPoller() { Stop(); }

void CloudTrailPoller::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Loop(); });
}

void CloudTrailPoller::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool CloudTrailPoller::Stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

bool CloudTrailPoller::WaitFor(int64_t ns) {
  std::unique_lock<std::mutex> lock(mu_);
  if (ns > 0) {
    cv_.wait_for(lock, std::chrono::nanoseconds(ns), [this] { return stopping_; });
  }
  return !stopping_;
}

CloudTrailPollerStats CloudTrailPoller::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

absl::StatusOr<std::string> CloudTrailPoller::Call(int64_t start_ns, int64_t end_ns,
                                                   const std::string& token) {
  if (last_call_mono_ns_ != 0) {
    const int64_t next = last_call_mono_ns_ + options_.min_call_interval_ns;
    if (!WaitFor(next - clock_.MonotonicNanos())) {
      return absl::CancelledError("the collector is stopping");
    }
  }
  last_call_mono_ns_ = clock_.MonotonicNanos();
  absl::StatusOr<std::string> page =
      source_->LookupEvents(start_ns, end_ns, token, options_.max_results);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.calls;
  if (!page.ok()) ++stats_.failed_calls;
  return page;
}

absl::Status CloudTrailPoller::PollOnce() {
  const int64_t now = clock_.NowUnixNanos();
  ASSIGN_OR_RETURN(std::optional<int64_t> cursor, sink_->Cursor(options_.region));
  // Whole seconds: the window's end becomes the cursor, and the next window reaches back
  // `overlap` before it, so nothing between two windows is missed.
  const int64_t end = now / kSecondNs * kSecondNs;
  int64_t start = cursor ? *cursor - options_.overlap_ns : end - options_.lookback_ns;
  start = std::max<int64_t>(0, std::min(start, end)) / kSecondNs * kSecondNs;

  std::string token;
  for (int page_no = 1;; ++page_no) {
    ASSIGN_OR_RETURN(std::string text, Call(start, end, token));
    ASSIGN_OR_RETURN(LookupEventsPage page, ParseLookupEventsPage(text, options_.region));
    const bool last = page.next_token.empty() || page.next_token == token ||
                      page_no >= options_.max_pages_per_window;
    if (!page.next_token.empty() && page_no >= options_.max_pages_per_window) {
      spdlog::error(
          "cloudtrail: region={} window of {} pages still has more; the rest is read by the next "
          "window",
          options_.region, page_no);
    }
    std::vector<CloudEvent> fresh;
    int64_t seen_here = 0;
    for (CloudEvent& e : page.events) {
      if (seen_.count(e.event_id) > 0) {
        ++seen_here;
        continue;
      }
      fresh.push_back(std::move(e));
    }
    // Oldest first within a page, so rules see a page's events in time order.
    std::stable_sort(fresh.begin(), fresh.end(), [](const CloudEvent& a, const CloudEvent& b) {
      return a.time_ns < b.time_ns;
    });
    for (const MalformedRecord& m : page.malformed) {
      spdlog::warn("cloudtrail: region={} malformed record skipped event_id={} reason=\"{}\"",
                   options_.region, Printable(m.event_id, 128), Printable(m.reason, 256));
    }
    ASSIGN_OR_RETURN(int fresh_stored,
                     sink_->Store(options_.region, fresh, page.malformed,
                                  last ? std::optional<int64_t>(end) : std::nullopt));
    for (const CloudEvent& e : fresh) {
      if (seen_.size() >= kMaxSeenIds) seen_.clear();  // the store's index still de-duplicates
      seen_.emplace(e.event_id, e.time_ns);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.events_new += fresh_stored;
      stats_.events_seen += seen_here + static_cast<int64_t>(fresh.size()) - fresh_stored;
      stats_.malformed += static_cast<int64_t>(page.malformed.size());
      if (last) ++stats_.windows;
    }
    if (last) break;
    token = std::move(page.next_token);
  }
  // Ids older than the next window's start cannot come back.
  const int64_t keep_from = end - options_.overlap_ns - kSecondNs;
  for (auto it = seen_.begin(); it != seen_.end();) {
    it = it->second < keep_from ? seen_.erase(it) : std::next(it);
  }
  return absl::OkStatus();
}

void CloudTrailPoller::Loop() {
  spdlog::info("cloudtrail: polling region={} every {}ms", options_.region,
               options_.poll_interval_ns / 1000000);
  int failures = 0;
  while (!Stopping()) {
    absl::Status st = PollOnce();
    if (Stopping()) break;
    int64_t wait = options_.poll_interval_ns;
    if (st.ok()) {
      if (failures > 0) {
        spdlog::info("cloudtrail: region={} polling again after {} failed window(s)",
                     options_.region, failures);
      }
      failures = 0;
    } else {
      ++failures;
      const int shift = std::min(failures - 1, 20);
      const int64_t cap = std::min(options_.backoff_max_ns, options_.backoff_base_ns << shift);
      wait = cap <= 0 ? 0 : std::uniform_int_distribution<int64_t>(cap / 2, cap)(jitter_);
      spdlog::warn("cloudtrail: region={} window failed (attempt {}), retrying in {}ms: {}",
                   options_.region, failures, wait / 1000000, st.ToString());
    }
    if (!WaitFor(wait)) break;
  }
  spdlog::info("cloudtrail: region={} poller stopped", options_.region);
}

}  // namespace tripline::collector
