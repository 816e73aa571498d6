// File integrity monitoring: a parallel start-up scan of the configured roots, compared with the
// baseline stored by the previous run (every change made while the agent was down is reported),
// then realtime changes from inotify, each compared with the baseline and reported as a FileEvent
// with the state before and after. The baseline file is kept current with every change reported.
//
// What is reported:
//   CREATED / DELETED / MODIFIED (type, inode, size, sha256 or link target) / ATTRIB (mode, owner,
//   links, and times when a root compares them) / RENAMED (IN_MOVED_FROM + IN_MOVED_TO paired by
//   cookie; unpaired halves become DELETED or CREATED). A write that leaves everything compared the
//   same emits nothing.
//   AgentEvents: STARTED, BASELINE_COMPLETE (its message says how many changes since the stored
//   baseline), INOTIFY_OVERFLOW (followed by a rescan of every root against the baseline and
//   RESCAN_DONE), WATCH_LIMIT_REACHED naming the directory (which is then covered by periodic
//   scans until a watch can be added), WATCH_ERROR naming the path, CONFIG_ERROR when the baseline
//   file cannot be used (the baseline is then kept in memory only).
//
// Writes: IN_CLOSE_WRITE reports a file at once. IN_MODIFY (a writer that keeps its file open) is
// debounced: the file is read once the writes pause for `debounce_ms`, and at least every
// `debounce_max_ms` while they go on, so a long write is one event, not one per write().
//
// Hard links: a link count change reaches only watches on the inode itself, so when a name with
// more than one link appears or goes, the other names of the same inode in the baseline are read
// again. A hard link made from outside the watched roots is seen by the next scan only.
//
// Monitoring of a directory begins when the start-up scan lists it: what is there then is the
// baseline (or, with a stored baseline, is compared with it). BASELINE_COMPLETE says every root
// is being watched.
//
// Invariants: a new directory is watched before it is listed, and everything found in it is
// reported CREATED, so `mkdir -p a/b/c && echo x > a/b/c/f` is never missed. Symlinks are never
// followed. Paths are bytes. Excluded entries (and excluded directories' subtrees) are neither
// recorded nor watched.
//
// Memory: the baseline lives in the baseline file (or, without one, in an in-memory SQLite
// database), not in a map: each event looks its path up there. What the agent keeps in memory
// per watched file is nothing; per watched directory, one entry of the watch table.
//
// Delivery (exactly once across a crash): a change is committed to the baseline file together
// with a pending row holding its event, and only then offered, in order, to `offer` (the
// batcher); `delivery` learns which batch took it and when that batch is durable, and pending
// rows are deleted once it is. After a crash, pending rows whose batch did not land are offered
// again, and the restart diff finds nothing for them since the baseline already holds them. A
// change is never in the baseline without its event being either pending or landed.
// AgentEvents of FIM follow the file events they come after, from memory (not across a crash).
//
// Back-pressure: when `offer` refuses (no room), FIM stops reporting per-file changes: events
// already committed stay pending, and an inotify event (or a due debounced write) only marks its
// root dirty, in the baseline file, so a restart also rescans it. The spool's SPOOL_PRESSURE
// AgentEvent reports the episode. Once everything pending is taken again, FIM rescans the dirty
// roots against the baseline, reports each change found once, and says so in a RESCAN_DONE.
//
// Threads: Start() runs one FIM thread that owns everything here (baseline, baseline file,
// inotify fd, watch table); full scans run on a pool of workers (tree_scan.h) that the FIM thread
// waits for, and the only thing they touch here is AddWatch (under watch_mu_). Idle, the thread
// sleeps in poll() with no timeout unless a debounced write, a fallback scan or a retry of
// delivery is due. `emit` and `offer` are called on the FIM thread; `emit` may block.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "agent/fim/baseline_diff.h"
#include "agent/fim/baseline_store.h"
#include "agent/fim/file_state.h"
#include "agent/fim/fim_delivery.h"
#include "agent/fim/fim_root.h"
#include "agent/fim/tree_scan.h"
#include "platform/fs/inotify.h"
#include "platform/fs/unique_fd.h"
#include "platform/runtime/clock.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

struct FimOptions {
  std::string baseline_path;       // the baseline file; empty: the baseline lives in memory only
  int threads = 0;                 // scan workers; 0: four per CPU
  int64_t debounce_ms = 100;       // IN_MODIFY: read the file once writes pause this long...
  int64_t debounce_max_ms = 2000;  // ...or at the latest this long after the first
  // How often directories that could not be watched (watch limit) are scanned instead.
  int64_t fallback_scan_interval_ms = 60000;
  int64_t max_watches = 0;  // the agent's own cap on inotify watches; 0: the kernel's limit
  // Where events go when set (else to `emit`, which then must take every event): never blocks,
  // and returns false, with the event not taken, when there is no room now (the spool refuses
  // for lack of room, at its cap or on a full disk). See "Delivery" above.
  std::function<bool(const tripline::v1::Event&)> offer;
  // Ties each reported change to the batch that holds its event (fim_delivery.h); outlives the
  // watcher. nullptr: an event taken by `offer` or `emit` counts as delivered.
  FimDelivery* delivery = nullptr;
  // How often events that found no room, or wait for `delivery` to recover, are offered again.
  int64_t retry_ms = 200;
};

class FimWatcher {
 public:
  using EmitFn = std::function<void(tripline::v1::Event)>;

  // `clock` outlives the watcher. Events carry time_unix_ns; seq is left to the batcher.
  FimWatcher(std::vector<FimRoot> roots, const Clock& clock, EmitFn emit);
  FimWatcher(std::vector<FimRoot> roots, FimOptions options, const Clock& clock, EmitFn emit);
  ~FimWatcher();  // Stop()
  FimWatcher(const FimWatcher&) = delete;
  FimWatcher& operator=(const FimWatcher&) = delete;

