#include "agent/fim/fim_watcher.h"

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "agent/fim/file_state.h"
#include "platform/fs/dir_walk.h"
#include "platform/runtime/errno_status.h"
#include "platform/runtime/logging.h"

namespace tripline::agent {
namespace {

using tripline::v1::AgentEvent;
using tripline::v1::FileEvent;
using tripline::v1::FileState;

constexpr uint32_t kWatchMask = IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE |
                                IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |
                                IN_EXCL_UNLINK;
// WATCH_* AgentEvents per run; beyond this they are only logged (a full watch table would
// otherwise produce one per directory).
constexpr int kMaxWatchFailureEvents = 32;
// How long to wait for the IN_MOVED_TO half of a rename that was cut off at the end of a read.
constexpr int kMovePairWaitMs = 10;
constexpr int64_t kNanosPerMs = 1000000;

bool IsDir(const FileState& s) { return (s.mode() & S_IFMT) == S_IFDIR; }

}  // namespace

FimWatcher::FimWatcher(std::vector<FimRoot> roots, const Clock& clock, EmitFn emit)
    : FimWatcher(std::move(roots), FimOptions{}, clock, std::move(emit)) {}

FimWatcher::FimWatcher(std::vector<FimRoot> roots, FimOptions options, const Clock& clock,
                       EmitFn emit)
    : roots_(std::move(roots)),
      options_(std::move(options)),
      clock_(clock),
      emit_(std::move(emit)) {}

FimWatcher::~FimWatcher() { Stop(); }

absl::Status FimWatcher::Start() {
  if (thread_.joinable()) return absl::FailedPreconditionError("fim: already started");
  absl::StatusOr<Inotify> ino = Inotify::Create();
  if (!ino.ok()) return ino.status();
  inotify_.emplace(*std::move(ino));
  int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) return ErrnoStatus(errno, "eventfd", "fim");
  wake_fd_.reset(efd);
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void FimWatcher::RequestRescan() {
  rescan_requested_.store(true);
  if (wake_fd_.valid()) {
    uint64_t one = 1;
    ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
    (void)n;
  }
}

void FimWatcher::Stop() {
  stop_.store(true);
  if (wake_fd_.valid()) {
    uint64_t one = 1;
    ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
    (void)n;  // a full counter still wakes poll()
  }
  if (thread_.joinable()) thread_.join();
}

ScanResult FimWatcher::ParallelScan(const std::vector<ScanStart>& starts) {
  TreeScanOptions opts;
  opts.threads = options_.threads;
  opts.cancel = &stop_;
  // Watch before list: whatever is created in a directory from now on produces an event.
  opts.on_directory = [this](size_t root, const std::string& dir) { AddWatch(dir, root, true); };
  for (const ScanStart& s : starts) {
    struct stat st;
    if (::lstat(s.path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode) &&
        s.path == roots_[s.root].path) {
      AddWatch(s.path, s.root, false);  // a root that is a single file
    }
  }
  ScanResult scan = ScanTrees(roots_, starts, opts);
  scan_files_ += scan.files.size();
  ReportScanErrors(scan.errors);
  EmitWatchFailures();
  return scan;
}

void FimWatcher::ReportScanErrors(const std::vector<ScanError>& errors) {
  for (const ScanError& e : errors) {
    spdlog::warn("fim: scan error path={} reason={}", Printable(e.path), e.message);
    if (watch_failures_reported_ < kMaxWatchFailureEvents) {
      ++watch_failures_reported_;
      AgentEvent ev;
      ev.set_kind(AgentEvent::WATCH_ERROR);
      ev.set_path(e.path);
      ev.set_message(e.message);
      EmitAgent(std::move(ev));
    }
  }
}

void FimWatcher::StartUp() {
  const int64_t t0 = clock_.MonotonicNanos();
  for (const FimRoot& r : roots_) {
    struct stat st;
    root_dev_.push_back(::lstat(r.path.c_str(), &st) == 0 ? st.st_dev : 0);
  }

  // The stored baseline, for the roots whose options have not changed since it was taken.
  std::vector<std::string> known;
  Baseline stored;
  if (!options_.baseline_path.empty()) {
    absl::StatusOr<std::unique_ptr<BaselineStore>> store =
        BaselineStore::Open(options_.baseline_path);
    absl::StatusOr<std::unordered_map<std::string, std::string>> fingerprints;
    absl::StatusOr<Baseline> loaded;
    if (store.ok()) fingerprints = (*store)->LoadRoots();
    if (store.ok() && fingerprints.ok()) {
      for (const FimRoot& r : roots_) {
        auto it = fingerprints->find(r.path);
        if (it != fingerprints->end() && it->second == RootFingerprint(r)) {
          known.push_back(r.path);
        } else if (it != fingerprints->end()) {
          spdlog::warn(
              "fim: options of root changed since its stored baseline; taking a new "
              "one path={}",
              Printable(r.path));
        }
      }
      loaded = (*store)->LoadScope(known);
    }
    absl::Status st = !store.ok()          ? store.status()
                      : !fingerprints.ok() ? fingerprints.status()
                                           : loaded.status();
    if (!st.ok()) {
      known.clear();
      UseInMemoryStore(st);
    } else {
      store_ = *std::move(store);
      stored = *std::move(loaded);
      EnsurePendingIds();
      // Events of the last run still pending go first, before this run's AgentEvents.
      absl::StatusOr<uint64_t> last = store_->MaxPendingId();
      if (last.ok()) last_pending_id_ = last_run_pending_ = *last;
      absl::StatusOr<std::vector<std::string>> dirty = store_->LoadDirty();
      if (dirty.ok() && !dirty->empty()) {
        spdlog::info(
            "fim: {} root(s) were left dirty by the last run (changes unreported while "
            "the spool had no room); the start-up scan covers them",
            dirty->size());
      }
    }
  } else {
    UseInMemoryStore(absl::OkStatus());
  }
  if (store_ == nullptr) return;  // not even an in-memory one: UseInMemoryStore said why

  ScanResult scan = ParallelScan(AllRoots(roots_));
  if (stop_.load()) return;
  std::vector<FileChange> diff;
  if (!known.empty()) diff = DiffBaseline(stored, scan, roots_, known);
  const size_t changes = diff.size();
  stored = Baseline();
  // The events reporting the differences are committed with the new baseline, as pending rows:
  // a crash loses both or neither.
  auto record_diff = [&] {
    for (const FileChange& c : diff) {
      if (c.kind == FileChange::kAdded) {
        EmitFile(FileEvent::CREATED, c.path, "", nullptr, &c.after, c.note);
      } else if (c.kind == FileChange::kRemoved) {
        EmitFile(FileEvent::DELETED, c.path, "", &c.before, nullptr, "");
      } else {
        EmitFile(c.content ? FileEvent::MODIFIED : FileEvent::ATTRIB, c.path, "", &c.before,
                 &c.after, c.note);
      }
    }
  };
  record_diff();
  absl::Status stored_st = store_->Replace(roots_, scan.files, clock_.NowUnixNanos());
  if (!stored_st.ok()) {
    UseInMemoryStore(stored_st);
    if (store_ == nullptr) return;
    record_diff();
    stored_st = store_->Replace(roots_, scan.files, clock_.NowUnixNanos());
    if (!stored_st.ok()) {
      spdlog::error("fim: no baseline can be kept, realtime monitoring stopped: {}",
                    std::string(stored_st.message()));
      store_.reset();
      return;
    }
  }

  AgentEvent done;
  done.set_kind(AgentEvent::BASELINE_COMPLETE);
  done.set_files(scan.files.size());
  done.set_bytes_hashed(scan.bytes_hashed);
  done.set_duration_ns(clock_.MonotonicNanos() - t0);
  done.set_message(known.empty()
                       ? std::string("new baseline")
                       : absl::StrFormat("%d changes since the stored baseline", changes));
  spdlog::info(
      "fim: baseline complete files={} bytes_hashed={} watches={} changes_while_down={} "
      "duration_ms={}",
      scan.files.size(), scan.bytes_hashed, watches_.size(), changes,
      done.duration_ns() / kNanosPerMs);
  EmitAgent(std::move(done));
  next_fallback_scan_ns_ =
      clock_.MonotonicNanos() + options_.fallback_scan_interval_ms * kNanosPerMs;
  scan = ScanResult();
  diff = {};
  ReleaseScanMemory();
}

void FimWatcher::UseInMemoryStore(const absl::Status& why) {
  store_.reset();
  if (!why.ok()) {
    spdlog::error("fim: baseline file unusable, keeping the baseline in memory only: {}",
                  std::string(why.message()));
    AgentEvent ev;
    ev.set_kind(AgentEvent::CONFIG_ERROR);
    ev.set_path(options_.baseline_path);
    ev.set_message(absl::StrFormat(
        "baseline file unusable (%s): changes made while the agent is down will not be reported",
        std::string(why.message())));
    EmitAgent(std::move(ev));
  }
  absl::StatusOr<std::unique_ptr<BaselineStore>> mem = BaselineStore::OpenInMemory();
  if (!mem.ok()) {
    spdlog::error("fim: no in-memory baseline either, realtime monitoring stopped: {}",
                  std::string(mem.status().message()));
    AgentEvent ev;
    ev.set_kind(AgentEvent::CONFIG_ERROR);
    ev.set_message(absl::StrFormat("no baseline can be kept (%s): file monitoring stopped",
                                   std::string(mem.status().message())));
    EmitAgent(std::move(ev));
    return;
  }
  store_ = *std::move(mem);
  EnsurePendingIds();
}

void FimWatcher::EnsurePendingIds() {
  if (options_.delivery == nullptr) return;
  // Ids the ledger may still name must never be given again (a baseline file made afresh).
  absl::Status st = store_->EnsurePendingIdsAbove(options_.delivery->max_known_id());
  if (!st.ok()) spdlog::error("fim: {}", std::string(st.message()));
}

void FimWatcher::ReleaseScanMemory() {
  // A scan's results and its workers' malloc arenas are freed but kept by the allocator; an
  // agent that then idles for days should not hold them.
  ::malloc_trim(0);
}

int FimWatcher::PollTimeoutMs() const {
  int64_t due = INT64_MAX;
  for (const auto& [path, p] : pending_writes_) due = std::min(due, p.due_ns);
  if (!unwatched_.empty()) due = std::min(due, next_fallback_scan_ns_);
  if (undelivered_) due = std::min(due, clock_.MonotonicNanos() + options_.retry_ms * kNanosPerMs);
  if (due == INT64_MAX) return -1;
  const int64_t wait = due - clock_.MonotonicNanos();
  if (wait <= 0) return 0;
  return static_cast<int>(std::min<int64_t>((wait + kNanosPerMs - 1) / kNanosPerMs, 3600000));
}

void FimWatcher::Run() {
  StartUp();
  if (store_ == nullptr) {     // stopped during the scan, or no baseline could be kept
    OfferBacklog(UINT64_MAX);  // what went wrong
    return;
  }
  FlushStore();
  std::vector<InotifyEvent> events;
  while (!stop_.load()) {
    struct pollfd fds[2] = {{inotify_->fd(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, PollTimeoutMs());
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("fim: poll failed, realtime monitoring stopped: {}",
                    std::string(ErrnoStatus(errno, "poll", "inotify").message()));
      return;
    }
    if (stop_.load()) break;
    if ((fds[1].revents & POLLIN) != 0) {
      uint64_t count = 0;
      ssize_t r = ::read(wake_fd_.get(), &count, sizeof(count));
      (void)r;  // EAGAIN: someone else drained it; the flags say what to do
    }
    if (rescan_requested_.exchange(false)) {
      spdlog::info("fim: rescan requested");
      if (congested_) {
        MarkAllDirty();
      } else {
        Rescan();
      }
    }
    if ((fds[0].revents & POLLIN) != 0) {
      events.clear();
      absl::Status st = inotify_->ReadEvents(&events);
      if (!st.ok()) spdlog::error("fim: {}", std::string(st.message()));
      HandleEvents(events);
    }
    FlushDueWrites(/*all=*/false);
    if (!congested_ && !unwatched_.empty() && clock_.MonotonicNanos() >= next_fallback_scan_ns_) {
      FallbackScan();
    }
    FlushStore();
    if (!congested_ && !undelivered_ && !dirty_.empty() && !stop_.load()) {
      RescanRoots(std::vector<size_t>(dirty_.begin(), dirty_.end()), /*dirty=*/true);
    }
  }
  FlushStore();
}

void FimWatcher::FlushDueWrites(bool all) {
  if (pending_writes_.empty()) return;
  const int64_t now = clock_.MonotonicNanos();
  std::vector<std::pair<std::string, size_t>> due;
  for (auto it = pending_writes_.begin(); it != pending_writes_.end();) {
    if (all || it->second.due_ns <= now) {
      due.emplace_back(it->first, it->second.root);
      it = pending_writes_.erase(it);
    } else {
      ++it;
    }
  }
  std::sort(due.begin(), due.end());
  for (const auto& [path, root] : due) {
    if (congested_) {
      MarkDirty(root);
    } else {
      Reconcile(path, root);
    }
  }
}

void FimWatcher::HandleEvents(std::vector<InotifyEvent>& events) {
  bool overflow = false;
  for (size_t i = 0; i < events.size() && !stop_.load(); ++i) {
    const InotifyEvent ev = events[i];  // copy: `events` may grow below
    if ((ev.mask & IN_Q_OVERFLOW) != 0) {
      overflow = true;
      continue;
    }
    auto wit = watches_.find(ev.wd);
    if (wit == watches_.end()) continue;  // a watch we already dropped
    if ((ev.mask & IN_IGNORED) != 0) {
      auto pit = watch_by_path_.find(wit->second.path);
      if (pit != watch_by_path_.end() && pit->second == ev.wd) watch_by_path_.erase(pit);
      watches_.erase(wit);
      continue;
    }
    const Watch w = wit->second;
    const FimRoot& root = roots_[w.root];
    if (congested_) {  // no room to report it: the root's rescan will
      MarkDirty(w.root);
      continue;
    }

    if (ev.name.empty()) {                // about the watched directory (or file root) itself
      if (w.path != root.path) continue;  // a subdirectory: its parent's events cover it
      if ((ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF)) != 0) {
        spdlog::warn("fim: watched root removed or moved path={}", Printable(root.path));
        AgentEvent gone;
        gone.set_kind(AgentEvent::WATCH_ERROR);
        gone.set_path(root.path);
        gone.set_message("watched root was removed or moved; it is no longer watched");
        EmitAgent(std::move(gone));
        RemoveWatchesUnder(root.path);
        Vanished(root.path);
      } else if ((ev.mask & IN_MODIFY) != 0) {
        auto [it, fresh] = pending_writes_.try_emplace(root.path, PendingWrite{w.root, 0, 0});
        const int64_t now = clock_.MonotonicNanos();
        if (fresh) it->second.first_ns = now;
        it->second.due_ns = std::min(now + options_.debounce_ms * kNanosPerMs,
                                     it->second.first_ns + options_.debounce_max_ms * kNanosPerMs);
      } else {
        pending_writes_.erase(root.path);
        Reconcile(root.path, w.root);
      }
      continue;
    }

    const std::string path = JoinPath(w.path, ev.name);
    const bool excluded = IsExcluded(root.exclude, path, ev.name);
    if ((ev.mask & IN_MOVED_FROM) != 0) {
      pending_writes_.erase(path);
      if (i + 1 == events.size()) {
        // The IN_MOVED_TO half may not have been read yet: wait briefly for it.
        struct pollfd pfd = {inotify_->fd(), POLLIN, 0};
        if (::poll(&pfd, 1, kMovePairWaitMs) > 0) inotify_->ReadEvents(&events).IgnoreError();
      }
      if (i + 1 < events.size() && (events[i + 1].mask & IN_MOVED_TO) != 0 &&
          events[i + 1].cookie == ev.cookie) {
        const InotifyEvent to = events[++i];
        auto tit = watches_.find(to.wd);
        if (tit == watches_.end()) {
          if (!excluded) Vanished(path);
          continue;
        }
        const size_t to_root = tit->second.root;
        const std::string to_path = JoinPath(tit->second.path, to.name);
        const bool to_excluded = IsExcluded(roots_[to_root].exclude, to_path, to.name);
        pending_writes_.erase(to_path);
        if (excluded && to_excluded) continue;
        if (excluded) {
          Reconcile(to_path, to_root);
        } else if (to_excluded) {
          Vanished(path);
        } else {
          Renamed(path, to_path, to_root);
        }
      } else if (!excluded) {
        Vanished(path);
      }
      continue;
    }
    if (excluded) continue;
    if ((ev.mask & IN_MODIFY) != 0 && (ev.mask & ~(IN_MODIFY | IN_ISDIR)) == 0) {
      // Debounce: read the file when the writes pause (or at the latest debounce_max_ms after
      // the first), unless IN_CLOSE_WRITE comes first.
      auto [it, fresh] = pending_writes_.try_emplace(path, PendingWrite{w.root, 0, 0});
      const int64_t now = clock_.MonotonicNanos();
      if (fresh) it->second.first_ns = now;
      it->second.due_ns = std::min(now + options_.debounce_ms * kNanosPerMs,
                                   it->second.first_ns + options_.debounce_max_ms * kNanosPerMs);
      continue;
    }
    pending_writes_.erase(path);
    Reconcile(path, w.root);
  }
  if (overflow && !stop_.load()) {
    spdlog::warn("fim: inotify queue overflowed; rescanning all roots");
    AgentEvent ov;
    ov.set_kind(AgentEvent::INOTIFY_OVERFLOW);
    ov.set_message("inotify event queue overflowed; rescanning every root against the baseline");
    EmitAgent(std::move(ov));
    if (congested_) {
      MarkAllDirty();
    } else {
      Rescan();
    }
  }
}

void FimWatcher::ScanTree(const std::string& start, size_t root) {
  const FimRoot& r = roots_[root];
  auto visit = [&](const WalkEntry& e) {
    if (stop_.load()) return WalkAction::kSkip;
    const bool is_root = e.path == r.path;
    if (!is_root && IsExcluded(r.exclude, e.path, e.name)) return WalkAction::kSkip;
    const bool is_dir = S_ISDIR(e.st.st_mode);
    bool descend = is_dir && (is_root || r.recursive);
    if (descend && r.one_filesystem && root < root_dev_.size() && e.st.st_dev != root_dev_[root]) {
      descend = false;
    }
    // Watch before listing: anything created from now on produces an event.
    if (descend || (is_root && !is_dir)) AddWatch(e.path, root, is_dir);
    FileStateRead read =
        ReadFileStateAt(e.dir_fd, e.name, r.max_hash_bytes, &e.st, (r.attrs & kAttrSha256) != 0);
    ++scan_files_;
    Report(e.path, root, read);
    return descend ? WalkAction::kContinue : WalkAction::kSkip;
  };
  auto on_error = [&](const std::string& path, const absl::Status& st) {
    ReportScanErrors({ScanError{path, std::string(st.message())}});
  };
  absl::Status st = WalkTree(start, WalkOptions{.recursive = r.recursive}, visit, on_error);
  if (!st.ok() && st.code() != absl::StatusCode::kNotFound) on_error(start, st);
  EmitWatchFailures();
}

void FimWatcher::ApplyChanges(const std::vector<FileChange>& changes,
                              std::vector<std::string>* removed_dirs) {
  for (const FileChange& c : changes) {
    if (c.kind == FileChange::kAdded) {
      Put(c.path, c.after);
      EmitFile(FileEvent::CREATED, c.path, "", nullptr, &c.after, c.note);
    } else if (c.kind == FileChange::kRemoved) {
      Erase(c.path);
      if (IsDir(c.before) && removed_dirs != nullptr) removed_dirs->push_back(c.path);
      EmitFile(FileEvent::DELETED, c.path, "", &c.before, nullptr, "");
    } else {
      Put(c.path, c.after);
      EmitFile(c.content ? FileEvent::MODIFIED : FileEvent::ATTRIB, c.path, "", &c.before, &c.after,
               c.note);
    }
  }
}

void FimWatcher::Rescan() {
  std::vector<size_t> all;
  for (size_t i = 0; i < roots_.size(); ++i) all.push_back(i);
  RescanRoots(all, /*dirty=*/false);
}

void FimWatcher::RescanRoots(const std::vector<size_t>& which, bool dirty) {
  const int64_t t0 = clock_.MonotonicNanos();
  std::vector<ScanStart> starts;
  std::vector<std::string> scope;
  for (size_t i : which) {
    starts.push_back(ScanStart{i, roots_[i].path});
    scope.push_back(roots_[i].path);
  }
  for (auto it = pending_writes_.begin(); it != pending_writes_.end();) {  // read anyway
    it = std::find(which.begin(), which.end(), it->second.root) != which.end()
             ? pending_writes_.erase(it)
             : std::next(it);
  }
  ScanResult scan = ParallelScan(starts);
  if (stop_.load()) return;
  std::vector<FileChange> changes;
  {
    absl::StatusOr<Baseline> before = LoadScope(scope);
    if (!before.ok()) return;
    changes = DiffBaseline(*before, scan, roots_, scope);
  }
  std::vector<std::string> removed_dirs;
  ApplyChanges(changes, &removed_dirs);
  for (const std::string& d : removed_dirs) RemoveWatchesUnder(d);
  if (dirty) {
    for (size_t i : which) {
      dirty_.erase(i);
      if (absl::Status st = store_->ClearDirty(roots_[i].path); !st.ok()) {
        spdlog::error("fim: {}", std::string(st.message()));
      }
    }
  }
  AgentEvent done;
  done.set_kind(AgentEvent::RESCAN_DONE);
  done.set_files(scan.files.size());
  done.set_bytes_hashed(scan.bytes_hashed);
  done.set_duration_ns(clock_.MonotonicNanos() - t0);
  if (dirty) {
    std::vector<std::string> names;
    for (size_t i : which) names.push_back(roots_[i].path);
    if (which.size() == 1) done.set_path(roots_[which[0]].path);
    done.set_message(absl::StrFormat(
        "%d changes found rescanning %d root(s) marked dirty while the spool had no room for "
        "their events (%s)",
        changes.size(), which.size(), Printable(absl::StrJoin(names, ", "))));
  } else {
    done.set_message(absl::StrFormat("%d changes found", changes.size()));
  }
  spdlog::info("fim: rescan done roots={} files={} changes={} dirty={}", which.size(), done.files(),
               changes.size(), dirty);
  EmitAgent(std::move(done));
  scan = ScanResult();
  changes = {};
  FlushStore();
  ReleaseScanMemory();
}

void FimWatcher::FallbackScan() {
  // Scan each unwatched directory (not those inside another one), trying its watch again.
  std::vector<ScanStart> starts;
  std::vector<std::string> scope;
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    std::string last;
    for (const auto& [path, root] : unwatched_) {
      if (!last.empty() && IsUnder(path, last)) continue;
      starts.push_back(ScanStart{root, path});
      scope.push_back(path);
      last = path;
    }
    unwatched_.clear();  // AddWatch puts back what still fails
  }
  ScanResult scan = ParallelScan(starts);
  if (stop_.load()) return;
  std::vector<FileChange> changes;
  {
    absl::StatusOr<Baseline> before = LoadScope(scope);
    if (!before.ok()) return;
    changes = DiffBaseline(*before, scan, roots_, scope);
  }
  std::vector<std::string> removed_dirs;
  ApplyChanges(changes, &removed_dirs);
  for (const std::string& d : removed_dirs) RemoveWatchesUnder(d);
  spdlog::debug("fim: fallback scan of unwatched directories starts={} files={} changes={}",
                starts.size(), scan.files.size(), changes.size());
  next_fallback_scan_ns_ =
      clock_.MonotonicNanos() + options_.fallback_scan_interval_ms * kNanosPerMs;
}

