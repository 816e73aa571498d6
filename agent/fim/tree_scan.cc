#include "agent/fim/tree_scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "agent/fim/file_state.h"
#include "platform/fs/dir_walk.h"
#include "platform/fs/unique_fd.h"
#include "platform/runtime/errno_status.h"

namespace tripline::agent {
namespace {

// Regular files at least this large are hashed by whichever worker is free; smaller ones by the
// worker listing their directory (a task costs more than hashing a small file).
constexpr int64_t kHashTaskBytes = 256 * 1024;

// Default workers per CPU. A cold scan spends most of its time waiting for reads of small files,
// and the device serves many at once (measured on /usr/share, 2 CPUs, cold: 11.1 s with 2
// workers, 6.1 s with 4, 4.0 s with 8); a warm scan is CPU-bound and the extra workers only share
// the CPUs.
constexpr int kThreadsPerCpu = 4;

// Small files a lister reads ahead at once (POSIX_FADV_WILLNEED) when its directory is not in
// the page cache: the device then serves a batch of reads together instead of one per lister.
constexpr size_t kPrefetchBatch = 16;

struct DirNode {
  UniqueFd fd;
  std::string path;
  size_t root = 0;
  int depth = 0;
  dev_t root_dev = 0;
  // (dev, ino) of this directory and every ancestor up to the start: a directory seen again
  // below itself (a bind mount of an ancestor) is a loop.
  std::vector<std::pair<dev_t, ino_t>> chain;
};

struct Task {
  std::shared_ptr<DirNode> parent;  // holds the fd that `name` is relative to
  std::string name;                 // relative to parent->fd; the full path when parent is null
  std::string path;
  struct stat st;
  size_t root = 0;
  int depth = 0;
  dev_t root_dev = 0;
  bool list = false;  // list a directory (else: hash a regular file)
};

class Scan {
 public:
  Scan(const std::vector<FimRoot>& roots, const TreeScanOptions& options)
      : roots_(roots), options_(options) {}

  ScanResult Run(const std::vector<ScanStart>& starts) {
    for (const ScanStart& s : starts) Seed(s);
    int n = options_.threads > 0
                ? options_.threads
                : kThreadsPerCpu * static_cast<int>(std::thread::hardware_concurrency());
    n = std::clamp(n, 1, 64);
    results_.resize(static_cast<size_t>(n));
    std::vector<std::thread> workers;
    for (int i = 1; i < n; ++i) workers.emplace_back([this, i] { Work(static_cast<size_t>(i)); });
    Work(0);
    for (std::thread& t : workers) t.join();

    ScanResult out;
    size_t total = 0;
    for (const Local& l : results_) total += l.files.size();
    out.files.reserve(total);
    for (Local& l : results_) {
      for (ScannedFile& f : l.files) out.files.push_back(std::move(f));
      out.bytes_hashed += l.bytes_hashed;
      l.files = {};
    }
    std::sort(out.files.begin(), out.files.end(),
              [](const ScannedFile& a, const ScannedFile& b) { return a.path < b.path; });
    out.errors = std::move(errors_);
    return out;
  }

 private:
  struct Local {
    std::vector<ScannedFile> files;
    uint64_t bytes_hashed = 0;
  };

  bool Cancelled() const {
    return options_.cancel != nullptr && options_.cancel->load(std::memory_order_relaxed);
  }

  void Error(const std::string& path, const absl::Status& st) {
    std::lock_guard<std::mutex> lock(mu_);
    errors_.push_back(ScanError{path, std::string(st.message())});
  }