  // Creates the inotify instance and starts the FIM thread (scan, then watch). Fails when inotify
  // or the eventfd cannot be created (the reason names the limit hit).
  absl::Status Start();

  // Wakes and joins the FIM thread; safe to call more than once and without Start().
  void Stop();

  // Asks the FIM thread to rescan every root against the baseline, report the differences and
  // emit RESCAN_DONE — what an inotify overflow does. A rescan is done before the inotify events
  // queued at that moment. Thread-safe; returns at once.
  void RequestRescan();

 private:
  struct Watch {
    std::string path;
    size_t root;
  };
  struct PendingWrite {
    size_t root;
    int64_t first_ns;
    int64_t due_ns;
  };

  void Run();
  void StartUp();
  void HandleEvents(std::vector<InotifyEvent>& events);
  void ScanTree(const std::string& start, size_t root);
  ScanResult ParallelScan(const std::vector<ScanStart>& starts);
  void ReportScanErrors(const std::vector<ScanError>& errors);
  void ApplyChanges(const std::vector<FileChange>& changes, std::vector<std::string>* removed_dirs);
  void Rescan();
  void RescanRoots(const std::vector<size_t>& which, bool dirty);
  void ReleaseScanMemory();
  void FallbackScan();
  void FlushDueWrites(bool all);
  int PollTimeoutMs() const;
  void Reconcile(const std::string& path, size_t root);
  void Report(const std::string& path, size_t root, const FileStateRead& read);
  void Vanished(const std::string& path);
  void ReconcileHardLinks(const std::string& path, const tripline::v1::FileState& state);
  void Renamed(const std::string& from, const std::string& to, size_t root);
  void ForgetSubtree(const std::string& dir, bool report);
  void AddWatch(const std::string& path, size_t root, bool is_dir);
  void EmitWatchFailures();
  void RemoveWatchesUnder(const std::string& dir);
  void RekeyWatches(const std::string& from, const std::string& to);
  std::optional<tripline::v1::FileState> Lookup(const std::string& path);
  std::vector<std::pair<std::string, tripline::v1::FileState>> Under(const std::string& dir);
  absl::StatusOr<Baseline> LoadScope(const std::vector<std::string>& scope);
  void UseInMemoryStore(const absl::Status& why);
  void Put(const std::string& path, const tripline::v1::FileState& state);
  void Erase(const std::string& path);
  void FlushStore();
  void Deliver();
  bool Offer(const tripline::v1::Event& ev);
  bool OfferBacklog(uint64_t before_id);
  void Record(tripline::v1::Event ev);
  void MarkDirty(size_t root);
  void MarkAllDirty();
  void EnsurePendingIds();
  tripline::v1::Event MakeFileEvent(tripline::v1::FileEvent::Change change, const std::string& path,
                                    const std::string& old_path,
                                    const tripline::v1::FileState* before,
                                    const tripline::v1::FileState* after,
                                    const std::string& note) const;
  void EmitFile(tripline::v1::FileEvent::Change change, const std::string& path,
                const std::string& old_path, const tripline::v1::FileState* before,
                const tripline::v1::FileState* after, const std::string& note);
  void EmitAgent(tripline::v1::AgentEvent event);

  // Constant after construction.
  const std::vector<FimRoot> roots_;
  const FimOptions options_;
  const Clock& clock_;
  const EmitFn emit_;

  // Shared with Stop() and RequestRescan(): their flags and the eventfd that wakes poll().
  std::atomic<bool> stop_{false};
  std::atomic<bool> rescan_requested_{false};
  UniqueFd wake_fd_;
  std::thread thread_;

  // The watch table: written by AddWatch from scan workers while the FIM thread waits for them,
  // otherwise by the FIM thread alone.
  std::mutex watch_mu_;
  std::unordered_map<int, Watch> watches_;
  std::unordered_map<std::string, int> watch_by_path_;
  // Directories whose watch could not be added (watch limit): root index by path, scanned every
  // fallback_scan_interval_ms instead.
  std::map<std::string, size_t> unwatched_;
  std::vector<std::pair<std::string, absl::Status>> watch_failures_;  // not yet reported
  std::unordered_set<std::string> limit_reported_;  // WATCH_LIMIT_REACHED already sent for

  // Owned by the FIM thread (set up by Start() before the thread exists).
  std::optional<Inotify> inotify_;
  std::unique_ptr<BaselineStore> store_;  // the baseline; set by StartUp
  std::unordered_map<std::string, PendingWrite> pending_writes_;  // IN_MODIFY being debounced
  std::vector<dev_t> root_dev_;  // per root, for one_filesystem in realtime scans
  int64_t next_fallback_scan_ns_ = 0;
  uint64_t scan_files_ = 0;
  int watch_failures_reported_ = 0;
  // Delivery: pending ids up to handed_through_ were taken this run (or landed before it), the
  // rows up to erased_through_ are deleted; AgentEvents wait in agent_backlog_ behind the
  // pending id they followed.
  uint64_t handed_through_ = 0;
  uint64_t erased_through_ = 0;
  uint64_t last_pending_id_ = 0;
  uint64_t last_run_pending_ = 0;  // the highest pending id the last run left
  bool delivery_ready_ = false;    // `delivery` recovered, handed_through_ set from it
  bool undelivered_ = false;       // Deliver() stopped short: retry after retry_ms
  bool congested_ = false;         // `offer` refused: changes only mark their roots dirty
  std::deque<std::pair<uint64_t, tripline::v1::Event>> agent_backlog_;
  std::set<size_t> dirty_;  // roots to rescan once there is room
};

}  // namespace tripline::agent
