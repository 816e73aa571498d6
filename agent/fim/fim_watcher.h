// File integrity monitoring: a startup scan of the configured roots into an in-memory Baseline,
// then realtime changes from inotify, each compared with the baseline and reported as a FileEvent
// with the state before and after.
//
// What is reported:
//   CREATED / DELETED / MODIFIED (type, inode, size, sha256 or link target) / ATTRIB (mode, owner,
//   links) / RENAMED (IN_MOVED_FROM + IN_MOVED_TO paired by cookie; unpaired halves become DELETED
//   or CREATED). A write that leaves everything compared the same emits nothing.
//   AgentEvents: STARTED, BASELINE_COMPLETE, INOTIFY_OVERFLOW (followed by a rescan of every root
//   against the baseline and RESCAN_DONE), WATCH_LIMIT_REACHED / WATCH_ERROR naming the path.
//
// Invariants: a new directory is watched before it is listed, and everything found in it is
// reported CREATED, so `mkdir -p a/b/c && echo x > a/b/c/f` is never missed. Symlinks are never
// followed. Paths are bytes. Excluded entries (and excluded directories' subtrees) are neither
// recorded nor watched.
//
// Threads: Start() runs one FIM thread that owns everything here (baseline, inotify fd, watch
// table) and does the scanning and hashing; nothing is shared with other threads except the stop
// flag and the eventfd that wakes poll(). Idle, the thread sleeps in poll() with no timeout. `emit`
// is called on the FIM thread and may block (back-pressure from the batcher).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "agent/fim/file_state.h"
#include "platform/fs/inotify.h"
#include "platform/fs/unique_fd.h"
#include "platform/runtime/clock.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

struct FimRoot {
  std::string path;  // absolute, no trailing '/'
  bool recursive = true;
  std::vector<std::string> exclude;  // fnmatch globs: no '/' -> base name, with '/' -> full path
  int64_t max_hash_bytes = int64_t{64} << 20;
};

// True when `path` (whose last component is `base_name`) matches one of `globs`.
bool IsExcluded(const std::vector<std::string>& globs, const std::string& path,
                std::string_view base_name);

class FimWatcher {
 public:
  using EmitFn = std::function<void(tripline::v1::Event)>;

  // `clock` outlives the watcher. Events carry time_unix_ns; seq is left to the batcher.
  FimWatcher(std::vector<FimRoot> roots, const Clock& clock, EmitFn emit);
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
  enum class ScanMode { kBaseline, kReport };
  struct Watch {
    std::string path;
    size_t root;
  };

  void Run();
  void HandleEvents(std::vector<InotifyEvent>& events);
  void ScanTree(const std::string& start, size_t root, ScanMode mode,
                std::unordered_set<std::string>* seen);
  void Rescan();
  void Reconcile(const std::string& path, size_t root);
  void Report(const std::string& path, const FileStateRead& read);
  void Vanished(const std::string& path);
  void Renamed(const std::string& from, const std::string& to, size_t root);
  void ForgetSubtree(const std::string& dir, bool report);
  void AddWatch(const std::string& path, size_t root, bool is_dir);
  void RemoveWatchesUnder(const std::string& dir);
  void RekeyWatches(const std::string& from, const std::string& to);
  bool ExcludedIn(size_t root, const std::string& path) const;
  void EmitFile(tripline::v1::FileEvent::Change change, const std::string& path,
                const std::string& old_path, const tripline::v1::FileState* before,
                const tripline::v1::FileState* after, const std::string& note);
  void EmitAgent(tripline::v1::AgentEvent event);

  // Constant after construction.
  const std::vector<FimRoot> roots_;
  const Clock& clock_;
  const EmitFn emit_;

  // Shared with Stop() and RequestRescan(): their flags and the eventfd that wakes poll().
  std::atomic<bool> stop_{false};
  std::atomic<bool> rescan_requested_{false};
  UniqueFd wake_fd_;
  std::thread thread_;

  // Owned by the FIM thread (set up by Start() before the thread exists).
  std::optional<Inotify> inotify_;
  std::unordered_map<std::string, tripline::v1::FileState> baseline_;  // the Baseline
  std::unordered_map<int, Watch> watches_;
  std::unordered_map<std::string, int> watch_by_path_;
  uint64_t scan_files_ = 0;
  uint64_t scan_bytes_hashed_ = 0;
  int watch_failures_reported_ = 0;
};

}  // namespace tripline::agent
