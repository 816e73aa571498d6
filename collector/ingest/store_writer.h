// The one thread that writes ingest results to the store. Reactors and the Enroll handler hand it
// work through a bounded queue and never wait for it; it commits whatever is waiting in one
// transaction (group commit): enrollments, batches (the signed bytes as received, their events, the
// agent's new durable tip, the rules' matches and the incidents and actions they open) and
// integrity incidents. Only after COMMIT does it call each item's `done`, on this thread, with the
// agent's durable seq, and then wake the response worker if isolate actions were queued.
// Stop() drains: everything accepted before it is committed and answered.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "collector/ingest/agent_registry.h"
#include "collector/rules/log_thresholds.h"
#include "collector/rules/rule_set.h"
#include "collector/store/collector_store.h"
#include "google/protobuf/arena.h"
#include "platform/runtime/clock.h"
#include "tripline/v1/event.pb.h"
#include "tripline/v1/ingest.pb.h"

namespace tripline::collector {

struct WriteResult {
  absl::Status status;       // not ok: the item was not committed (or was refused)
  uint64_t durable_seq = 0;  // the agent's durable seq after the commit
  std::string durable_digest;
};

struct WriteItem {
  enum class Kind { kEnroll, kBatch, kDuplicate, kIntegrity };
  Kind kind = Kind::kBatch;
  std::string agent_id;
  // kEnroll. `rekeyed` is set by the writer when an operator's re-enrollment let a new key in.
  std::string public_key, hostname, version;
  bool rekeyed = false;
  // kBatch: the signed bytes as received, the signature, the parsed batch and its chain digest.
  // The parsed batch lives in `arena` (a few blocks rather than several allocations per event).
  // event_spans[i] is where batch->events(i) lies in batch_bytes (offset, length): the store keeps
  // each event's bytes as signed instead of serializing the parsed event again.
  std::string batch_bytes, signature, batch_digest;
  std::unique_ptr<google::protobuf::Arena> arena;
  tripline::v1::EventBatch* batch = nullptr;  // in *arena
  std::vector<std::pair<uint32_t, uint32_t>> event_spans;
  // kIntegrity: what was wrong, for the incident.
  std::string reason;
  // Called on the writer thread after the commit (or failure). May be empty.
  std::function<void(const WriteResult&)> done;
};

class StoreWriter {
 public:
  struct Options {
    size_t max_queue = 4096;      // batches and duplicates waiting; Submit refuses past it
    // Signed bytes of the batches waiting or being committed past which Congested() is true
    // (their parsed form takes a few times more memory).
    size_t congested_bytes = 32 << 20;
    size_t max_group = 256;       // items per transaction
    bool auto_respond = true;     // response.mode auto: open isolate actions
  };

  // `store`, `registry` and `clock` outlive the writer. `on_actions_queued` runs on the writer
  // thread after a commit that created isolate actions.
  StoreWriter(CollectorStore* store, AgentRegistry* registry, std::shared_ptr<const RuleSet> rules,
              Options options, const Clock& clock, std::function<void()> on_actions_queued);
  ~StoreWriter();  // Stop()s
  StoreWriter(const StoreWriter&) = delete;
  StoreWriter& operator=(const StoreWriter&) = delete;

  void Start();
  // Queues a batch or duplicate; false (and `item` untouched) when the queue is full or the
  // writer has stopped: the caller refuses the batch.
  bool Submit(WriteItem& item);
  // True while more than `congested_bytes` of batches wait or are being committed: streams that
  // already have batches in the writer should wait for their answers before reading more, which
  // bounds the collector's memory by that budget plus about one batch per stream.
  bool Congested() const {
    return queued_bytes_.load(std::memory_order_relaxed) > options_.congested_bytes;
  }
  // Queues an enrollment or integrity record regardless of the cap (they are small and rare).
  // After Stop(), `done` runs at once with Unavailable.
  void SubmitUrgent(WriteItem item);
  // Swaps in new rules for the batches committed from now on.
  void SetRules(std::shared_ptr<const RuleSet> rules);
  std::shared_ptr<const RuleSet> rules() const;
  // Commits what is queued, answers it, and joins the thread. Idempotent.
  void Stop();

 private:
  void Run();
  void CommitGroup(std::deque<WriteItem>& group);
  // Applies one item inside the open transaction. A store error aborts the whole group; a refusal
  // (e.g. another key for a known agent) only fails that item, through `result`.
  absl::Status Apply(CollectorStore::Writer& w, WriteItem& item, const RuleSet& rules,
                     WriteResult* result, bool* actions_queued);

  // Constant after construction.
  CollectorStore* const store_;
  AgentRegistry* const registry_;
  const Options options_;
  const Clock& clock_;
  const std::function<void()> on_actions_queued_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<WriteItem> queue_;                // guarded by mu_
  size_t capped_ = 0;                          // batches + duplicates in queue_; guarded by mu_
  std::atomic<size_t> queued_bytes_{0};        // batch_bytes of queued and committing batches
  bool stopping_ = false;                      // guarded by mu_
  std::shared_ptr<const RuleSet> rules_;       // guarded by mu_
  LogThresholds thresholds_;                   // owned by the writer thread
  std::thread thread_;
};

}  // namespace tripline::collector
