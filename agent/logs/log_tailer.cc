#include "agent/logs/log_tailer.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_format.h"
#include "platform/crypto/digest.h"
#include "platform/runtime/errno_status.h"
#include "platform/runtime/logging.h"

namespace tripline::agent {
namespace {

constexpr uint32_t kDirMask = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_MODIFY |
                              IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
constexpr size_t kReadChunk = 256 << 10;
constexpr uint64_t kReadBudget = 16 << 20;  // per file per turn, so one busy file cannot starve others
constexpr int64_t kTickNs = 250'000'000;    // how often rotated files and partial lines are looked at

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}
std::string BaseOf(const std::string& path) { return path.substr(path.rfind('/') + 1); }
std::string Join(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

// The fingerprint of the first min(limit, kFingerprintBytes) bytes; nullopt when unreadable.
std::optional<std::pair<std::string, uint64_t>> Fingerprint(int fd, uint64_t limit) {
  std::string buf(std::min<uint64_t>(limit, kFingerprintBytes), '\0');
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::pread(fd, buf.data() + got, buf.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  buf.resize(got);
  return std::make_pair(Blake2b256(buf), static_cast<uint64_t>(got));
}

// The first `n` bytes of the file (device, inode) `id` at `path` (fewer when it is shorter);
// nullopt when it cannot be read or another file is at `path` now.
std::optional<std::string> ReadHead(const std::string& path, std::pair<uint64_t, uint64_t> id,
                                    size_t n) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) return std::nullopt;
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || static_cast<uint64_t>(st.st_dev) != id.first ||
      static_cast<uint64_t>(st.st_ino) != id.second) {
    return std::nullopt;
  }
  std::string buf(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd.get(), buf.data() + got, n - got, static_cast<off_t>(got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return std::nullopt;
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  buf.resize(got);
  return buf;
}

// The entries of `dir` (following symlinks; not only regular files: a FIFO or directory matching
// a glob is reported by Open), by (device, inode).
std::map<std::pair<uint64_t, uint64_t>, DirEntry> ListDir(const std::string& dir) {
  std::map<std::pair<uint64_t, uint64_t>, DirEntry> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    DirEntry entry;
    entry.path = Join(dir, name);
    if (::stat(entry.path.c_str(), &entry.st) != 0) continue;
    out.emplace(std::make_pair(entry.st.st_dev, entry.st.st_ino), std::move(entry));
  }
  ::closedir(d);
  return out;
}

}  // namespace

LogTailer::LogTailer(std::vector<LogFileSource> sources, OffsetLedger* ledger, const Clock& clock,
                     EmitFn emit, LogTailerOptions options)
    : sources_(std::move(sources)),
      ledger_(ledger),
      clock_(clock),
      emit_(std::move(emit)),
      options_(options) {
  for (size_t i = 0; i < sources_.size(); ++i) {
    for (const std::string& p : sources_[i].paths) patterns_.push_back({i, DirOf(p), BaseOf(p)});
  }
}

LogTailer::~LogTailer() { Stop(); }

absl::Status LogTailer::Start() {
  absl::MutexLock lock(&start_mu_);
  if (stopped_ || thread_.joinable()) return absl::OkStatus();
  for (const LogFileSource& s : sources_) {
    RE2::Options opts(RE2::Latin1);  // bytes: lines need not be UTF-8
    opts.set_log_errors(false);
    auto compile = [&](const std::string& re) -> absl::StatusOr<std::unique_ptr<RE2>> {
      if (re.empty()) return std::unique_ptr<RE2>();
      auto out = std::make_unique<RE2>(re, opts);
      if (!out->ok()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("logs: source %s: bad RE2 '%s': %s", s.name, re, out->error()));
      }
      return out;
    };
    absl::StatusOr<std::unique_ptr<RE2>> inc = compile(s.include);
    if (!inc.ok()) return inc.status();
    absl::StatusOr<std::unique_ptr<RE2>> exc = compile(s.exclude);
    if (!exc.ok()) return exc.status();
    include_.push_back(*std::move(inc));
    exclude_.push_back(*std::move(exc));
  }
  absl::StatusOr<Inotify> in = Inotify::Create();
  if (!in.ok()) return in.status();
  inotify_.emplace(*std::move(in));
  int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) return ErrnoStatus(errno, "logs: eventfd", "");
  wake_fd_ = UniqueFd(efd);
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void LogTailer::Stop() {
  absl::MutexLock lock(&start_mu_);
  stopped_ = true;
  stop_.store(true);
  if (wake_fd_.valid()) {
    uint64_t one = 1;
    (void)!::write(wake_fd_.get(), &one, sizeof(one));
  }
  if (thread_.joinable()) thread_.join();
}

void LogTailer::Problem(const std::string& cause, const std::string& message,
                        const std::string& path) {
  if (!reported_.insert(cause).second) return;
  spdlog::warn("logs: {} path={}", message, Printable(path));
  tripline::v1::Event ev;
  ev.set_time_unix_ns(clock_.NowUnixNanos());
  ev.mutable_agent()->set_kind(tripline::v1::AgentEvent::LOG_SOURCE_ERROR);
  ev.mutable_agent()->set_message(message);
  ev.mutable_agent()->set_path(path);
  if (!emit_(std::move(ev))) stop_.store(true);
}