void FimWatcher::Reconcile(const std::string& path, size_t root) {
  const FimRoot& r = roots_[root];
  FileStateRead read = ReadFileStateAt(AT_FDCWD, path.c_str(), r.max_hash_bytes, nullptr,
                                       (r.attrs & kAttrSha256) != 0);
  if (read.exists && IsDir(read.state) && (path == r.path || r.recursive) &&
      watch_by_path_.count(path) == 0) {
    // A directory we do not watch yet: watch it, then report it and everything in it.
    ScanTree(path, root);
    return;
  }
  Report(path, root, read);
}

void FimWatcher::Report(const std::string& path, size_t root, const FileStateRead& read) {
  std::optional<FileState> known = Lookup(path);
  if (!read.exists) {
    if (!known.has_value()) return;  // came and went unseen: nothing to compare
    Vanished(path);
    return;
  }
  if (!known.has_value()) {
    Put(path, read.state);
    EmitFile(FileEvent::CREATED, path, "", nullptr, &read.state, read.note);
    if (!IsDir(read.state) && read.state.nlink() > 1) ReconcileHardLinks(path, read.state);
    return;
  }
  StateChange change = CompareStates(*known, read.state, roots_[root].attrs);
  FileState before = *std::move(known);
  Put(path, read.state);  // timestamps move on even when nothing is reported
  if (change == StateChange::kNone) return;
  EmitFile(change == StateChange::kContent ? FileEvent::MODIFIED : FileEvent::ATTRIB, path, "",
           &before, &read.state, read.note);
  if (IsDir(before) && !IsDir(read.state)) {
    RemoveWatchesUnder(path);
    ForgetSubtree(path, /*report=*/true);
  }
}

