// Groups events into batches, and seals each batch exactly once: assigns its batch_seq, chains it
// to the previous batch (prev_digest = ChainDigest(previous batch bytes)), signs the serialized
// bytes with the agent key and pushes the SignedBatch to the Spool. Resends reuse those bytes.
//
// A batch closes when it holds max_events events, when its oldest event has waited `linger`, when
// it reaches kMaxBatchBytes of serialized events, or at Stop().
//
// Back-pressure: Add() blocks while max_queued_events events wait (which happens when the Spool is
// at its cap or cannot write, and the batcher thread is blocked pushing to it). Nothing is dropped,
// except after SetNonBlocking() at shutdown. Each back-pressure episode the Spool reports becomes a
// SPOOL_PRESSURE AgentEvent, queued past the cap so the report itself never blocks.
//
// Heartbeats: the batcher thread itself seals a HEARTBEAT every `heartbeat`, so a healthy agent
// with nothing to report still sends a batch the collector can see; it carries the spool's backlog
// (batches and bytes not yet acked). While the thread is blocked at the spool's cap no heartbeat is
// made: the collector then sees the agent fall silent, which is what happened.
//
// Threads: producers call Add() from any thread (the FIM thread, main). One batcher thread, started
// by Start() once the chain head is known (after the first Enroll), owns the chain state (next
// batch_seq, prev_digest) and does the sealing; events added before Start() wait in the queue.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/spool/spool.h"
#include "platform/crypto/signing_key.h"
#include "platform/runtime/clock.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

// Serialized events per batch, so a batch stays well under the collector's 4 MiB cap.
inline constexpr size_t kMaxBatchBytes = 1 << 20;

struct BatcherOptions {
  size_t max_events = 512;
  absl::Duration linger = absl::Milliseconds(10);
  size_t max_queued_events = 8192;
  // A HEARTBEAT AgentEvent (with the spool's backlog) is sealed this often, the first one right
  // after Start(); zero turns heartbeats off.
  absl::Duration heartbeat = absl::ZeroDuration();
  std::string version = {};  // AgentEvent.version of the heartbeats
  // Called on the batcher thread for each sealed batch, before it is pushed to the Outbox (so
  // before it can be sent): the log tailer records which lines the batch covers.
  std::function<void(uint64_t batch_seq, const tripline::v1::EventBatch& batch)> on_seal = {};
};

class Batcher {
 public:
  // `key`, `clock` and `spool` outlive the batcher.
  Batcher(std::string agent_id, const SigningKey& key, const Clock& clock, Spool* spool,
          BatcherOptions options);
  ~Batcher();  // Stop()
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues `event`, assigning its Event.seq (per-agent counter, from 1 in each run) and, when
  // unset, its time_unix_ns. Blocks while the queue is full; after SetNonBlocking() or Stop() an
  // event that does not fit is dropped (logged) and false returned.
  bool Add(tripline::v1::Event event);
  // Like Add, but never blocks: false, with the event not taken, while the queue is full.
  bool TryAdd(tripline::v1::Event event);

  // Starts the batcher thread; the first sealed batch has batch_seq `durable_seq + 1` and
  // prev_digest `durable_digest`. Only the first call has an effect.
  void Start(uint64_t durable_seq, std::string durable_digest);

  // Shutdown: Add() and the push to the Spool stop blocking.
  void SetNonBlocking();

  // Seals everything queued (if started), then joins the thread. Idempotent.
  void Stop();

 private:
  void Run();
  // Numbers and queues `event`; wakes the batcher thread when it has something new to wait for.
  void EnqueueLocked(tripline::v1::Event event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Seal(std::deque<tripline::v1::Event>& events);
  void QueuePressureNotices();
  // Queues a HEARTBEAT when one is due (past the cap, like pressure notices) and returns when the
  // next one is due; absl::InfiniteFuture() when heartbeats are off.
  absl::Time QueueHeartbeatIfDue();

  // Constant after construction.
  const std::string agent_id_;
  const SigningKey& key_;
  const Clock& clock_;
  Spool* const spool_;
  const BatcherOptions options_;

  // Shared between producers and the batcher thread.
  absl::Mutex mu_;
  absl::CondVar changed_;
  std::deque<tripline::v1::Event> queue_ ABSL_GUARDED_BY(mu_);
  absl::Time oldest_queued_ ABSL_GUARDED_BY(mu_);  // when queue_.front() arrived
  uint64_t next_event_seq_ ABSL_GUARDED_BY(mu_) = 1;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool non_blocking_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  std::string pressure_message_ ABSL_GUARDED_BY(mu_);  // of the notice waiting in queue_
  uint64_t merged_pressure_ ABSL_GUARDED_BY(mu_) = 0;  // episodes merged into it

  // Owned by the batcher thread (set by Start() before it runs).
  uint64_t next_batch_seq_ = 1;
  std::string prev_digest_;
  absl::Time next_heartbeat_ = absl::InfinitePast();
  std::thread thread_;
};

}  // namespace tripline::agent
