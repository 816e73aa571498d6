// The sealed batches the collector has not acknowledged yet, in batch_seq order, in memory.
//
// The batcher pushes each batch once, when it is sealed (signed and chained); the sender reads
// them by seq as often as it needs to (a resend after a reconnect sends the same bytes) and an ack
// with durable_seq drops every batch up to it.
//
// Back-pressure: the outbox holds at most `capacity` batches. When it is full, Push blocks — the
// batcher stops sealing, its event queue fills, and the FIM thread blocks in turn — rather than
// dropping anything. Only after SetNonBlocking() (process shutdown, when memory is about to be
// lost anyway) does a Push that does not fit drop its batch and return false. There is no spool
// yet: batches not acked when the process exits are lost (the collector's chain resumes from what
// it has).
//
// Threads: thread-safe. Typically one pusher (batcher thread), one sender (writer thread) and one
// acker (stream reader thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

inline constexpr size_t kDefaultOutboxCapacity = 10000;

struct SealedBatch {
  uint64_t seq = 0;
  std::shared_ptr<const tripline::v1::SignedBatch> signed_batch;
};

class Outbox {
 public:
  explicit Outbox(size_t capacity = kDefaultOutboxCapacity);

  // Appends `batch` (its seq must follow the last pushed one). Blocks while full unless
  // SetNonBlocking() was called; then a batch that does not fit is dropped and false returned.
  bool Push(SealedBatch batch);

  // The collector has committed everything up to `durable_seq`: forget those batches. Lower
  // values than already acked are ignored.
  void AckThrough(uint64_t durable_seq);

  // Waits until batch `seq` is here and seq <= acked_seq() + window, and returns it; returns
  // nullopt as soon as Interrupt() has moved the generation past `generation`.
  std::optional<SealedBatch> WaitForSendable(uint64_t seq, uint64_t window, uint64_t generation);

  // Wakes every WaitForSendable caller holding an older generation; returns the new generation.
  uint64_t Interrupt();
  uint64_t generation() const;

  // True once nothing is waiting for an ack; false at `deadline`.
  bool WaitUntilEmpty(absl::Time deadline);

  // From now on Push never blocks (shutdown).
  void SetNonBlocking();

  uint64_t acked_seq() const;
  size_t size() const;

  // `fn(seq)` is called, outside the lock and in order, each time acked_seq() advances: every
  // batch up to seq is durable (today: committed by the collector; a disk spool moves this point
  // earlier). Set before anything acks.
  using DurableFn = std::function<void(uint64_t seq)>;
  void SetDurableListener(DurableFn fn);

 private:
  DurableFn on_durable_ ABSL_GUARDED_BY(durable_mu_);
  absl::Mutex durable_mu_;  // keeps listener calls in order
  const size_t capacity_;
  mutable absl::Mutex mu_ ABSL_ACQUIRED_AFTER(durable_mu_);
  absl::CondVar changed_;  // signalled on every push, ack, interrupt and mode change
  std::deque<SealedBatch> batches_ ABSL_GUARDED_BY(mu_);
  uint64_t acked_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool non_blocking_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace tripline::agent