void FimWatcher::ReconcileHardLinks(const std::string& path, const FileState& state) {
  // A link count changes on the inode, and inotify tells only watches of that inode, not of the
  // directories holding its other names: look for them here.
  std::vector<std::string> others;
  absl::StatusOr<std::vector<std::pair<std::string, FileState>>> same =
      store_->FindInode(state.device(), state.inode());
  if (!same.ok()) {
    spdlog::error("fim: reading the baseline: {}", std::string(same.status().message()));
    return;
  }
  for (const auto& [p, s] : *same) {
    if (p != path && !IsDir(s)) others.push_back(p);
  }
  for (const std::string& p : others) {
    for (size_t root = 0; root < roots_.size(); ++root) {
      if (IsAtOrUnder(p, roots_[root].path)) {
        Reconcile(p, root);
        break;
      }
    }
  }
}

void FimWatcher::Vanished(const std::string& path) {
  std::optional<FileState> known = Lookup(path);
  if (known.has_value()) {
    FileState before = *std::move(known);
    Erase(path);
    EmitFile(FileEvent::DELETED, path, "", &before, nullptr, "");
    if (!IsDir(before) && before.nlink() > 1) ReconcileHardLinks(path, before);
  }
  RemoveWatchesUnder(path);
  ForgetSubtree(path, /*report=*/true);
}

