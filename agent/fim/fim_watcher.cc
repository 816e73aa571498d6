#include "agent/fim/fim_watcher.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "agent/fim/file_state.h"
#include "platform/fs/dir_walk.h"
#include "platform/runtime/errno_status.h"
#include "platform/runtime/logging.h"

namespace tripline::agent {
namespace {

using tripline::v1::AgentEvent;
using tripline::v1::FileEvent;
using tripline::v1::FileState;

constexpr uint32_t kWatchMask = IN_CLOSE_WRITE | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_EXCL_UNLINK;
// WATCH_* AgentEvents per run; beyond this they are only logged (a full watch table would
// otherwise produce one per directory).
constexpr int kMaxWatchFailureEvents = 32;
// How long to wait for the IN_MOVED_TO half of a rename that was cut off at the end of a read.
constexpr int kMovePairWaitMs = 10;

bool IsUnder(const std::string& path, const std::string& dir) {
  if (dir == "/") return path.size() > 1 && path[0] == '/';
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

bool IsDir(const FileState& s) { return (s.mode() & S_IFMT) == S_IFDIR; }

}  // namespace

bool IsExcluded(const std::vector<std::string>& globs, const std::string& path,
                std::string_view base_name) {
  const std::string base(base_name);
  for (const std::string& glob : globs) {
    const bool full = glob.find('/') != std::string::npos;
    if (::fnmatch(glob.c_str(), full ? path.c_str() : base.c_str(), 0) == 0) return true;
  }
  return false;
}

FimWatcher::FimWatcher(std::vector<FimRoot> roots, const Clock& clock, EmitFn emit)
    : roots_(std::move(roots)), clock_(clock), emit_(std::move(emit)) {}

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

void FimWatcher::Run() {
  const int64_t t0 = clock_.MonotonicNanos();
  for (size_t i = 0; i < roots_.size() && !stop_.load(); ++i) {
    ScanTree(roots_[i].path, i, ScanMode::kBaseline, nullptr);
  }
  if (stop_.load()) return;
  AgentEvent done;
  done.set_kind(AgentEvent::BASELINE_COMPLETE);
  done.set_files(scan_files_);
  done.set_bytes_hashed(scan_bytes_hashed_);
  done.set_duration_ns(clock_.MonotonicNanos() - t0);
  spdlog::info("fim: baseline complete files={} bytes_hashed={} watches={} duration_ms={}",
               scan_files_, scan_bytes_hashed_, watches_.size(), done.duration_ns() / 1000000);
  EmitAgent(std::move(done));

  std::vector<InotifyEvent> events;
  while (!stop_.load()) {
    struct pollfd fds[2] = {{inotify_->fd(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("fim: poll failed, realtime monitoring stopped: {}",
                    std::string(ErrnoStatus(errno, "poll", "inotify").message()));
      return;
    }
    if (stop_.load()) return;
    if ((fds[1].revents & POLLIN) != 0) {
      uint64_t count = 0;
      ssize_t r = ::read(wake_fd_.get(), &count, sizeof(count));
      (void)r;  // EAGAIN: someone else drained it; the flags say what to do
    }
    if (rescan_requested_.exchange(false)) {
      spdlog::info("fim: rescan requested");
      Rescan();
    }
    if ((fds[0].revents & POLLIN) == 0) continue;
    events.clear();
    absl::Status st = inotify_->ReadEvents(&events);
    if (!st.ok()) spdlog::error("fim: {}", std::string(st.message()));
    HandleEvents(events);
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
      } else {
        Reconcile(root.path, w.root);
      }
      continue;
    }

    const std::string path = JoinPath(w.path, ev.name);
    const bool excluded = IsExcluded(root.exclude, path, ev.name);
    if ((ev.mask & IN_MOVED_FROM) != 0) {
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
    Reconcile(path, w.root);
  }
  if (overflow && !stop_.load()) {
    spdlog::warn("fim: inotify queue overflowed; rescanning all roots");
    AgentEvent ov;
    ov.set_kind(AgentEvent::INOTIFY_OVERFLOW);
    ov.set_message("inotify event queue overflowed; rescanning every root against the baseline");
    EmitAgent(std::move(ov));
    Rescan();
  }
}

void FimWatcher::ScanTree(const std::string& start, size_t root, ScanMode mode,
                          std::unordered_set<std::string>* seen) {
  const FimRoot& r = roots_[root];
  auto visit = [&](const WalkEntry& e) {
    if (stop_.load()) return WalkAction::kSkip;
    const bool is_root = e.path == r.path;
    if (!is_root && IsExcluded(r.exclude, e.path, e.name)) return WalkAction::kSkip;
    const bool is_dir = S_ISDIR(e.st.st_mode);
    const bool descend = is_dir && (is_root || r.recursive);
    // Watch before listing: anything created from now on produces an event.
    if (descend || (is_root && !is_dir)) AddWatch(e.path, root, is_dir);
    FileStateRead read = ReadFileStateAt(e.dir_fd, e.name, r.max_hash_bytes, &e.st);
    ++scan_files_;
    scan_bytes_hashed_ += read.bytes_hashed;
    if (seen != nullptr) seen->insert(e.path);
    if (mode == ScanMode::kBaseline) {
      if (read.exists) baseline_[e.path] = read.state;
    } else {
      Report(e.path, read);
    }
    return descend ? WalkAction::kContinue : WalkAction::kSkip;
  };
  auto on_error = [&](const std::string& path, const absl::Status& st) {
    spdlog::warn("fim: scan error path={} reason={}", Printable(path), std::string(st.message()));
    if (watch_failures_reported_ < kMaxWatchFailureEvents) {
      ++watch_failures_reported_;
      AgentEvent ev;
      ev.set_kind(AgentEvent::WATCH_ERROR);
      ev.set_path(path);
      ev.set_message(std::string(st.message()));
      EmitAgent(std::move(ev));
    }
  };
  absl::Status st = WalkTree(start, WalkOptions{.recursive = r.recursive}, visit, on_error);
  if (!st.ok() && start == r.path && mode == ScanMode::kBaseline) on_error(start, st);
}

void FimWatcher::Rescan() {
  const int64_t t0 = clock_.MonotonicNanos();
  const uint64_t files0 = scan_files_;
  std::unordered_set<std::string> seen;
  for (size_t i = 0; i < roots_.size() && !stop_.load(); ++i) {
    ScanTree(roots_[i].path, i, ScanMode::kReport, &seen);
  }
  if (stop_.load()) return;
  std::vector<std::string> gone;
  for (const auto& [path, state] : baseline_) {
    if (seen.count(path) == 0) gone.push_back(path);
  }
  std::sort(gone.begin(), gone.end());
  for (const std::string& path : gone) {
    auto it = baseline_.find(path);
    if (it == baseline_.end()) continue;
    FileState before = std::move(it->second);
    baseline_.erase(it);
    EmitFile(FileEvent::DELETED, path, "", &before, nullptr, "");
  }
  AgentEvent done;
  done.set_kind(AgentEvent::RESCAN_DONE);
  done.set_files(scan_files_ - files0);
  done.set_duration_ns(clock_.MonotonicNanos() - t0);
  spdlog::info("fim: rescan done files={} deleted={}", done.files(), gone.size());
  EmitAgent(std::move(done));
}

void FimWatcher::Reconcile(const std::string& path, size_t root) {
  const FimRoot& r = roots_[root];
  FileStateRead read = ReadFileStateAt(AT_FDCWD, path.c_str(), r.max_hash_bytes);
  if (read.exists && IsDir(read.state) && (path == r.path || r.recursive) &&
      watch_by_path_.count(path) == 0) {
    // A directory we do not watch yet: watch it, then report it and everything in it.
    ScanTree(path, root, ScanMode::kReport, nullptr);
    return;
  }
  Report(path, read);
}

void FimWatcher::Report(const std::string& path, const FileStateRead& read) {
  auto it = baseline_.find(path);
  if (!read.exists) {
    if (it == baseline_.end()) return;  // came and went unseen: nothing to compare
    Vanished(path);
    return;
  }
  if (it == baseline_.end()) {
    baseline_[path] = read.state;
    EmitFile(FileEvent::CREATED, path, "", nullptr, &read.state, read.note);
    return;
  }
  StateChange change = CompareStates(it->second, read.state);
  FileState before = std::move(it->second);
  it->second = read.state;  // timestamps move on even when nothing is reported
  if (change == StateChange::kNone) return;
  EmitFile(change == StateChange::kContent ? FileEvent::MODIFIED : FileEvent::ATTRIB, path, "",
           &before, &read.state, read.note);
  if (IsDir(before) && !IsDir(read.state)) {
    RemoveWatchesUnder(path);
    ForgetSubtree(path, /*report=*/true);
  }
}

void FimWatcher::Vanished(const std::string& path) {
  auto it = baseline_.find(path);
  if (it != baseline_.end()) {
    FileState before = std::move(it->second);
    baseline_.erase(it);
    EmitFile(FileEvent::DELETED, path, "", &before, nullptr, "");
  }
  RemoveWatchesUnder(path);
  ForgetSubtree(path, /*report=*/true);
}

void FimWatcher::Renamed(const std::string& from, const std::string& to, size_t root) {
  const FimRoot& r = roots_[root];
  auto it = baseline_.find(from);
  if (it == baseline_.end()) {  // we never knew the old name: this is news at the new one
    Reconcile(to, root);
    return;
  }
  FileStateRead read = ReadFileStateAt(AT_FDCWD, to.c_str(), r.max_hash_bytes);
  if (!read.exists) {  // already gone again
    Vanished(from);
    return;
  }
  FileState before = std::move(it->second);
  baseline_.erase(it);
  std::string note = read.note;
  if (baseline_.count(to) != 0 && !IsDir(read.state)) {
    note = note.empty() ? "replaced an existing file" : note + "; replaced an existing file";
  }
  baseline_[to] = read.state;
  if (IsDir(before)) {
    // The subtree moves with its directory: re-key what we know and where we watch.
    std::vector<std::pair<std::string, FileState>> moved;
    for (auto bit = baseline_.begin(); bit != baseline_.end();) {
      if (IsUnder(bit->first, from)) {
        moved.emplace_back(to + bit->first.substr(from.size()), std::move(bit->second));
        bit = baseline_.erase(bit);
      } else {
        ++bit;
      }
    }
    for (auto& [p, s] : moved) baseline_[p] = std::move(s);
    RekeyWatches(from, to);
  }
  EmitFile(FileEvent::RENAMED, to, from, &before, &read.state, note);
  if (IsDir(read.state) && r.recursive && watch_by_path_.count(to) == 0) {
    ScanTree(to, root, ScanMode::kReport, nullptr);  // e.g. moved from a non-recursive root
  }
}

void FimWatcher::ForgetSubtree(const std::string& dir, bool report) {
  std::vector<std::string> under;
  for (const auto& [path, state] : baseline_) {
    if (IsUnder(path, dir)) under.push_back(path);
  }
  std::sort(under.begin(), under.end());
  for (const std::string& path : under) {
    auto it = baseline_.find(path);
    FileState before = std::move(it->second);
    baseline_.erase(it);
    if (report) EmitFile(FileEvent::DELETED, path, "", &before, nullptr, "");
  }
}

void FimWatcher::AddWatch(const std::string& path, size_t root, bool is_dir) {
  absl::StatusOr<int> wd = inotify_->AddWatch(path, kWatchMask | (is_dir ? IN_ONLYDIR : 0));
  if (!wd.ok()) {
    if (absl::IsNotFound(wd.status())) return;  // vanished under us; its parent reports that
    const bool limit = absl::StrContains(wd.status().message(), "ENOSPC");
    spdlog::warn("fim: {} path={} reason={}", limit ? "watch limit reached" : "watch failed",
                 Printable(path), std::string(wd.status().message()));
    if (watch_failures_reported_ < kMaxWatchFailureEvents) {
      ++watch_failures_reported_;
      AgentEvent ev;
      ev.set_kind(limit ? AgentEvent::WATCH_LIMIT_REACHED : AgentEvent::WATCH_ERROR);
      ev.set_path(path);
      ev.set_message(limit ? "inotify watch limit reached (fs.inotify.max_user_watches); changes "
                             "under this path are not seen in real time"
                           : std::string(wd.status().message()));
      EmitAgent(std::move(ev));
    }
    return;
  }
  auto old = watches_.find(*wd);
  if (old != watches_.end() && old->second.path != path) watch_by_path_.erase(old->second.path);
  watches_[*wd] = Watch{path, root};
  watch_by_path_[path] = *wd;
}

void FimWatcher::RemoveWatchesUnder(const std::string& dir) {
  for (auto it = watches_.begin(); it != watches_.end();) {
    if (it->second.path == dir || IsUnder(it->second.path, dir)) {
      inotify_->RemoveWatch(it->first);
      watch_by_path_.erase(it->second.path);
      it = watches_.erase(it);
    } else {
      ++it;
    }
  }
}

void FimWatcher::RekeyWatches(const std::string& from, const std::string& to) {
  for (auto& [wd, w] : watches_) {
    if (w.path == from || IsUnder(w.path, from)) {
      watch_by_path_.erase(w.path);
      w.path = to + w.path.substr(from.size());
      watch_by_path_[w.path] = wd;
    }
  }
}

void FimWatcher::EmitFile(FileEvent::Change change, const std::string& path,
                          const std::string& old_path, const FileState* before,
                          const FileState* after, const std::string& note) {
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
  emit_(std::move(ev));
}

void FimWatcher::EmitAgent(AgentEvent event) {
  tripline::v1::Event ev;
  ev.set_time_unix_ns(clock_.NowUnixNanos());
  *ev.mutable_agent() = std::move(event);
  emit_(std::move(ev));
}

}  // namespace tripline::agent