  void Seed(const ScanStart& s) {
    struct stat st;
    if (::fstatat(AT_FDCWD, s.path.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      Error(s.path, ErrnoStatus(errno, "stat", s.path));
      return;
    }
    // The device of the root itself bounds a one-filesystem scan, even when it starts lower.
    struct stat root_st;
    dev_t root_dev = st.st_dev;
    if (s.path != roots_[s.root].path &&
        ::fstatat(AT_FDCWD, roots_[s.root].path.c_str(), &root_st, AT_SYMLINK_NOFOLLOW) == 0) {
      root_dev = root_st.st_dev;
    }
    Task t;
    t.name = s.path;
    t.path = s.path;
    t.st = st;
    t.root = s.root;
    t.depth = 0;
    t.root_dev = root_dev;
    Visit(std::move(t), /*local=*/nullptr, /*is_start=*/true);
  }

  // Records or queues one entry found by a lister (or a start). A small file to hash is added to
  // `batch` (when given) to be read by HashBatch.
  void Visit(Task t, Local* local, bool is_start, std::vector<Task>* batch = nullptr) {
    const FimRoot& r = roots_[t.root];
    if (S_ISDIR(t.st.st_mode)) {
      const bool descend_allowed = is_start || r.recursive;
      bool descend = descend_allowed;
      if (descend && r.one_filesystem && t.st.st_dev != t.root_dev) {
        descend = false;
        Error(t.path, absl::FailedPreconditionError(
                          "another filesystem (one_filesystem): recorded, not descended"));
      }
      if (descend && t.depth >= kMaxWalkDepth) {
        descend = false;
        Error(t.path, absl::ResourceExhaustedError(
                          "directory nesting deeper than the walk limit: not descended"));
      }
      if (descend && t.parent != nullptr) {
        for (const auto& [dev, ino] : t.parent->chain) {
          if (dev == t.st.st_dev && ino == t.st.st_ino) {
            descend = false;
            Error(t.path, absl::FailedPreconditionError(
                              "directory loop (the same directory as an ancestor, e.g. a bind "
                              "mount): recorded, not descended"));
            break;
          }
        }
      }
      Record(t, ReadFileStateAt(AT_FDCWD, "", 0, &t.st, false), local);
      if (descend) {
        t.list = true;
        Push(std::move(t));
      }
      return;
    }
    const bool hash = (r.attrs & kAttrSha256) != 0;
    if (S_ISREG(t.st.st_mode) && hash && t.st.st_size >= kHashTaskBytes &&
        t.st.st_size <= r.max_hash_bytes) {
      t.list = false;
      Push(std::move(t));
      return;
    }
    if (batch != nullptr && S_ISREG(t.st.st_mode) && hash && t.st.st_size > 0 &&
        t.st.st_size <= r.max_hash_bytes) {
      batch->push_back(std::move(t));
      return;
    }
    const int dir_fd = t.parent != nullptr ? t.parent->fd.get() : AT_FDCWD;
    Record(t, ReadFileStateAt(dir_fd, t.name.c_str(), r.max_hash_bytes, &t.st, hash), local);
  }

  // Hashes a batch of small files of one directory. When the first is not in the page cache
  // (a cold scan), every file of the batch is opened and read ahead first, and its pages dropped
  // once hashed, as HashOpenFile does for a file it reads from disk itself.
  void HashBatch(std::vector<Task>* batch, Local* local) {
    if (batch->empty()) return;
    const int dir_fd = batch->front().parent->fd.get();
    std::vector<UniqueFd> ahead;
    if (!Cached(dir_fd, batch->front().name.c_str())) {
      ahead.reserve(batch->size());
      for (const Task& t : *batch) {
        UniqueFd fd(OpenForRead(dir_fd, t.name.c_str()));
        if (fd.valid()) ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_WILLNEED);
        ahead.push_back(std::move(fd));
      }
    }
    for (size_t i = 0; i < batch->size(); ++i) {
      const Task& t = (*batch)[i];
      const FimRoot& r = roots_[t.root];
      Record(t, ReadFileStateAt(dir_fd, t.name.c_str(), r.max_hash_bytes, &t.st, true), local);
      if (i < ahead.size() && ahead[i].valid()) {
        ::posix_fadvise(ahead[i].get(), 0, 0, POSIX_FADV_DONTNEED);
      }
    }
    batch->clear();
  }

  static int OpenForRead(int dir_fd, const char* name) {
    const int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
    int fd = ::openat(dir_fd, name, flags | O_NOATIME);
    if (fd < 0 && errno == EPERM) fd = ::openat(dir_fd, name, flags);
    return fd;
  }

  // Whether the first byte of the file is in the page cache (false when it cannot be told).
  static bool Cached(int dir_fd, const char* name) {
    UniqueFd fd(OpenForRead(dir_fd, name));
    if (!fd.valid()) return true;  // ReadFileStateAt reports why
    char byte;
    struct iovec iov = {&byte, 1};
    return ::preadv2(fd.get(), &iov, 1, 0, RWF_NOWAIT) >= 0;
  }

  void Record(const Task& t, FileStateRead read, Local* local) {
    if (!read.exists) return;  // vanished between listing and reading
    ScannedFile f{t.path, t.root, std::move(read.state), std::move(read.note)};
    if (local == nullptr) {  // a start, seeded before the workers run
      results_seed_.push_back(std::move(f));
      return;
    }
    local->bytes_hashed += read.bytes_hashed;
    local->files.push_back(std::move(f));
  }

