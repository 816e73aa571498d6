// Tails the log files of the configured sources and emits each line as a LogEvent.
//
// Files: each source names paths whose last component may be a glob; the directories above are
// watched with inotify (create, move, delete, modify), so a new matching file is picked up at once
// and a write wakes the reader. A file is followed by (device, inode) and a fingerprint of its
// first bytes, never by name:
//   - rename rotation: the old file stays open and is read to its end; it is closed once it has not
//     grown for rotate_wait while a file is back at its name (or it was deleted);
//   - copytruncate (the size shrinks or the first bytes change): a new generation is read from 0,
//     and the lines between what was read and the truncation are read from the copy, found in the
//     same directory by the old fingerprint;
//   - deleted while open: read to its end, then closed;
//   - rotated before it was ever opened (created, written and renamed between two looks, or
//     while the agent was down): found among the file's rotated siblings (see "family" below)
//     and read from its start;
//   - partial last line: waits for its newline up to partial_timeout, then is sent flagged partial;
//   - lines over max_line: cut and flagged truncated.
// Offsets come from the OffsetLedger and move only when batches are durable (see offset_ledger.h),
// so a restart resumes exactly after the last durable line. Lines filtered out by include/exclude
// are not sent (and are read again after a restart, then filtered again).
//
// Family: the files of a source's directory whose name matches a glob, or is such a name followed
// by '.', '-' or '_' and more (app.log.1, app.log-20240501, app.log.2.gz). Every member the
// tailer has accounted for — followed, or seen as an old archive, a copy of content already read
// (copytruncate, cp), or a compressed (binary) archive — is remembered by (device, inode) and
// fingerprint, in memory and in the ledger. A member that is not (nor a copy of known content)
// holds lines nobody read: it is followed from offset 0 as a rotated file. On a source's first
// start every member is an old archive. Members gone from the directory are forgotten.
//
// Problems (unreadable or binary file, glob matching nothing, a directory that does not exist,
// lines lost to a rotation while the agent was down) become AgentEvents LOG_SOURCE_ERROR, once
// per cause, and the tailer goes on.
//
// Threads: Start() runs one tailer thread that owns every fd and the inotify instance. `emit` is
// called on it and may block (back-pressure); when it returns false (shutdown) the tailer stops.
// Idle, the thread sleeps in poll() without timeout unless a partial line, a rotated file or a
// missing directory needs a later look.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/logs/line_splitter.h"
#include "agent/logs/log_parser.h"
#include "agent/logs/offset_ledger.h"
#include "platform/fs/inotify.h"
#include "platform/fs/unique_fd.h"
#include "platform/runtime/clock.h"
#include "re2/re2.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

struct LogFileSource {
  std::string name;
  std::vector<std::string> paths;  // absolute; glob only in the last component
  LogParser parser = LogParser::kRaw;
  std::string include;  // RE2 (empty: all lines)
  std::string exclude;  // RE2 (empty: none)
  bool start_at_beginning = false;
  size_t max_line = size_t{64} << 10;
  absl::Duration partial_timeout = absl::Seconds(5);
};

// A directory entry as listed (stat follows symlinks).
struct DirEntry {
  std::string path;
  struct stat st;
};

struct LogTailerOptions {
  absl::Duration rotate_wait = absl::Seconds(5);
  absl::Duration retry_interval = absl::Seconds(5);  // missing directories
};

class LogTailer {
 public:
  using EmitFn = std::function<bool(tripline::v1::Event)>;

  // `ledger` and `clock` outlive the tailer.
  LogTailer(std::vector<LogFileSource> sources, OffsetLedger* ledger, const Clock& clock,
            EmitFn emit, LogTailerOptions options = {});
  ~LogTailer();  // Stop()
  LogTailer(const LogTailer&) = delete;
  LogTailer& operator=(const LogTailer&) = delete;

  // Compiles the filters, creates the inotify instance and starts the tailer thread, which first
  // reopens the files the ledger knows at their durable offsets. Call after
  // OffsetLedger::Recover. Fails for a bad filter or when inotify cannot be created.
  absl::Status Start();

  // Wakes and joins the thread; safe without Start() and more than once. After Stop(), Start()
  // does nothing.
  void Stop();