bool LogTailer::MatchesGlob(size_t source, const std::string& dir, const std::string& name) const {
  for (const Pattern& p : patterns_) {
    if (p.source == source && p.dir == dir && ::fnmatch(p.glob.c_str(), name.c_str(), 0) == 0) {
      return true;
    }
  }
  return false;
}

bool LogTailer::IsRotatedSibling(size_t source, const std::string& dir,
                                 const std::string& name) const {
  for (size_t k = 1; k + 1 < name.size(); ++k) {
    if (name[k] != '.' && name[k] != '-' && name[k] != '_') continue;
    if (MatchesGlob(source, dir, name.substr(0, k))) return true;
  }
  return false;
}

void LogTailer::Remember(size_t source, const std::string& dir, uint64_t device, uint64_t inode,
                         const std::string& fingerprint, uint64_t fingerprint_len) {
  Known& k = known_[OpenKey{source, device, inode}];
  k.dir = dir;
  if (k.fingerprint == fingerprint && k.fingerprint_len == fingerprint_len &&
      fingerprint_len != 0) {
    return;
  }
  k.fingerprint = fingerprint;
  k.fingerprint_len = fingerprint_len;
  FamilyMember m{device, inode, fingerprint, fingerprint_len};
  if (absl::Status st = ledger_->AddToFamily(sources_[source].name, m); !st.ok()) {
    spdlog::error("logs: cannot record a file of source {}: {}", sources_[source].name,
                  st.ToString());
  }
}

void LogTailer::AdoptUnreadSiblings(
    size_t source, const std::string& dir,
    const std::map<std::pair<uint64_t, uint64_t>, DirEntry>& entries, FamilyLook look) {
  const std::string& name = sources_[source].name;
  if (look != FamilyLook::kFirstStart) {
    // Read the followed files first: their fingerprints (persisted before their lines go) then
    // cover what a copy of them holds, so after a crash the copy is found by the file's row
    // rather than taken for old content; and truncations are seen before copies are judged.
    std::vector<OpenKey> here;
    for (const auto& [key, f] : files_) {
      if (f->source == source && f->dir == dir) here.push_back(key);
    }
    std::stable_sort(here.begin(), here.end(), [this](const OpenKey& a, const OpenKey& b) {
      return files_[a]->rotated > files_[b]->rotated;  // a rotated file's last lines first
    });
    for (const OpenKey& k : here) {
      if (stop_.load()) return;
      if (auto it = files_.find(k); it != files_.end()) Read(*it->second);
    }
  }
  // Content already read or accounted for, by fingerprint length.
  std::set<std::pair<uint64_t, std::string>> fps;
  for (const auto& [src, len, fp] : content_fps_) {
    if (src == source) fps.emplace(len, fp);
  }
  std::vector<const OpenFile*> open_here;
  for (const auto& [key, f] : files_) {
    if (f->source != source) continue;
    if (f->fingerprint_len > 0) fps.emplace(f->fingerprint_len, f->fingerprint);
    if (f->dir == dir && !f->ignored) open_here.push_back(f.get());
  }
  for (const auto& [key, k] : known_) {
    if (std::get<0>(key) == source && k.fingerprint_len > 0) {
      fps.emplace(k.fingerprint_len, k.fingerprint);
    }
  }
  for (auto it = undecided_.begin(); it != undecided_.end();) {
    it = it->first == dir ? undecided_.erase(it) : std::next(it);
  }
  for (const auto& [id, e] : entries) {
    if (stop_.load()) return;
    const std::string base = BaseOf(e.path);
    if (DirOf(e.path) != dir || !S_ISREG(e.st.st_mode)) continue;
    const bool matches = MatchesGlob(source, dir, base);
    if (!matches && !IsRotatedSibling(source, dir, base)) continue;
    const OpenKey key{source, id.first, id.second};
    if (files_.count(key) || ignored_.count(key)) continue;
    // Another file at this name now (renamed meanwhile): the rename's events bring a new look.
    std::optional<std::string> head = ReadHead(e.path, id, 4096);
    if (!head) continue;
    const std::string_view fp_head =
        std::string_view(*head).substr(0, std::min<size_t>(head->size(), kFingerprintBytes));
    if (auto k = known_.find(key); k != known_.end()) {
      // Known without content (it was empty): only while it still is.
      const bool same = k->second.fingerprint_len == 0
                            ? fp_head.empty()
                            : fp_head.size() >= k->second.fingerprint_len &&
                                  Blake2b256(fp_head.substr(0, k->second.fingerprint_len)) ==
                                      k->second.fingerprint;
      if (same) continue;  // the file we knew
      known_.erase(k);  // its inode now holds another file
    }
    // A matching file not followed could not be opened (reported) or was not there yet when
    // the glob rule ran: that rule, not this one, decides where it starts.
    if (matches) continue;
    const std::string fp = Blake2b256(fp_head);
    if (look == FamilyLook::kFirstStart) {  // archives from before the source started
      Remember(source, dir, id.first, id.second, fp, fp_head.size());
      continue;
    }
    if (head->empty()) {
      undecided_.emplace(dir, base);
      continue;
    }
    if (std::memchr(head->data(), '\0', head->size()) != nullptr) {
      Remember(source, dir, id.first, id.second, fp, fp_head.size());  // a compressed archive
      continue;
    }
    bool copy = false;
    std::map<uint64_t, std::string> head_fp;  // by length: fingerprints mostly share one
    for (const auto& [len, known_fp] : fps) {
      if (fp_head.size() < len) continue;
      auto [h, fresh] = head_fp.try_emplace(len);
      if (fresh) h->second = Blake2b256(fp_head.substr(0, len));
      if (h->second == known_fp) {
        copy = true;
        break;
      }
    }
    // A copy of what a followed file holds now (a copytruncate the tailer has not seen yet, a
    // copy still being written, cp): that content is read from the followed file, and the
    // truncation, when it comes, finds the copy by fingerprint for what was not read.
    for (size_t i = 0; !copy && i < open_here.size(); ++i) {
      std::string theirs(fp_head.size(), '\0');
      copy = ::pread(open_here[i]->fd.get(), theirs.data(), theirs.size(), 0) ==
                 static_cast<ssize_t>(theirs.size()) &&
             theirs == fp_head;
    }
    if (copy) {
      Remember(source, dir, id.first, id.second, fp, fp_head.size());
      continue;
    }
    spdlog::info("logs: found a rotated file no run had opened source={} path={} inode={}; "
                 "reading it from its start",
                 name, Printable(e.path), id.second);
    OpenListed(source, id, e.path, 0, 0, /*new_file=*/true, /*rotated=*/true);
  }
  // Members gone from the directory are forgotten: their inodes may be reused.
  for (auto it = known_.begin(); it != known_.end();) {
    const auto& [src, device, inode] = it->first;
    if (src != source || it->second.dir != dir || entries.count({device, inode})) {
      ++it;
      continue;
    }
    if (absl::Status st = ledger_->RemoveFromFamily(name, device, inode); !st.ok()) {
      spdlog::error("logs: {}", st.ToString());
    }
    it = known_.erase(it);
  }
}