  void Push(Task t) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(t));
    }
    cv_.notify_one();
  }

  void Work(size_t index) {
    Local& local = results_[index];
    if (index == 0) {
      for (ScannedFile& f : results_seed_) local.files.push_back(std::move(f));
      results_seed_.clear();
    }
    for (;;) {
      Task t;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !tasks_.empty() || busy_ == 0; });
        if (tasks_.empty()) {
          cv_.notify_all();
          return;
        }
        t = std::move(tasks_.back());
        tasks_.pop_back();
        ++busy_;
      }
      if (!Cancelled()) {
        if (t.list) {
          List(std::move(t), &local);
        } else {
          const FimRoot& r = roots_[t.root];
          const int dir_fd = t.parent != nullptr ? t.parent->fd.get() : AT_FDCWD;
          Record(t, ReadFileStateAt(dir_fd, t.name.c_str(), r.max_hash_bytes, &t.st), &local);
        }
      }
      bool done;
      {
        std::lock_guard<std::mutex> lock(mu_);
        --busy_;
        done = busy_ == 0 && tasks_.empty();
      }
      if (done) cv_.notify_all();
    }
  }

  void List(Task t, Local* local) {
    if (options_.on_directory) options_.on_directory(t.root, t.path);
    const int parent_fd = t.parent != nullptr ? t.parent->fd.get() : AT_FDCWD;
    int fd = ::openat(parent_fd, t.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      if (errno != ENOENT) Error(t.path, ErrnoStatus(errno, "open", t.path));
      return;
    }
    auto node = std::make_shared<DirNode>();
    node->fd.reset(fd);
    node->path = t.path;
    node->root = t.root;
    node->depth = t.depth;
    node->root_dev = t.root_dev;
    if (t.parent != nullptr) node->chain = t.parent->chain;
    node->chain.emplace_back(t.st.st_dev, t.st.st_ino);
    t.parent.reset();  // the parent's fd is no longer needed by this task

    const int dup_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);  // fdopendir takes ownership
    if (dup_fd < 0) {
      Error(t.path, ErrnoStatus(errno, "dup", t.path));
      return;
    }
    DIR* dir = ::fdopendir(dup_fd);
    if (dir == nullptr) {
      Error(t.path, ErrnoStatus(errno, "fdopendir", t.path));
      ::close(dup_fd);
      return;
    }
    const FimRoot& r = roots_[t.root];
    std::vector<Task> batch;
    batch.reserve(kPrefetchBatch);
    for (;;) {
      errno = 0;
      struct dirent* ent = ::readdir(dir);
      if (ent == nullptr) {
        if (errno != 0) Error(t.path, ErrnoStatus(errno, "readdir", t.path));
        break;
      }
      const char* name = ent->d_name;
      if (std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0) continue;
      Task child;
      child.path = JoinPath(t.path, name);
      if (IsExcluded(r.exclude, child.path, name)) continue;
      if (::fstatat(fd, name, &child.st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT) Error(child.path, ErrnoStatus(errno, "stat", child.path));
        continue;
      }
      child.parent = node;
      child.name = name;
      child.root = t.root;
      child.depth = t.depth + 1;
      child.root_dev = t.root_dev;
      Visit(std::move(child), local, /*is_start=*/false, &batch);
      if (batch.size() >= kPrefetchBatch) HashBatch(&batch, local);
      if (Cancelled()) break;
    }
    if (!Cancelled()) HashBatch(&batch, local);
    ::closedir(dir);
  }

  const std::vector<FimRoot>& roots_;
  const TreeScanOptions& options_;
  std::vector<Local> results_;
  std::vector<ScannedFile> results_seed_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Task> tasks_;  // LIFO: depth-first, so few directories are open at once
  int busy_ = 0;
  std::vector<ScanError> errors_;
};

}  // namespace

ScanResult ScanTrees(const std::vector<FimRoot>& roots, const std::vector<ScanStart>& starts,
                     const TreeScanOptions& options) {
  Scan scan(roots, options);
  return scan.Run(starts);
}

std::vector<ScanStart> AllRoots(const std::vector<FimRoot>& roots) {
  std::vector<ScanStart> out;
  for (size_t i = 0; i < roots.size(); ++i) out.push_back(ScanStart{i, roots[i].path});
  return out;
}

}  // namespace tripline::agent