 private:
  struct OpenFile {
    size_t source = 0;
    FileKey key;
    std::string path;
    std::string dir;
    UniqueFd fd;
    LineSplitter splitter{1, 0};
    std::string fingerprint;
    uint64_t fingerprint_len = 0;
    bool rotated = false;
    bool checked_binary = false;  // the first bytes were looked at for NULs
    bool ignored = false;         // binary: kept (so it is not reopened) but never read
    int64_t last_growth_ns = 0;   // monotonic
    int64_t pending_since_ns = 0;  // monotonic; 0 when no partial line waits
  };
  struct Pattern {
    size_t source;
    std::string dir;
    std::string glob;  // last component
  };
  using OpenKey = std::tuple<size_t, uint64_t, uint64_t>;  // source, device, inode

  void Run();
  void Recover(size_t source);
  void WatchDirs();
  void RescanDir(const std::string& dir);
  void HandleEvents();
  void Timers();
  int64_t NextDeadlineNs() const;
  bool MatchesGlob(size_t source, const std::string& dir, const std::string& name) const;
  // A rotated name of a matching one: a match, then '.', '-' or '_' and more.
  bool IsRotatedSibling(size_t source, const std::string& dir, const std::string& name) const;
  enum class FamilyLook { kFirstStart, kRecover, kRunning };
  // Accounts for the family members of `source` in `dir` (from `entries`): follows from 0 those
  // holding content nobody read, remembers the rest, forgets members gone.
  void AdoptUnreadSiblings(size_t source, const std::string& dir,
                           const std::map<std::pair<uint64_t, uint64_t>, DirEntry>& entries,
                           FamilyLook look);
  void Remember(size_t source, const std::string& dir, uint64_t device, uint64_t inode,
                const std::string& fingerprint, uint64_t fingerprint_len);
  // Opens `path` and follows it from `offset`; nullptr when it cannot be followed (reported) or
  // is followed already, or — with `expect` — when another file than (device, inode) `expect`
  // is at `path` now (then *moved is set).
  OpenFile* Open(size_t source, const std::string& path, uint64_t offset, uint64_t generation,
                 bool new_file, bool rotated,
                 std::optional<std::pair<uint64_t, uint64_t>> expect = std::nullopt,
                 bool* moved = nullptr);
  // Open() of the file (device, inode) `id` listed at `path`: if it was renamed since it was
  // listed, it is looked for again in its directory.
  OpenFile* OpenListed(size_t source, std::pair<uint64_t, uint64_t> id, std::string path,
                       uint64_t offset, uint64_t generation, bool new_file, bool rotated);
  void Read(OpenFile& f);
  void Truncated(OpenFile& f);
  void Close(OpenKey key, bool retire);
  void EmitLines(OpenFile& f, std::vector<LogLine>& lines);
  void Problem(const std::string& cause, const std::string& message, const std::string& path);

  // Constant after construction.
  const std::vector<LogFileSource> sources_;
  OffsetLedger* const ledger_;
  const Clock& clock_;
  const EmitFn emit_;
  const LogTailerOptions options_;
  std::vector<Pattern> patterns_;

  absl::Mutex start_mu_;  // orders Start() and Stop()
  bool stopped_ ABSL_GUARDED_BY(start_mu_) = false;
  std::atomic<bool> stop_{false};
  UniqueFd wake_fd_;
  std::thread thread_;

  // Owned by the tailer thread (set up by Start() before it runs).
  std::vector<std::unique_ptr<RE2>> include_, exclude_;
  std::optional<Inotify> inotify_;
  std::map<int, std::string> dir_by_wd_;
  std::map<std::string, int> wd_by_dir_;
  std::set<std::string> missing_dirs_;
  int64_t next_retry_ns_ = 0;
  std::map<OpenKey, std::unique_ptr<OpenFile>> files_;
  std::set<OpenKey> ignored_;        // binary files
  std::set<std::string> reported_;   // causes already reported
  struct Known {
    std::string dir;
    std::string fingerprint;
    uint64_t fingerprint_len = 0;
  };
  std::map<OpenKey, Known> known_;  // family members accounted for (mirrored in the ledger)
  // (source, length, fingerprint) of content read and then truncated away: its copies are not new.
  std::set<std::tuple<size_t, uint64_t, std::string>> content_fps_;
  // Empty family members, looked at again when they change.
  std::set<std::pair<std::string, std::string>> undecided_;  // (dir, name)
  bool more_to_read_ = false;        // a read stopped at its budget
};

}  // namespace tripline::agent