void FimWatcher::Renamed(const std::string& from, const std::string& to, size_t root) {
  const FimRoot& r = roots_[root];
  std::optional<FileState> known = Lookup(from);
  if (!known.has_value()) {  // we never knew the old name: this is news at the new one
    Reconcile(to, root);
    return;
  }
  FileStateRead read = ReadFileStateAt(AT_FDCWD, to.c_str(), r.max_hash_bytes, nullptr,
                                       (r.attrs & kAttrSha256) != 0);
  if (!read.exists) {  // already gone again
    Vanished(from);
    return;
  }
  FileState before = *std::move(known);
  Erase(from);
  std::string note = read.note;
  if (Lookup(to).has_value() && !IsDir(read.state)) {
    note = note.empty() ? "replaced an existing file" : note + "; replaced an existing file";
  }
  Put(to, read.state);
  if (IsDir(before)) {
    // The subtree moves with its directory: re-key what we know and where we watch.
    std::vector<std::pair<std::string, FileState>> moved = Under(from);
    for (auto& [p, s] : moved) {
      Erase(p);
      Put(to + p.substr(from.size()), s);
    }
    RekeyWatches(from, to);
  }
  EmitFile(FileEvent::RENAMED, to, from, &before, &read.state, note);
  if (IsDir(read.state) && r.recursive && watch_by_path_.count(to) == 0) {
    ScanTree(to, root);  // e.g. moved from a non-recursive root
  }
}

