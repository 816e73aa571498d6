#include "agent/batch/outbox.h"

namespace tripline::agent {

Outbox::Outbox(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

bool Outbox::Push(SealedBatch batch) {
  absl::MutexLock lock(&mu_);
  while (batches_.size() >= capacity_ && !non_blocking_) changed_.Wait(&mu_);
  if (batches_.size() >= capacity_) return false;
  if (batch.seq <= acked_seq_) return true;  // already committed (cannot happen in order)
  batches_.push_back(std::move(batch));
  changed_.SignalAll();
  return true;
}

void Outbox::AckThrough(uint64_t durable_seq) {
  absl::MutexLock order(&durable_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (durable_seq <= acked_seq_) return;
    acked_seq_ = durable_seq;
    while (!batches_.empty() && batches_.front().seq <= durable_seq) batches_.pop_front();
    changed_.SignalAll();
  }
  if (on_durable_) on_durable_(durable_seq);
}

void Outbox::SetDurableListener(DurableFn fn) {
  absl::MutexLock order(&durable_mu_);
  on_durable_ = std::move(fn);
}

std::optional<SealedBatch> Outbox::WaitForSendable(uint64_t seq, uint64_t window,
                                                   uint64_t generation) {
  absl::MutexLock lock(&mu_);
  for (;;) {
    if (generation_ != generation) return std::nullopt;
    if (seq <= acked_seq_ + window && !batches_.empty() && batches_.front().seq <= seq &&
        batches_.back().seq >= seq) {
      return batches_[seq - batches_.front().seq];  // seqs are contiguous
    }
    changed_.Wait(&mu_);
  }
}

uint64_t Outbox::Interrupt() {
  absl::MutexLock lock(&mu_);
  ++generation_;
  changed_.SignalAll();
  return generation_;
}

uint64_t Outbox::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

bool Outbox::WaitUntilEmpty(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  while (!batches_.empty()) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) return batches_.empty();
  }
  return true;
}

void Outbox::SetNonBlocking() {
  absl::MutexLock lock(&mu_);
  non_blocking_ = true;
  changed_.SignalAll();
}

uint64_t Outbox::acked_seq() const {
  absl::MutexLock lock(&mu_);
  return acked_seq_;
}

size_t Outbox::size() const {
  absl::MutexLock lock(&mu_);
  return batches_.size();
}

}  // namespace tripline::agent
