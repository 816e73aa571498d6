// Which of FIM's reported changes reached a batch that can no longer be lost, kept so that every
// file change is reported exactly once across a crash of the agent (kill -9 at any moment)
// (state_dir/fim-delivery.db, SQLite WAL).
//
// The baseline file and the spool are two files; no write can change both at once. FIM therefore
// commits each change to the baseline together with a "pending" row holding the event that
// reports it (BaselineStore::AddPending, ids increasing across runs), and only then offers the
// event to the batcher, in id order. This ledger ties those ids to batches:
//   Offering(id) before the event is queued (Withdraw(id) when it was not taken);
//   RecordSealed(batch) on the batcher thread, before the batch can reach the spool: persists
//     "batch S holds pending ids up to P" (ids of one run are offered, hence sealed, in order);
//   Durable(S) from the spool's durable listener: pending ids up to P are delivered, FIM may
//     delete their rows;
//   Recover(L) at start, with L the last batch that landed (the spool's head, or the collector's
//     durable_seq when that is further): batches <= L landed, later ones were lost (their seqs are
//     reused). Pending rows up to the recovered watermark are forgotten; the others are offered
//     again, so a change whose event died in memory is reported, and one whose event landed is
//     not reported twice.
// A crash can come between any two of these steps; each case leaves either the pending row (the
// event is offered again unless a landed batch holds it) or the event in a landed batch with the
// baseline already knowing the change (the restart diff finds nothing). Across a power loss the
// baseline file (synchronous=NORMAL) may lose its last commits: changes are then reported again,
// never lost.
//
// Threads: thread-safe. The FIM thread offers, the batcher thread records sealed batches, the
// spool's commit thread and the transport's reader report durable seqs, main recovers.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "platform/store/sqlite.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

inline constexpr char kFimDeliveryFileName[] = "fim-delivery.db";

class FimDelivery {
 public:
  // Opens (creating, migrating) the ledger at `path` (":memory:" for one that dies with the run).
  static absl::StatusOr<std::unique_ptr<FimDelivery>> Open(const std::string& path);

  // At start, before the first batch of this run is sealed: batches <= landed_seq landed.
  absl::Status Recover(uint64_t landed_seq);
  bool recovered() const;

  // The FIM thread is about to queue the FileEvent of pending change `id` made at
  // `time_unix_ns` (the event's time), and, when it was not taken, takes that back.
  void Offering(uint64_t id, int64_t time_unix_ns);
  void Withdraw(uint64_t id);

  // Batch `seq` was sealed: the FileEvents in it are the next ones offered. Must return before
  // the batch can reach the spool.
  absl::Status RecordSealed(uint64_t seq, const tripline::v1::EventBatch& batch);

  // Every batch up to `seq` is durable.
  absl::Status Durable(uint64_t seq);

  // Every pending id <= this is in a durable (or landed) batch.
  uint64_t delivered_through() const;
  // The highest pending id this ledger has ever named: new ids must be above it.
  uint64_t max_known_id() const;

 private:
  explicit FimDelivery(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  absl::Status Load() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StoreDelivered(uint64_t through, uint64_t prune_through_seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
  bool recovered_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t delivered_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t durable_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t max_known_ ABSL_GUARDED_BY(mu_) = 0;
  // Offered, not yet sealed: (id, event time), in offer order.
  std::deque<std::pair<uint64_t, int64_t>> offered_ ABSL_GUARDED_BY(mu_);
  // Sealed, not yet durable: (batch seq, last id), as persisted.
  std::deque<std::pair<uint64_t, uint64_t>> sealed_ ABSL_GUARDED_BY(mu_);
  // Below the first id whose event went missing before sealing: no batch names an id past it.
  uint64_t cap_ ABSL_GUARDED_BY(mu_) = UINT64_MAX;
};

}  // namespace tripline::agent