void FimWatcher::ForgetSubtree(const std::string& dir, bool report) {
  for (auto& [path, before] : Under(dir)) {
    Erase(path);
    pending_writes_.erase(path);
    if (report) EmitFile(FileEvent::DELETED, path, "", &before, nullptr, "");
  }
}

void FimWatcher::AddWatch(const std::string& path, size_t root, bool is_dir) {
  std::lock_guard<std::mutex> lock(watch_mu_);
  absl::StatusOr<int> wd;
  const bool capped = options_.max_watches > 0 &&
                      watches_.size() >= static_cast<size_t>(options_.max_watches) &&
                      watch_by_path_.count(path) == 0;
  if (capped) {
    wd = absl::ResourceExhaustedError(
        absl::StrFormat("inotify_add_watch %s: the agent's max_watches (%d) is reached", path,
                        options_.max_watches));
  } else {
    wd = inotify_->AddWatch(path, kWatchMask | (is_dir ? IN_ONLYDIR : 0));
  }
  if (!wd.ok()) {
    if (absl::IsNotFound(wd.status())) return;  // vanished under us; its parent reports that
    if (absl::IsResourceExhausted(wd.status())) unwatched_[path] = root;
    watch_failures_.emplace_back(path, wd.status());
    return;
  }
  unwatched_.erase(path);
  auto old = watches_.find(*wd);
  if (old != watches_.end() && old->second.path != path) watch_by_path_.erase(old->second.path);
  watches_[*wd] = Watch{path, root};
  watch_by_path_[path] = *wd;
}