void LogTailer::WatchDirs() {
  std::set<std::string> dirs;
  for (const Pattern& p : patterns_) dirs.insert(p.dir);
  for (const std::string& dir : dirs) {
    if (wd_by_dir_.count(dir)) continue;
    absl::StatusOr<int> wd = inotify_->AddWatch(dir, kDirMask);
    if (!wd.ok()) {
      if (missing_dirs_.insert(dir).second) {
        Problem("dir:" + dir,
                absl::StrFormat("cannot watch log directory (%s); looking again every %ds",
                                wd.status().message(),
                                absl::ToInt64Seconds(options_.retry_interval)),
                dir);
      }
      continue;
    }
    missing_dirs_.erase(dir);
    reported_.erase("dir:" + dir);
    dir_by_wd_[*wd] = dir;
    wd_by_dir_[dir] = *wd;
  }
  next_retry_ns_ = missing_dirs_.empty()
                       ? 0
                       : clock_.MonotonicNanos() + absl::ToInt64Nanoseconds(options_.retry_interval);
}

LogTailer::OpenFile* LogTailer::OpenListed(size_t source, std::pair<uint64_t, uint64_t> id,
                                           std::string path, uint64_t offset,
                                           uint64_t generation, bool new_file, bool rotated) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    bool moved = false;
    OpenFile* f = Open(source, path, offset, generation, new_file, rotated, id, &moved);
    if (!moved) return f;
    // Renamed since it was listed (a rotation racing the look): find it again by inode.
    std::map<std::pair<uint64_t, uint64_t>, DirEntry> entries = ListDir(DirOf(path));
    auto it = entries.find(id);
    if (it == entries.end()) break;
    path = it->second.path;
  }
  spdlog::info("logs: source={} inode={} moved out of its directory before it could be opened",
               sources_[source].name, id.second);
  return nullptr;
}

