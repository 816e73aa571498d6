#include "agent/batch/batcher.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "platform/crypto/batch_signature.h"
#include "spdlog/spdlog.h"

namespace tripline::agent {

Batcher::Batcher(std::string agent_id, const SigningKey& key, const Clock& clock, Spool* spool,
                 BatcherOptions options)
    : agent_id_(std::move(agent_id)),
      key_(key),
      clock_(clock),
      spool_(spool),
      options_(BatcherOptions{
          .max_events = options.max_events == 0 ? 1 : options.max_events,
          .linger = options.linger,
          .max_queued_events = std::max(options.max_queued_events, options.max_events),
          .heartbeat = options.heartbeat,
          .version = std::move(options.version),
          .on_seal = std::move(options.on_seal)}) {}

Batcher::~Batcher() { Stop(); }

bool Batcher::Add(tripline::v1::Event event) {
  absl::MutexLock lock(&mu_);
  while (queue_.size() >= options_.max_queued_events && !non_blocking_ && !stopping_) {
    changed_.Wait(&mu_);
  }
  if (queue_.size() >= options_.max_queued_events) {
    if (dropped_++ == 0) spdlog::warn("batch: queue full during shutdown, dropping events");
    return false;
  }
  EnqueueLocked(std::move(event));
  return true;
}

bool Batcher::TryAdd(tripline::v1::Event event) {
  absl::MutexLock lock(&mu_);
  if (queue_.size() >= options_.max_queued_events) return false;
  EnqueueLocked(std::move(event));
  return true;
}

void Batcher::EnqueueLocked(tripline::v1::Event event) {
  event.set_seq(next_event_seq_++);
  if (event.time_unix_ns() == 0) event.set_time_unix_ns(clock_.NowUnixNanos());
  const bool was_empty = queue_.empty();
  if (was_empty) oldest_queued_ = absl::Now();
  queue_.push_back(std::move(event));
  // The batcher thread sleeps until the oldest event's linger ends: it needs waking only when that
  // deadline appears (the queue was empty) or a batch is full. Waking it for every event cost a
  // context switch per log line.
  if (was_empty || queue_.size() >= options_.max_events) changed_.SignalAll();
}

void Batcher::Start(uint64_t durable_seq, std::string durable_digest) {
  absl::MutexLock lock(&mu_);
  if (started_ || stopping_) return;
  started_ = true;
  next_batch_seq_ = durable_seq + 1;
  prev_digest_ = std::move(durable_digest);
  thread_ = std::thread([this] { Run(); });
}

void Batcher::SetNonBlocking() {
  spool_->SetNonBlocking();
  absl::MutexLock lock(&mu_);
  non_blocking_ = true;
  changed_.SignalAll();
}

void Batcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    changed_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

void Batcher::Run() {
  std::deque<tripline::v1::Event> take;
  for (;;) {
    const absl::Time heartbeat_due = QueueHeartbeatIfDue();
    {
      absl::MutexLock lock(&mu_);
      for (;;) {
        if (absl::Now() >= heartbeat_due && !stopping_) break;
        if (queue_.size() >= options_.max_events) break;
        if (!queue_.empty() && (stopping_ || absl::Now() >= oldest_queued_ + options_.linger)) {
          break;
        }
        if (queue_.empty() && stopping_) return;
        if (queue_.empty()) {
          changed_.WaitWithDeadline(&mu_, heartbeat_due);
        } else {
          changed_.WaitWithDeadline(&mu_,
                                    std::min(heartbeat_due, oldest_queued_ + options_.linger));
        }
      }
      size_t bytes = 0;
      while (!queue_.empty() && take.size() < options_.max_events) {
        size_t size = queue_.front().ByteSizeLong();
        if (!take.empty() && bytes + size > kMaxBatchBytes) break;
        bytes += size;
        take.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      // What is left waited as long as what we took: close it on the same schedule.
      changed_.SignalAll();
    }
    if (!take.empty()) Seal(take);
    take.clear();
    QueuePressureNotices();
  }
}

absl::Time Batcher::QueueHeartbeatIfDue() {
  if (options_.heartbeat <= absl::ZeroDuration()) return absl::InfiniteFuture();
  const absl::Time now = absl::Now();
  if (now < next_heartbeat_) return next_heartbeat_;
  next_heartbeat_ = now + options_.heartbeat;
  tripline::v1::Event ev;
  ev.set_time_unix_ns(clock_.NowUnixNanos());
  tripline::v1::AgentEvent* hb = ev.mutable_agent();
  hb->set_kind(tripline::v1::AgentEvent::HEARTBEAT);
  hb->set_version(options_.version);
  hb->set_spool_batches(spool_->size());
  hb->set_spool_bytes(spool_->bytes());
  absl::MutexLock lock(&mu_);
  ev.set_seq(next_event_seq_++);
  if (queue_.empty()) oldest_queued_ = now;
  queue_.push_back(std::move(ev));  // past the cap: this thread must not wait on itself
  changed_.SignalAll();
  return next_heartbeat_;
}

void Batcher::QueuePressureNotices() {
  while (std::optional<PressureNotice> notice = spool_->TakePressureNotice()) {
    {
      // At most one notice waits in the queue. Under sustained pressure a notice's own batch can
      // meet the cap again and end another episode; queued one after another, notices would keep
      // the queue full and crowd out the events they are about. Later episodes join the waiting
      // notice.
      absl::MutexLock lock(&mu_);
      auto waiting = std::find_if(queue_.begin(), queue_.end(), [](const tripline::v1::Event& e) {
        return e.has_agent() && e.agent().kind() == tripline::v1::AgentEvent::SPOOL_PRESSURE;
      });
      if (waiting != queue_.end()) {
        ++merged_pressure_;
        waiting->mutable_agent()->set_message(
            absl::StrCat(pressure_message_, " (", merged_pressure_,
                         " more episode(s) while this report waited)"));
        continue;
      }
    }
    tripline::v1::Event ev;
    ev.set_time_unix_ns(notice->time_unix_ns);
    ev.mutable_agent()->set_kind(tripline::v1::AgentEvent::SPOOL_PRESSURE);
    ev.mutable_agent()->set_message(notice->message);
    absl::MutexLock lock(&mu_);
    pressure_message_ = notice->message;
    merged_pressure_ = 0;
    ev.set_seq(next_event_seq_++);
    if (queue_.empty()) oldest_queued_ = absl::Now();
    queue_.push_back(std::move(ev));  // past the cap: this thread must not wait on itself
    changed_.SignalAll();
  }
}

void Batcher::Seal(std::deque<tripline::v1::Event>& events) {
  tripline::v1::EventBatch batch;
  batch.set_agent_id(agent_id_);
  batch.set_batch_seq(next_batch_seq_);
  batch.set_prev_digest(prev_digest_);
  batch.set_created_unix_ns(clock_.NowUnixNanos());
  for (tripline::v1::Event& e : events) *batch.add_events() = std::move(e);

  auto signed_batch = std::make_shared<tripline::v1::SignedBatch>();
  if (!batch.SerializeToString(signed_batch->mutable_batch())) {
    spdlog::error("batch: serialize failed batch_seq={}", next_batch_seq_);  // out of memory
    return;
  }
  signed_batch->set_signature(SignBatch(key_, signed_batch->batch()));
  const uint64_t seq = next_batch_seq_++;
  prev_digest_ = ChainDigest(signed_batch->batch());
  spdlog::debug("batch: sealed batch_seq={} events={} bytes={}", seq, batch.events_size(),
                signed_batch->batch().size());
  if (options_.on_seal) options_.on_seal(seq, batch);
  if (!spool_->Push(SealedBatch{seq, std::move(signed_batch)})) {
    spdlog::warn("batch: spool refused the batch during shutdown, dropped batch_seq={}", seq);
  }
}

}  // namespace tripline::agent