void FimWatcher::EmitWatchFailures() {
  std::vector<std::pair<std::string, absl::Status>> failures;
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    failures.swap(watch_failures_);
  }
  std::sort(failures.begin(), failures.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string last_limit;
  for (const auto& [path, st] : failures) {
    const bool limit = absl::IsResourceExhausted(st);
    if (limit) {
      // One event per unwatched subtree, once: its subdirectories are covered by the same scan.
      if (!last_limit.empty() && IsUnder(path, last_limit)) continue;
      last_limit = path;
      if (!limit_reported_.insert(path).second) continue;
    }
    spdlog::warn("fim: {} path={} reason={}", limit ? "watch limit reached" : "watch failed",
                 Printable(path), std::string(st.message()));
    if (!limit && watch_failures_reported_ >= kMaxWatchFailureEvents) continue;
    if (!limit) ++watch_failures_reported_;
    AgentEvent ev;
    ev.set_kind(limit ? AgentEvent::WATCH_LIMIT_REACHED : AgentEvent::WATCH_ERROR);
    ev.set_path(path);
    ev.set_message(limit ? absl::StrFormat("%s; changes in this subtree are found by a scan every "
                                           "%d ms instead of in real time",
                                           std::string(st.message()),
                                           options_.fallback_scan_interval_ms)
                         : std::string(st.message()));
    EmitAgent(std::move(ev));
  }
}