LogTailer::OpenFile* LogTailer::Open(size_t source, const std::string& path, uint64_t offset,
                                     uint64_t generation, bool new_file, bool rotated,
                                     std::optional<std::pair<uint64_t, uint64_t>> expect,
                                     bool* moved) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    absl::Status st = ErrnoStatus(errno, "open", path);
    Problem("open:" + path, absl::StrFormat("source %s: cannot read log file: %s",
                                            sources_[source].name, st.message()),
            path);
    return nullptr;
  }
  UniqueFd owned(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return nullptr;
  if (expect && (static_cast<uint64_t>(st.st_dev) != expect->first ||
                 static_cast<uint64_t>(st.st_ino) != expect->second)) {
    if (moved != nullptr) *moved = true;
    return nullptr;
  }
  if (!S_ISREG(st.st_mode)) {
    Problem("type:" + path,
            absl::StrFormat("source %s: not tailing %s: not a regular file", sources_[source].name,
                            Printable(path)),
            path);
    return nullptr;
  }
  OpenKey key{source, st.st_dev, st.st_ino};
  if (files_.count(key) || ignored_.count(key)) return nullptr;
  bool checked_binary = !new_file;
  if (new_file) {
    char head[4096];
    ssize_t n = ::pread(fd, head, sizeof(head), 0);
    if (n > 0 && std::memchr(head, '\0', static_cast<size_t>(n)) != nullptr) {
      ignored_.insert(key);
      Problem("binary:" + path,
              absl::StrFormat("source %s: not tailing a binary file (NUL bytes in its first %d "
                              "bytes)",
                              sources_[source].name, n),
              path);
      return nullptr;
    }
    checked_binary = n > 0;  // an empty file is looked at when its first bytes come (Read)
    if (offset > static_cast<uint64_t>(st.st_size)) offset = st.st_size;
  }
  auto f = std::make_unique<OpenFile>();
  f->source = source;
  f->key = FileKey{sources_[source].name, static_cast<uint64_t>(st.st_dev),
                   static_cast<uint64_t>(st.st_ino), generation};
  f->path = path;
  f->dir = DirOf(path);
  f->fd = std::move(owned);
  f->splitter = LineSplitter(sources_[source].max_line, offset);
  f->rotated = rotated;
  f->checked_binary = checked_binary;
  f->last_growth_ns = clock_.MonotonicNanos();
  if (auto fp = Fingerprint(fd, kFingerprintBytes)) {  // the content's identity, read or not
    f->fingerprint = fp->first;
    f->fingerprint_len = fp->second;
  }
  if (new_file) {
    FileRow row;
    row.key = f->key;
    row.path = path;
    row.fingerprint = f->fingerprint;
    row.fingerprint_len = f->fingerprint_len;
    row.offset = offset;
    if (absl::Status s = ledger_->Put(row); !s.ok()) {
      spdlog::error("logs: cannot record file: {}", s.ToString());
      return nullptr;
    }
  }
  spdlog::info("logs: following source={} path={} inode={} offset={} generation={}{}",
               sources_[source].name, Printable(path), st.st_ino, offset, generation,
               rotated ? " (rotated: reading to its end)" : "");
  OpenFile* raw = f.get();
  Remember(source, raw->dir, st.st_dev, st.st_ino, raw->fingerprint, raw->fingerprint_len);
  files_[key] = std::move(f);
  return raw;
}