void FimWatcher::RemoveWatchesUnder(const std::string& dir) {
  std::lock_guard<std::mutex> lock(watch_mu_);
  for (auto it = watches_.begin(); it != watches_.end();) {
    if (IsAtOrUnder(it->second.path, dir)) {
      inotify_->RemoveWatch(it->first);
      watch_by_path_.erase(it->second.path);
      it = watches_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = unwatched_.begin(); it != unwatched_.end();) {
    it = IsAtOrUnder(it->first, dir) ? unwatched_.erase(it) : std::next(it);
  }
}

void FimWatcher::RekeyWatches(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> lock(watch_mu_);
  for (auto& [wd, w] : watches_) {
    if (IsAtOrUnder(w.path, from)) {
      watch_by_path_.erase(w.path);
      w.path = to + w.path.substr(from.size());
      watch_by_path_[w.path] = wd;
    }
  }
  std::vector<std::pair<std::string, size_t>> moved;
  for (auto it = unwatched_.begin(); it != unwatched_.end();) {
    if (IsAtOrUnder(it->first, from)) {
      moved.emplace_back(to + it->first.substr(from.size()), it->second);
      it = unwatched_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [p, r] : moved) unwatched_[p] = r;
}

std::optional<FileState> FimWatcher::Lookup(const std::string& path) {
  absl::StatusOr<std::optional<FileState>> got = store_->Get(path);
  if (!got.ok()) {
    // Reported as new rather than dropped: nothing is lost, at worst said twice.
    spdlog::error("fim: reading the baseline path={}: {}", Printable(path),
                  std::string(got.status().message()));
    return std::nullopt;
  }
  return *std::move(got);
}

std::vector<std::pair<std::string, FileState>> FimWatcher::Under(const std::string& dir) {
  absl::StatusOr<std::vector<std::pair<std::string, FileState>>> got = store_->ListUnder(dir);
  if (!got.ok()) {
    spdlog::error("fim: reading the baseline under path={}: {}", Printable(dir),
                  std::string(got.status().message()));
    return {};
  }
  return *std::move(got);
}

absl::StatusOr<Baseline> FimWatcher::LoadScope(const std::vector<std::string>& scope) {
  FlushStore();
  absl::StatusOr<Baseline> got = store_->LoadScope(scope);
  if (!got.ok()) {
    spdlog::error("fim: reading the baseline for a rescan: {}", std::string(got.status().message()));
  }
  return got;
}

void FimWatcher::Put(const std::string& path, const FileState& state) {
  absl::Status st = store_->Put(path, state);
  if (!st.ok()) {
    spdlog::error("fim: updating the baseline path={}: {}", Printable(path),
                  std::string(st.message()));
  }
}

void FimWatcher::Erase(const std::string& path) {
  absl::Status st = store_->Erase(path);
  if (!st.ok()) {
    spdlog::error("fim: updating the baseline path={}: {}", Printable(path),
                  std::string(st.message()));
  }
}

void FimWatcher::FlushStore() {
  if (store_ == nullptr) return;
  const uint64_t delivered = options_.delivery == nullptr ? handed_through_
                             : delivery_ready_            ? options_.delivery->delivered_through()
                                                          : 0;
  if (delivered > erased_through_) {
    if (absl::Status st = store_->ErasePendingThrough(delivered); st.ok()) {
      erased_through_ = delivered;
    } else {
      spdlog::error("fim: forgetting delivered changes: {}", std::string(st.message()));
    }
  }
  absl::Status st = store_->Commit();
  if (!st.ok()) {
    // Rolled back: the baseline and the pending events of these changes both; the next start's
    // diff finds them.
    spdlog::error("fim: updating the baseline file: {}", std::string(st.message()));
  }
  Deliver();
}

void FimWatcher::Deliver() {
  undelivered_ = false;
  if (options_.delivery != nullptr && !delivery_ready_) {
    if (!options_.delivery->recovered()) {  // the chain head is not known yet
      undelivered_ = true;
      return;
    }
    // Pending rows of the last run up to here are in batches that landed; the others go again.
    handed_through_ = std::max(handed_through_, options_.delivery->delivered_through());
    delivery_ready_ = true;
    if (last_run_pending_ > handed_through_) {
      spdlog::info(
          "fim: changes of the last run whose events did not land are reported again "
          "pending_ids={}..{}",
          handed_through_ + 1, last_run_pending_);
    }
  }
  constexpr size_t kRowsPerRead = 256;
  for (;;) {
    absl::StatusOr<std::vector<std::pair<uint64_t, tripline::v1::Event>>> rows =
        store_->PendingAfter(handed_through_, kRowsPerRead);
    if (!rows.ok()) {
      spdlog::error("fim: reading pending events: {}", std::string(rows.status().message()));
      rows = std::vector<std::pair<uint64_t, tripline::v1::Event>>();
    }
    if (rows->empty()) break;
    for (const auto& [id, ev] : *rows) {
      if (!OfferBacklog(id)) return;
      if (options_.delivery != nullptr) options_.delivery->Offering(id, ev.time_unix_ns());
      if (!Offer(ev)) {
        if (options_.delivery != nullptr) options_.delivery->Withdraw(id);
        return;
      }
      handed_through_ = id;
    }
  }
  if (!OfferBacklog(UINT64_MAX)) return;
  if (congested_) {
    spdlog::info("fim: room for events again; rescanning the roots marked dirty dirty_roots={}",
                 dirty_.size());
    congested_ = false;
  }
}

bool FimWatcher::OfferBacklog(uint64_t before_id) {
  while (!agent_backlog_.empty() && agent_backlog_.front().first < before_id) {
    if (!Offer(agent_backlog_.front().second)) return false;
    agent_backlog_.pop_front();
  }
  return true;
}

bool FimWatcher::Offer(const tripline::v1::Event& ev) {
  if (!options_.offer) {
    emit_(ev);
    return true;
  }
  if (options_.offer(ev)) return true;
  undelivered_ = true;
  if (!congested_) {
    spdlog::warn(
        "fim: no room for events (the spool refuses: at its cap or unwritable); changes "
        "already found wait, new ones mark their root dirty for a rescan");
  }
  congested_ = true;
  return false;
}

void FimWatcher::Record(tripline::v1::Event ev) {
  absl::StatusOr<uint64_t> id = store_ != nullptr
                                    ? store_->AddPending(ev)
                                    : absl::StatusOr<uint64_t>(absl::InternalError("no baseline"));
  if (id.ok()) {
    last_pending_id_ = *id;
    return;
  }
  // Sent from memory: a crash before it is taken may lose it.
  spdlog::error("fim: cannot store a pending event: {}", std::string(id.status().message()));
  agent_backlog_.emplace_back(last_pending_id_, std::move(ev));
}

void FimWatcher::MarkDirty(size_t root) {
  if (!dirty_.insert(root).second) return;
  spdlog::warn("fim: root marked dirty, rescanned once the spool has room path={}",
               Printable(roots_[root].path));
  if (absl::Status st = store_->MarkDirty(roots_[root].path); !st.ok()) {
    spdlog::error("fim: {}", std::string(st.message()));
  }
}

void FimWatcher::MarkAllDirty() {
  for (size_t i = 0; i < roots_.size(); ++i) MarkDirty(i);
}

tripline::v1::Event FimWatcher::MakeFileEvent(FileEvent::Change change, const std::string& path,
                                              const std::string& old_path, const FileState* before,
                                              const FileState* after,
                                              const std::string& note) const {
  tripline::v1::Event ev;
  ev.set_time_unix_ns(clock_.NowUnixNanos());
  FileEvent* f = ev.mutable_file();
  f->set_path(path);
  f->set_change(change);
  if (!old_path.empty()) f->set_old_path(old_path);
  if (before != nullptr) *f->mutable_before() = *before;
  if (after != nullptr) *f->mutable_after() = *after;
  if (!note.empty()) f->set_note(note);
  spdlog::debug("fim: {} path={}{}", FileEvent::Change_Name(change), Printable(path),
                old_path.empty() ? "" : " old_path=" + Printable(old_path));
  return ev;
}

void FimWatcher::EmitFile(FileEvent::Change change, const std::string& path,
                          const std::string& old_path, const FileState* before,
                          const FileState* after, const std::string& note) {
  Record(MakeFileEvent(change, path, old_path, before, after, note));
}

void FimWatcher::EmitAgent(AgentEvent event) {
  tripline::v1::Event ev;
  ev.set_time_unix_ns(clock_.NowUnixNanos());
  *ev.mutable_agent() = std::move(event);
  agent_backlog_.emplace_back(last_pending_id_, std::move(ev));
}

}  // namespace tripline::agent