void LogTailer::Recover(size_t source) {
  const LogFileSource& src = sources_[source];
  absl::StatusOr<std::vector<FileRow>> rows = ledger_->Files(src.name);
  absl::StatusOr<bool> started = ledger_->SourceStarted(src.name);
  if (!rows.ok() || !started.ok()) {
    spdlog::error("logs: source {}: cannot read offsets: {}", src.name,
                  (!rows.ok() ? rows.status() : started.status()).ToString());
    return;
  }
  std::map<std::pair<uint64_t, uint64_t>, DirEntry> entries;
  std::set<std::string> dirs;
  for (const Pattern& p : patterns_) {
    if (p.source == source && dirs.insert(p.dir).second) entries.merge(ListDir(p.dir));
  }
  absl::StatusOr<std::optional<std::vector<FamilyMember>>> family = ledger_->Family(src.name);
  if (!family.ok()) {
    spdlog::error("logs: source {}: cannot read its files: {}", src.name,
                  family.status().ToString());
    return;
  }
  // Without a recorded family (a new source, or a ledger from before families were kept),
  // whatever is in the directories now is old: accounted for, not read.
  const FamilyLook look =
      (*started && family->has_value()) ? FamilyLook::kRecover : FamilyLook::kFirstStart;
  if (family->has_value()) {
    for (const FamilyMember& m : **family) {
      auto it = entries.find({m.device, m.inode});
      if (it == entries.end()) {
        (void)ledger_->RemoveFromFamily(src.name, m.device, m.inode);
        continue;
      }
      known_[OpenKey{source, m.device, m.inode}] =
          Known{DirOf(it->second.path), m.fingerprint, m.fingerprint_len};
    }
  }
  for (const FileRow& r : *rows) {  // content some run read: its copies are not new
    if (r.fingerprint_len > 0) content_fps_.emplace(source, r.fingerprint_len, r.fingerprint);
  }
  // The fingerprint of file `id` listed at `path`, found again by inode if a rotation racing
  // this look renamed it; nullopt when it cannot be read or is gone.
  auto fingerprint_of = [](const std::string& path, std::pair<uint64_t, uint64_t> id,
                           uint64_t len) {
    std::string at = path;
    for (int attempt = 0; attempt < 3; ++attempt) {
      UniqueFd fd(::open(at.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
      if (!fd.valid()) return std::optional<std::pair<std::string, uint64_t>>();
      struct stat st;
      if (::fstat(fd.get(), &st) != 0) break;
      if (static_cast<uint64_t>(st.st_dev) == id.first &&
          static_cast<uint64_t>(st.st_ino) == id.second) {
        return Fingerprint(fd.get(), len);
      }
      std::map<std::pair<uint64_t, uint64_t>, DirEntry> again = ListDir(DirOf(path));
      auto it = again.find(id);
      if (it == again.end()) break;
      at = it->second.path;
    }
    return std::optional<std::pair<std::string, uint64_t>>();
  };
  // Where a copy of a file's old content (copytruncate) must be read from: a detached
  // generation, or a file truncated or replaced while the agent was down, whose lines after its
  // durable offset are now only in the copy. The copy is found by the old fingerprint.
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> resume_copy_at;
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> newest_generation;
  for (const FileRow& r : *rows) {
    auto id = std::make_pair(r.key.device, r.key.inode);
    newest_generation[id] = std::max(newest_generation[id], r.key.generation);
  }
  auto find_copy = [&](const FileRow& r) {
    if (r.fingerprint_len == 0) return false;
    for (const auto& [id, e] : entries) {
      if (id == std::make_pair(r.key.device, r.key.inode) || !S_ISREG(e.st.st_mode)) continue;
      if (static_cast<uint64_t>(e.st.st_size) <= r.offset) continue;
      auto fp = fingerprint_of(e.path, id, r.fingerprint_len);
      if (fp && fp->first == r.fingerprint && fp->second == r.fingerprint_len) {
        resume_copy_at[id] = std::min(resume_copy_at.count(id) ? resume_copy_at[id] : r.offset,
                                      r.offset);
        return true;
      }
    }
    return false;
  };
  for (const FileRow& r : *rows) {
    auto id = std::make_pair(r.key.device, r.key.inode);
    if (r.state == FileRowState::kDetached) {
      if (r.offset < r.detached_at && !find_copy(r)) {
        Problem("copy:" + r.path,
                absl::StrFormat("source %s: bytes %d..%d of a copytruncated file were not read "
                                "and its copy is not in the directory: those lines are lost",
                                src.name, r.offset, r.detached_at),
                r.path);
      }
      (void)ledger_->Forget(r.key);
      continue;
    }
    if (r.key.generation != newest_generation[id]) continue;
    auto it = entries.find(id);
    if (it == entries.end()) continue;  // rotated away: reported below
    auto fp = fingerprint_of(it->second.path, id, r.fingerprint_len);
    // A row without fingerprint (nothing was there, or a truncation had just emptied it) knows
    // no content to compare: every file starts with its empty prefix.
    const bool same = fp && (r.fingerprint_len == 0 || (fp->first == r.fingerprint &&
                                                        fp->second == r.fingerprint_len)) &&
                      static_cast<uint64_t>(it->second.st.st_size) >= r.offset;
    if (!same) find_copy(r);  // truncated or replaced while the agent was down
  }
  for (const FileRow& r : *rows) {
    if (r.state == FileRowState::kDetached) continue;
    auto id = std::make_pair(r.key.device, r.key.inode);
    if (r.key.generation != newest_generation[id]) {
      (void)ledger_->Forget(r.key);
      continue;
    }
    auto it = entries.find(id);
    uint64_t offset = r.offset;
    if (auto copy = resume_copy_at.find(id); copy != resume_copy_at.end()) {
      offset = std::min(offset, copy->second);
      resume_copy_at.erase(copy);
    }
    if (it == entries.end()) {
      if (r.state == FileRowState::kLive) {
        Problem("gone:" + r.path,
                absl::StrFormat("source %s: a log file was rotated away while the agent was "
                                "down; lines written after offset %d of it may be lost",
                                src.name, offset),
                r.path);
      }
      (void)ledger_->Forget(r.key);
      continue;
    }
    auto fp = fingerprint_of(it->second.path, id, r.fingerprint_len);
    if (!fp ||
        (r.fingerprint_len != 0 &&
         (fp->first != r.fingerprint || fp->second != r.fingerprint_len))) {
      // A reused inode: another file, read as new below (by the glob, or as a rotated file
      // nobody read: the family must not vouch for it).
      known_.erase(OpenKey{source, id.first, id.second});
      (void)ledger_->Forget(r.key);
      continue;
    }
    uint64_t generation = r.key.generation;
    if (static_cast<uint64_t>(it->second.st.st_size) < offset) {
      Problem("shrunk:" + it->second.path,
              absl::StrFormat("source %s: file shrank below its offset %d while the agent was "
                              "down; reading it again from the start",
                              src.name, offset),
              it->second.path);
      (void)ledger_->Forget(r.key);
      offset = 0;
      ++generation;
      FileRow fresh = r;
      fresh.key.generation = generation;
      fresh.offset = 0;
      fresh.fingerprint.clear();
      fresh.fingerprint_len = 0;
      (void)ledger_->Put(fresh);
    } else if (offset != r.offset) {
      FileRow moved = r;
      moved.offset = offset;
      (void)ledger_->Put(moved);
    }
    const std::string dir = DirOf(it->second.path);
    const bool rotated = !MatchesGlob(source, dir, BaseOf(it->second.path));
    if (OpenFile* f = OpenListed(source, id, it->second.path, offset, generation, false, rotated)) {
      (void)ledger_->UpdateIdentity(f->key, f->path, r.fingerprint, r.fingerprint_len);
      f->fingerprint = r.fingerprint;
      f->fingerprint_len = r.fingerprint_len;
    }
  }
  // Copies found for detached rows whose own file row is gone: read from the detached offset.
  for (const auto& [id, offset] : resume_copy_at) {
    auto it = entries.find(id);
    if (it == entries.end()) continue;
    const bool rotated = !MatchesGlob(source, DirOf(it->second.path), BaseOf(it->second.path));
    OpenListed(source, id, it->second.path, offset, 0, true, rotated);
  }
  // Files matching the globs that are not followed yet.
  bool any = false;
  for (const auto& [id, e] : entries) {
    if (!MatchesGlob(source, DirOf(e.path), BaseOf(e.path))) continue;
    any = true;
    if (files_.count({source, id.first, id.second})) continue;
    const uint64_t offset =
        (*started || src.start_at_beginning) ? 0 : static_cast<uint64_t>(e.st.st_size);
    Open(source, e.path, offset, 0, true, false);
  }
  // Rotated files no run opened (created and rotated away while the agent was down).
  for (const std::string& dir : dirs) AdoptUnreadSiblings(source, dir, entries, look);
  if (absl::Status st = ledger_->MarkFamilyTracked(src.name); !st.ok()) {
    spdlog::error("logs: {}", st.ToString());
  }
  if (!any) {
    Problem("empty:" + src.name,
            absl::StrFormat("source %s: no file matches %s yet; new files will be picked up",
                            src.name, src.paths.empty() ? "" : src.paths[0]),
            src.paths.empty() ? "" : src.paths[0]);
  }
  if (absl::Status st = ledger_->MarkSourceStarted(src.name); !st.ok()) {
    spdlog::error("logs: {}", st.ToString());
  }
}

void LogTailer::RescanDir(const std::string& dir) {
  std::map<std::pair<uint64_t, uint64_t>, DirEntry> entries = ListDir(dir);
  for (auto& [key, f] : files_) {
    if (f->dir != dir) continue;
    auto it = entries.find({std::get<1>(key), std::get<2>(key)});
    if (it != entries.end()) {
      f->path = it->second.path;
      const bool rotated = !MatchesGlob(f->source, dir, BaseOf(f->path));
      if (rotated && !f->rotated) f->last_growth_ns = clock_.MonotonicNanos();
      f->rotated = rotated;
    } else if (!f->rotated) {
      f->rotated = true;  // deleted or moved out: drain what is left through the open fd
      f->last_growth_ns = clock_.MonotonicNanos();
    }
  }
  for (const auto& [id, e] : entries) {
    for (size_t s = 0; s < sources_.size(); ++s) {
      if (!MatchesGlob(s, dir, BaseOf(e.path))) continue;
      OpenKey key{s, id.first, id.second};
      if (files_.count(key) || ignored_.count(key)) continue;
      Open(s, e.path, 0, 0, true, false);  // appeared while running: read from its beginning
    }
  }
  // Rotated away before we opened it (created, written and renamed between two looks).
  std::set<size_t> sources_here;
  for (const Pattern& p : patterns_) {
    if (p.dir == dir) sources_here.insert(p.source);
  }
  for (size_t s : sources_here) AdoptUnreadSiblings(s, dir, entries, FamilyLook::kRunning);
  // Read everything in the directory now: a rotated file's last lines before the new one's first.
  std::vector<OpenKey> keys;
  for (auto& [key, f] : files_) {
    if (f->dir == dir) keys.push_back(key);
  }
  std::sort(keys.begin(), keys.end(), [this](const OpenKey& a, const OpenKey& b) {
    return files_[a]->rotated > files_[b]->rotated;
  });
  for (const OpenKey& k : keys) {
    if (stop_.load()) return;
    if (auto it = files_.find(k); it != files_.end()) Read(*it->second);
  }
}

void LogTailer::Truncated(OpenFile& f) {
  const uint64_t read_to = f.splitter.line_start();
  const std::string old_fp = f.fingerprint;
  const uint64_t old_fp_len = f.fingerprint_len;
  spdlog::info("logs: truncated (copytruncate) source={} path={} inode={} read_to={} generation={}",
               f.key.source, Printable(f.path), f.key.inode, read_to, f.key.generation);
  (void)ledger_->SetState(f.key, FileRowState::kDetached, read_to);
  if (old_fp_len > 0) {  // its copies are not new content
    if (content_fps_.size() >= 4096) content_fps_.erase(content_fps_.begin());
    content_fps_.emplace(f.source, old_fp_len, old_fp);
  }
  // The copy holds the old content: read what we had not read yet from it.
  for (const auto& [id, e] : ListDir(f.dir)) {
    if (id == std::make_pair(f.key.device, f.key.inode) || !S_ISREG(e.st.st_mode)) continue;
    if (static_cast<uint64_t>(e.st.st_size) <= read_to || old_fp_len == 0) continue;
    if (files_.count({f.source, id.first, id.second})) continue;
    int fd = ::open(e.path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) continue;
    auto fp = Fingerprint(fd, old_fp_len);
    ::close(fd);
    if (fp && fp->first == old_fp && fp->second == old_fp_len) {
      OpenListed(f.source, id, e.path, read_to, 0, true, true);
      break;
    }
  }
  f.key.generation += 1;
  f.splitter.Reset(0);
  f.fingerprint.clear();
  f.fingerprint_len = 0;
  f.pending_since_ns = 0;
  FileRow row;
  row.key = f.key;
  row.path = f.path;
  row.offset = 0;
  (void)ledger_->Put(row);
}

void LogTailer::EmitLines(OpenFile& f, std::vector<LogLine>& lines) {
  const LogFileSource& src = sources_[f.source];
  const RE2* inc = include_[f.source].get();
  const RE2* exc = exclude_[f.source].get();
  const int64_t now = clock_.NowUnixNanos();  // the lines of one read arrived together
  for (LogLine& l : lines) {
    if (stop_.load()) return;
    const re2::StringPiece piece(l.bytes.data(), l.bytes.size());
    if (inc && !RE2::PartialMatch(piece, *inc)) continue;
    if (exc && RE2::PartialMatch(piece, *exc)) continue;
    tripline::v1::Event ev;
    ev.set_time_unix_ns(now);
    tripline::v1::LogEvent* log = ev.mutable_log();
    log->set_source(src.name);
    log->set_path(f.path);
    log->set_offset(l.offset);
    log->set_next_offset(l.next_offset);
    log->set_device(f.key.device);
    log->set_inode(f.key.inode);
    log->set_generation(f.key.generation);
    log->set_truncated(l.truncated);
    log->set_partial(l.partial);
    for (auto& [k, v] : ParseLogLine(src.parser, l.bytes)) (*log->mutable_fields())[k] = v;
    log->set_line(std::move(l.bytes));
    if (!emit_(std::move(ev))) {
      stop_.store(true);
      return;
    }
  }
}

void LogTailer::Read(OpenFile& f) {
  if (f.ignored) return;
  struct stat st;
  if (::fstat(f.fd.get(), &st) != 0) return;
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < f.splitter.consumed()) {
    Truncated(f);
  } else if (f.fingerprint_len > 0) {
    auto fp = Fingerprint(f.fd.get(), f.fingerprint_len);
    if (fp && (fp->first != f.fingerprint || fp->second != f.fingerprint_len)) Truncated(f);
  }
  // Grow the fingerprint to kFingerprintBytes as the file grows, before reading its lines, so a
  // copy made of this content later can be recognised after a crash.
  // The longer fingerprint is taken only if the bytes it extends are still those we knew (one
  // read), so a truncation racing this cannot slip new content into it.
  if (!f.ignored && f.fingerprint_len < kFingerprintBytes && size > f.fingerprint_len) {
    std::string head(kFingerprintBytes, '\0');
    ssize_t n = ::pread(f.fd.get(), head.data(), head.size(), 0);
    if (n > 0) {
      head.resize(static_cast<size_t>(n));
      if (f.fingerprint_len > 0 &&
          (head.size() < f.fingerprint_len ||
           Blake2b256(std::string_view(head).substr(0, f.fingerprint_len)) != f.fingerprint)) {
        Truncated(f);
      } else if (head.size() > f.fingerprint_len) {
        f.fingerprint = Blake2b256(head);
        f.fingerprint_len = head.size();
        (void)ledger_->UpdateIdentity(f.key, f.path, f.fingerprint, f.fingerprint_len);
      }
    }
  }
  std::string buf(kReadChunk, '\0');
  std::vector<LogLine> lines;
  uint64_t budget = kReadBudget;
  bool grew = false;
  while (!stop_.load() && budget > 0) {
    ssize_t n = ::pread(f.fd.get(), buf.data(), buf.size(),
                        static_cast<off_t>(f.splitter.consumed()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status err = ErrnoStatus(errno, "read", f.path);
      Problem("read:" + f.path, std::string(err.message()), f.path);
      break;
    }
    if (n == 0) break;
    // Checked after the read, before its lines go: if the file was truncated and rewritten
    // meanwhile, these bytes may be new content at an old offset. Drop them; Truncated() takes
    // what was not read yet from the copy, and the new content from 0.
    if (f.fingerprint_len > 0) {
      auto fp = Fingerprint(f.fd.get(), f.fingerprint_len);
      if (fp && (fp->first != f.fingerprint || fp->second != f.fingerprint_len)) {
        Truncated(f);
        continue;
      }
    }
    if (!f.checked_binary && f.splitter.consumed() == 0) {
      // A new file's first bytes: NULs mean it is not a text log (a core dump, a database).
      f.checked_binary = true;
      if (std::memchr(buf.data(), '\0', std::min<size_t>(static_cast<size_t>(n), 4096))) {
        f.ignored = true;
        f.fd = UniqueFd();
        ignored_.insert({f.source, f.key.device, f.key.inode});
        (void)ledger_->Forget(f.key);
        Problem("binary:" + f.path,
                absl::StrFormat("source %s: not tailing a binary file (NUL bytes in its first "
                                "%d bytes)",
                                sources_[f.source].name, std::min<ssize_t>(n, 4096)),
                f.path);
        return;
      }
    }
    grew = true;
    budget -= std::min<uint64_t>(budget, static_cast<uint64_t>(n));
    lines.clear();
    f.splitter.Feed(std::string_view(buf.data(), static_cast<size_t>(n)), &lines);
    EmitLines(f, lines);
  }
  if (budget == 0) more_to_read_ = true;
  const int64_t now = clock_.MonotonicNanos();
  if (grew) f.last_growth_ns = now;
  if (!f.splitter.HasPending()) {
    f.pending_since_ns = 0;
  } else if (f.pending_since_ns == 0) {
    f.pending_since_ns = now;
  }
}

void LogTailer::Close(OpenKey key, bool retire) {
  auto it = files_.find(key);
  if (it == files_.end()) return;
  spdlog::info("logs: closed rotated file source={} path={} inode={} offset={}",
               it->second->key.source, Printable(it->second->path), it->second->key.inode,
               it->second->splitter.consumed());
  if (retire) (void)ledger_->SetState(it->second->key, FileRowState::kRetired);
  const OpenFile& f = *it->second;
  if (f.fingerprint_len > 0) {
    Remember(f.source, f.dir, f.key.device, f.key.inode, f.fingerprint, f.fingerprint_len);
  }
  files_.erase(it);
}

int64_t LogTailer::NextDeadlineNs() const {
  int64_t next = 0;
  auto consider = [&next](int64_t t) {
    if (t > 0 && (next == 0 || t < next)) next = t;
  };
  consider(next_retry_ns_);
  for (const auto& [key, f] : files_) {
    if (f->rotated) consider(clock_.MonotonicNanos() + kTickNs);
    if (f->pending_since_ns) {
      consider(f->pending_since_ns +
               absl::ToInt64Nanoseconds(sources_[f->source].partial_timeout));
    }
  }
  return next;
}

void LogTailer::Timers() {
  const int64_t now = clock_.MonotonicNanos();
  if (next_retry_ns_ && now >= next_retry_ns_) {
    std::set<std::string> was_missing = missing_dirs_;
    WatchDirs();
    for (const std::string& dir : was_missing) {
      if (!missing_dirs_.count(dir)) RescanDir(dir);
    }
  }
  std::vector<OpenKey> to_close;
  for (auto& [key, f] : files_) {
    if (stop_.load()) return;
    if (f->rotated) {
      Read(*f);
      if (now - f->last_growth_ns >= absl::ToInt64Nanoseconds(options_.rotate_wait) &&
          !f->splitter.HasPending()) {
        to_close.push_back(key);
      }
    }
    if (f->pending_since_ns &&
        now - f->pending_since_ns >= absl::ToInt64Nanoseconds(sources_[f->source].partial_timeout)) {
      Read(*f);  // the newline may have come meanwhile
      std::vector<LogLine> lines;
      if (f->pending_since_ns && f->splitter.Flush(&lines)) {
        f->pending_since_ns = 0;
        EmitLines(*f, lines);
      }
    }
  }
  for (const OpenKey& k : to_close) Close(k, true);
}

void LogTailer::HandleEvents() {
  std::vector<InotifyEvent> events;
  if (absl::Status st = inotify_->ReadEvents(&events); !st.ok()) {
    spdlog::error("logs: inotify read: {}", st.ToString());
  }
  std::set<std::string> rescan;
  std::set<std::pair<std::string, std::string>> modified;
  bool overflow = false;
  for (const InotifyEvent& e : events) {
    if (e.mask & IN_Q_OVERFLOW) {
      overflow = true;
      continue;
    }
    auto it = dir_by_wd_.find(e.wd);
    if (it == dir_by_wd_.end()) continue;
    const std::string dir = it->second;
    if (e.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
      inotify_->RemoveWatch(e.wd);
      dir_by_wd_.erase(e.wd);
      wd_by_dir_.erase(dir);
      missing_dirs_.insert(dir);
      next_retry_ns_ = clock_.MonotonicNanos() + absl::ToInt64Nanoseconds(options_.retry_interval);
      rescan.insert(dir);
      continue;
    }
    if (e.mask & (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE)) {
      rescan.insert(dir);
    } else if (e.mask & (IN_MODIFY | IN_CLOSE_WRITE)) {
      modified.emplace(dir, e.name);
    }
  }
  if (overflow) {
    spdlog::warn("logs: inotify queue overflow; looking at every directory");
    for (const auto& [dir, wd] : wd_by_dir_) rescan.insert(dir);
  }
  for (const std::string& dir : rescan) {
    if (stop_.load()) return;
    RescanDir(dir);
  }
  for (const auto& [dir, name] : modified) {
    if (stop_.load()) return;
    if (rescan.count(dir)) continue;
    bool known = false;
    for (auto& [key, f] : files_) {
      if (f->dir == dir && (f->rotated || BaseOf(f->path) == name)) {
        if (BaseOf(f->path) == name) known = true;
        Read(*f);
      }
    }
    if (!known && undecided_.count({dir, name})) {
      RescanDir(dir);  // a family member that was empty when last looked at
    } else if (!known) {
      for (size_t s = 0; s < sources_.size(); ++s) {
        if (MatchesGlob(s, dir, name)) {
          RescanDir(dir);  // a file we have not seen created (e.g. after an overflow)
          break;
        }
      }
    }
  }
}

void LogTailer::Run() {
  WatchDirs();  // before listing, so nothing created in between is missed
  for (size_t s = 0; s < sources_.size() && !stop_.load(); ++s) Recover(s);
  for (auto& [key, f] : files_) {
    if (stop_.load()) break;
    Read(*f);
  }
  while (!stop_.load()) {
    int timeout_ms = -1;
    if (more_to_read_) {
      timeout_ms = 0;
    } else if (int64_t next = NextDeadlineNs(); next != 0) {
      timeout_ms = static_cast<int>(
          std::clamp<int64_t>((next - clock_.MonotonicNanos() + 999'999) / 1'000'000, 0, 60'000));
    }
    struct pollfd fds[2] = {{inotify_->fd(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, timeout_ms);
    if (n < 0 && errno != EINTR) {
      spdlog::error("logs: poll: {}", ErrnoStatus(errno, "poll", "").ToString());
      return;
    }
    if (stop_.load()) break;
    if (more_to_read_) {
      more_to_read_ = false;
      for (auto& [key, f] : files_) {
        if (stop_.load()) break;
        Read(*f);
      }
    }
    if (n > 0 && (fds[0].revents & POLLIN)) HandleEvents();
    Timers();
  }
}

}  // namespace tripline::agent
