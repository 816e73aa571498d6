#include "agent/fim/fim_watcher.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <unordered_set>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "platform/crypto/digest.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

using tripline::v1::AgentEvent;
using tripline::v1::Event;
using tripline::v1::FileEvent;

// Collects what the watcher emits and lets a test wait for an event with a deadline.
class EventLog {
 public:
  void Add(Event e) {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(e));
  }
  // The first event from index `from` on that satisfies `pred`, waiting up to 10 s.
  std::optional<Event> WaitFor(const std::function<bool(const Event&)>& pred, size_t from = 0) {
    absl::MutexLock lock(&mu_);
    auto found = [&]() -> const Event* {
      for (size_t i = from; i < events_.size(); ++i) {
        if (pred(events_[i])) return &events_[i];
      }
      return nullptr;
    };
    auto ready = [&] { return found() != nullptr; };
    mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Seconds(10));
    const Event* e = found();
    if (e == nullptr) return std::nullopt;
    return *e;
  }
  std::vector<Event> Snapshot() {
    absl::MutexLock lock(&mu_);
    return events_;
  }
  size_t size() {
    absl::MutexLock lock(&mu_);
    return events_.size();
  }

 private:
  absl::Mutex mu_;
  std::vector<Event> events_ ABSL_GUARDED_BY(mu_);
};

std::function<bool(const Event&)> FileIs(FileEvent::Change change, const std::string& path) {
  return [=](const Event& e) {
    return e.has_file() && e.file().change() == change && e.file().path() == path;
  };
}

std::function<bool(const Event&)> AgentIs(AgentEvent::Kind kind) {
  return [=](const Event& e) { return e.has_agent() && e.agent().kind() == kind; };
}

// Writes with open/write/close so inotify sees IN_CLOSE_WRITE, like any editor or shell would.
void WriteFile(const std::string& path, const std::string& contents) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, contents.data(), contents.size()), static_cast<ssize_t>(contents.size()));
  ASSERT_EQ(::close(fd), 0);
}

class FimWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.Sub("root");
    ASSERT_EQ(::mkdir(root_.c_str(), 0755), 0);
  }
  void TearDown() override {
    if (watcher_) watcher_->Stop();
  }

  // Starts a watcher on root_ and waits for its baseline.
  void Start(std::vector<std::string> exclude = {}, bool recursive = true,
             FimOptions options = {}) {
    FimRoot r;
    r.path = root_;
    r.recursive = recursive;
    r.exclude = std::move(exclude);
    const size_t from = log_.size();
    watcher_ =
        std::make_unique<FimWatcher>(std::vector<FimRoot>{r}, std::move(options), SystemClock(),
                                     [this](Event e) { log_.Add(std::move(e)); });
    ASSERT_TRUE(watcher_->Start().ok());
    baseline_ = log_.WaitFor(AgentIs(AgentEvent::BASELINE_COMPLETE), from);
    ASSERT_TRUE(baseline_.has_value());
  }

  // Index of the first event from `from` on that satisfies `pred`, or -1.
  int IndexOf(const std::function<bool(const Event&)>& pred, size_t from = 0) {
    std::vector<Event> events = log_.Snapshot();
    for (size_t i = from; i < events.size(); ++i) {
      if (pred(events[i])) return static_cast<int>(i);
    }
    return -1;
  }

  // Creates a marker file and waits for its CREATED: every change made before it has been
  // processed by then, since inotify delivers in order.
  void Barrier() {
    const std::string marker = root_ + "/marker-" + std::to_string(++markers_);
    WriteFile(marker, "m");
    ASSERT_TRUE(log_.WaitFor(FileIs(FileEvent::CREATED, marker)).has_value());
  }

  std::vector<Event> FileEventsFor(const std::string& path) {
    std::vector<Event> out;
    for (const Event& e : log_.Snapshot()) {
      if (e.has_file() && (e.file().path() == path || e.file().old_path() == path)) {
        out.push_back(e);
      }
    }
    return out;
  }

  testing::TempDir dir_;
  std::string root_;
  EventLog log_;
  std::unique_ptr<FimWatcher> watcher_;
  std::optional<Event> baseline_;
  int markers_ = 0;
};

TEST_F(FimWatcherTest, BaselineRecordsExistingFilesWithoutReportingThem) {
  WriteFile(root_ + "/a", "alpha");
  ASSERT_EQ(::mkdir((root_ + "/d").c_str(), 0755), 0);
  WriteFile(root_ + "/d/b", "beta");
  Start();
  EXPECT_EQ(baseline_->agent().files(), 4u);  // root, a, d, d/b
  EXPECT_EQ(baseline_->agent().bytes_hashed(), 9u);
  EXPECT_GT(baseline_->time_unix_ns(), 0);
  Barrier();
  EXPECT_TRUE(FileEventsFor(root_ + "/a").empty());
  EXPECT_TRUE(FileEventsFor(root_ + "/d/b").empty());
}

TEST_F(FimWatcherTest, CreateModifyDeleteCarryBeforeAndAfter) {
  Start();
  const std::string f = root_ + "/passwd";
  WriteFile(f, "one");
  ASSERT_TRUE(log_.WaitFor([&](const Event& e) {
    return e.has_file() && e.file().path() == f && e.file().after().sha256() == Sha256("one");
  }));
  std::optional<Event> created = log_.WaitFor(FileIs(FileEvent::CREATED, f));
  ASSERT_TRUE(created);
  EXPECT_FALSE(created->file().has_before());
  EXPECT_TRUE(created->file().has_after());
  EXPECT_GT(created->time_unix_ns(), 0);
  // The first write's IN_CLOSE_WRITE may still be queued; were it read after the rewrite below
  // truncated the file, it would (rightly) report the empty file in between.
  Barrier();

  size_t mark = log_.size();
  WriteFile(f, "two!");
  std::optional<Event> modified = log_.WaitFor(FileIs(FileEvent::MODIFIED, f), mark);
  ASSERT_TRUE(modified);
  EXPECT_EQ(modified->file().before().sha256(), Sha256("one"));
  EXPECT_EQ(modified->file().after().sha256(), Sha256("two!"));
  EXPECT_EQ(modified->file().after().size(), 4u);
  EXPECT_TRUE(S_ISREG(modified->file().after().mode()));

  ASSERT_EQ(::unlink(f.c_str()), 0);
  std::optional<Event> deleted = log_.WaitFor(FileIs(FileEvent::DELETED, f));
  ASSERT_TRUE(deleted);
  EXPECT_EQ(deleted->file().before().sha256(), Sha256("two!"));
  EXPECT_FALSE(deleted->file().has_after());
}

TEST_F(FimWatcherTest, ChmodIsReportedAsAttrib) {
  const std::string f = root_ + "/shadow";
  WriteFile(f, "secret");
  ASSERT_EQ(::chmod(f.c_str(), 0644), 0);
  Start();
  ASSERT_EQ(::chmod(f.c_str(), 0600), 0);
  std::optional<Event> e = log_.WaitFor(FileIs(FileEvent::ATTRIB, f));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->file().before().mode() & 07777, 0644u);
  EXPECT_EQ(e->file().after().mode() & 07777, 0600u);
  EXPECT_EQ(e->file().after().sha256(), Sha256("secret"));
}

TEST_F(FimWatcherTest, RenameIsPairedIntoOneRenamedEvent) {
  const std::string from = root_ + "/old";
  const std::string to = root_ + "/new";
  WriteFile(from, "content");
  Start();
  ASSERT_EQ(::rename(from.c_str(), to.c_str()), 0);
  std::optional<Event> e = log_.WaitFor(FileIs(FileEvent::RENAMED, to));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->file().old_path(), from);
  EXPECT_EQ(e->file().before().sha256(), Sha256("content"));
  EXPECT_EQ(e->file().after().sha256(), Sha256("content"));
  Barrier();
  EXPECT_EQ(FileEventsFor(from).size(), 1u);  // the RENAMED only: no DELETED, no CREATED
  EXPECT_EQ(FileEventsFor(to).size(), 1u);
}

TEST_F(FimWatcherTest, RenamedDirectoryKeepsBeingWatchedUnderItsNewName) {
  ASSERT_EQ(::mkdir((root_ + "/conf.d").c_str(), 0755), 0);
  WriteFile(root_ + "/conf.d/x", "1");
  Start();
  ASSERT_EQ(::rename((root_ + "/conf.d").c_str(), (root_ + "/conf.new").c_str()), 0);
  ASSERT_TRUE(log_.WaitFor(FileIs(FileEvent::RENAMED, root_ + "/conf.new")));
  WriteFile(root_ + "/conf.new/x", "2");
  std::optional<Event> e = log_.WaitFor(FileIs(FileEvent::MODIFIED, root_ + "/conf.new/x"));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->file().before().sha256(), Sha256("1"));
}

TEST_F(FimWatcherTest, MovesAcrossTheRootBoundaryAreDeletedAndCreated) {
  const std::string outside = dir_.Sub("outside");
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  WriteFile(root_ + "/leaving", "bye");
  ASSERT_EQ(::mkdir((outside + "/incoming").c_str(), 0755), 0);
  WriteFile(outside + "/incoming/payload", "evil");
  Start();
  ASSERT_EQ(::rename((root_ + "/leaving").c_str(), (outside + "/leaving").c_str()), 0);
  ASSERT_TRUE(log_.WaitFor(FileIs(FileEvent::DELETED, root_ + "/leaving")));
  ASSERT_EQ(::rename((outside + "/incoming").c_str(), (root_ + "/incoming").c_str()), 0);
  ASSERT_TRUE(log_.WaitFor(FileIs(FileEvent::CREATED, root_ + "/incoming")));
  std::optional<Event> payload =
      log_.WaitFor(FileIs(FileEvent::CREATED, root_ + "/incoming/payload"));
  ASSERT_TRUE(payload);
  EXPECT_EQ(payload->file().after().sha256(), Sha256("evil"));
}

TEST_F(FimWatcherTest, DeepDirectoryCreatedAndWrittenAtOnceIsReported) {
  Start();
  std::error_code ec;
  std::filesystem::create_directories(root_ + "/a/b/c", ec);
  ASSERT_FALSE(ec);
  const std::string f = root_ + "/a/b/c/f";
  WriteFile(f, "x\n");
  for (const char* d : {"/a", "/a/b", "/a/b/c"}) {
    EXPECT_TRUE(log_.WaitFor(FileIs(FileEvent::CREATED, root_ + d))) << d;
  }
  EXPECT_TRUE(log_.WaitFor(FileIs(FileEvent::CREATED, f)));
  EXPECT_TRUE(log_.WaitFor([&](const Event& e) {
    return e.has_file() && e.file().path() == f && e.file().after().sha256() == Sha256("x\n");
  }));
  // And the new directory is watched: a later change inside it is seen.
  WriteFile(f, "y\n");
  EXPECT_TRUE(log_.WaitFor(FileIs(FileEvent::MODIFIED, f)));
}

TEST_F(FimWatcherTest, IdenticalRewriteEmitsNothing) {
  const std::string f = root_ + "/hosts";
  WriteFile(f, "127.0.0.1 localhost\n");
  Start();
  WriteFile(f, "127.0.0.1 localhost\n");
  ASSERT_EQ(::utimensat(AT_FDCWD, f.c_str(), nullptr, 0), 0);  // touch: new mtime, same bytes
  Barrier();
  EXPECT_TRUE(FileEventsFor(f).empty());
}

TEST_F(FimWatcherTest, NonUtf8NameTravelsAsBytes) {
  Start();
  const std::string f = root_ + "/caf\xe9\xff";
  WriteFile(f, "bytes");
  std::optional<Event> e = log_.WaitFor(FileIs(FileEvent::CREATED, f));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->file().path(), f);
  std::string wire;
  ASSERT_TRUE(e->SerializeToString(&wire));
  Event back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_EQ(back.file().path(), f);
}

TEST_F(FimWatcherTest, ExcludedPathsAreNeitherRecordedNorReported) {
  ASSERT_EQ(::mkdir((root_ + "/cache").c_str(), 0755), 0);
  WriteFile(root_ + "/cache/old", "o");
  Start({"*.swp", root_ + "/cache"});
  EXPECT_EQ(baseline_->agent().files(), 1u);  // the root only
  WriteFile(root_ + "/.passwd.swp", "tmp");
  WriteFile(root_ + "/cache/new", "n");
  ASSERT_EQ(::mkdir((root_ + "/sub").c_str(), 0755), 0);
  WriteFile(root_ + "/sub/x.swp", "tmp");
  Barrier();
  EXPECT_TRUE(FileEventsFor(root_ + "/.passwd.swp").empty());
  EXPECT_TRUE(FileEventsFor(root_ + "/cache/new").empty());
  EXPECT_TRUE(FileEventsFor(root_ + "/sub/x.swp").empty());
  EXPECT_FALSE(FileEventsFor(root_ + "/sub").empty());
}

TEST_F(FimWatcherTest, SymlinkIsRecordedNotFollowed) {
  Start();
  const std::string link = root_ + "/link";
  ASSERT_EQ(::symlink("/nonexistent/target", link.c_str()), 0);
  std::optional<Event> e = log_.WaitFor(FileIs(FileEvent::CREATED, link));
  ASSERT_TRUE(e);
  EXPECT_TRUE(S_ISLNK(e->file().after().mode()));
  EXPECT_EQ(e->file().after().link_target(), "/nonexistent/target");
  EXPECT_TRUE(e->file().after().sha256().empty());
}

TEST_F(FimWatcherTest, NonRecursiveRootDoesNotDescend) {
  ASSERT_EQ(::mkdir((root_ + "/sub").c_str(), 0755), 0);
  WriteFile(root_ + "/sub/deep", "d");
  Start({}, /*recursive=*/false);
  EXPECT_EQ(baseline_->agent().files(), 2u);  // root and sub
  WriteFile(root_ + "/sub/deep", "changed");
  WriteFile(root_ + "/top", "t");
  ASSERT_TRUE(log_.WaitFor(FileIs(FileEvent::CREATED, root_ + "/top")));
  EXPECT_TRUE(FileEventsFor(root_ + "/sub/deep").empty());
}

TEST_F(FimWatcherTest, MissingRootIsReportedAsWatchError) {
  root_ = dir_.Sub("not-there");
  Start();
  std::optional<Event> e = log_.WaitFor(AgentIs(AgentEvent::WATCH_ERROR));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->agent().path(), root_);
}

TEST_F(FimWatcherTest, RescanReportsWhatChangedAgainstTheBaseline) {
  const std::string kept = root_ + "/kept";
  const std::string gone = root_ + "/gone";
  WriteFile(kept, "v1");
  WriteFile(gone, "g");
  // Hold the FIM thread inside its BASELINE_COMPLETE emit while the tree changes, so the rescan
  // (requested before it resumes) runs before the queued inotify events are read.
  absl::Mutex gate_mu;
  bool open = false;
  FimRoot r{root_, true, {}, int64_t{64} << 20};
  watcher_ = std::make_unique<FimWatcher>(std::vector<FimRoot>{r}, SystemClock(), [&](Event e) {
    const bool hold = e.has_agent() && e.agent().kind() == AgentEvent::BASELINE_COMPLETE;
    log_.Add(std::move(e));
    if (hold) {
      absl::MutexLock lock(&gate_mu);
      gate_mu.Await(absl::Condition(&open));
    }
  });
  ASSERT_TRUE(watcher_->Start().ok());
  ASSERT_TRUE(log_.WaitFor(AgentIs(AgentEvent::BASELINE_COMPLETE)));
  WriteFile(kept, "v2");
  ASSERT_EQ(::unlink(gone.c_str()), 0);
  WriteFile(root_ + "/new", "n");
  watcher_->RequestRescan();
  {
    absl::MutexLock lock(&gate_mu);
    open = true;
  }
  std::optional<Event> done = log_.WaitFor(AgentIs(AgentEvent::RESCAN_DONE));
  ASSERT_TRUE(done);
  EXPECT_EQ(done->agent().files(), 3u);  // root, kept, new
  std::vector<Event> events = log_.Snapshot();
  size_t done_at = 0;
  while (
      !(events[done_at].has_agent() && events[done_at].agent().kind() == AgentEvent::RESCAN_DONE)) {
    ++done_at;
  }
  auto found_before_done = [&](FileEvent::Change change, const std::string& path) {
    for (size_t i = 0; i < done_at; ++i) {
      if (FileIs(change, path)(events[i])) return true;
    }
    return false;
  };
  EXPECT_TRUE(found_before_done(FileEvent::MODIFIED, kept));
  EXPECT_TRUE(found_before_done(FileEvent::DELETED, gone));
  EXPECT_TRUE(found_before_done(FileEvent::CREATED, root_ + "/new"));
  // The inotify events queued meanwhile find the baseline already up to date.
  Barrier();
  EXPECT_EQ(FileEventsFor(kept).size(), 1u);
  EXPECT_EQ(FileEventsFor(gone).size(), 1u);
}

TEST_F(FimWatcherTest, RestartReportsWhatChangedWhileTheAgentWasDown) {
  const std::string kept = root_ + "/kept";
  const std::string gone = root_ + "/gone";
  const std::string live = root_ + "/live";
  WriteFile(kept, "v1");
  WriteFile(gone, "g");
  FimOptions options;
  options.baseline_path = dir_.Sub("fim-baseline.db");
  Start({}, true, options);
  EXPECT_EQ(baseline_->agent().message(), "new baseline");
  WriteFile(live, "l");  // reported in real time, and stored: not reported again after restart
  ASSERT_TRUE(log_.WaitFor([&](const Event& e) {
    return e.has_file() && e.file().path() == live && e.file().after().sha256() == Sha256("l");
  }));
  watcher_->Stop();

  WriteFile(kept, "v2");
  ASSERT_EQ(::unlink(gone.c_str()), 0);
  WriteFile(root_ + "/new", "n");
  ASSERT_EQ(::chmod(live.c_str(), 0600), 0);
  const size_t mark = log_.size();
  Start({}, true, options);
  EXPECT_EQ(baseline_->agent().message(), "4 changes since the stored baseline");
  const int done = IndexOf(AgentIs(AgentEvent::BASELINE_COMPLETE), mark);
  for (const auto& [change, path] :
       std::vector<std::pair<FileEvent::Change, std::string>>{{FileEvent::MODIFIED, kept},
                                                              {FileEvent::DELETED, gone},
                                                              {FileEvent::CREATED, root_ + "/new"},
                                                              {FileEvent::ATTRIB, live}}) {
    const int at = IndexOf(FileIs(change, path), mark);
    EXPECT_GE(at, 0) << path;
    EXPECT_LT(at, done) << path;  // reported before realtime monitoring resumes
  }
  std::optional<Event> modified = log_.WaitFor(FileIs(FileEvent::MODIFIED, kept), mark);
  ASSERT_TRUE(modified);
  EXPECT_EQ(modified->file().before().sha256(), Sha256("v1"));
  EXPECT_EQ(IndexOf(FileIs(FileEvent::CREATED, live), mark), -1);

  // And a third start with nothing changed reports nothing.
  watcher_->Stop();
  Start({}, true, options);
  EXPECT_EQ(baseline_->agent().message(), "0 changes since the stored baseline");
}

TEST_F(FimWatcherTest, ChangedRootOptionsTakeANewBaselineInsteadOfReportingNoise) {
  WriteFile(root_ + "/a.swp", "x");
  FimOptions options;
  options.baseline_path = dir_.Sub("fim-baseline.db");
  Start({"*.swp"}, true, options);
  watcher_->Stop();
  const size_t mark = log_.size();
  Start({}, true, options);  // a.swp is now included: not "created", it was always there
  EXPECT_EQ(baseline_->agent().message(), "new baseline");
  EXPECT_EQ(IndexOf(FileIs(FileEvent::CREATED, root_ + "/a.swp"), mark), -1);
}

TEST_F(FimWatcherTest, AWriteBurstWithoutCloseIsOneDebouncedEvent) {
  const std::string f = root_ + "/log";
  WriteFile(f, "");
  FimOptions options;
  options.debounce_ms = 1000;
  options.debounce_max_ms = 20000;
  Start({}, true, options);
  int fd = ::open(f.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(::write(fd, "0123456789", 10), 10);
  // The file stays open: no IN_CLOSE_WRITE; the debounced IN_MODIFY must report it.
  std::optional<Event> e = log_.WaitFor(FileIs(FileEvent::MODIFIED, f));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->file().after().size(), 10000u);
  EXPECT_EQ(e->file().after().sha256().size(), 32u);
  ASSERT_EQ(::close(fd), 0);  // closing changes nothing more
  Barrier();
  EXPECT_EQ(FileEventsFor(f).size(), 1u);
}

TEST_F(FimWatcherTest, CloseWriteReportsAtOnceWithoutWaitingForTheDebounce) {
  const std::string f = root_ + "/conf";
  WriteFile(f, "a");
  FimOptions options;
  options.debounce_ms = 60000;  // only IN_CLOSE_WRITE can report within the wait below
  options.debounce_max_ms = 60000;
  Start({}, true, options);
  WriteFile(f, "b");
  std::optional<Event> e = log_.WaitFor(FileIs(FileEvent::MODIFIED, f));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->file().after().sha256(), Sha256("b"));
}

TEST_F(FimWatcherTest, DirectoriesCreatedDeepAndWrittenAtOnceAreNeverMissed) {
  Start();
  // Repeated to give the race (a file created before its directory is watched) many chances.
  for (int i = 0; i < 50; ++i) {
    const std::string deep = root_ + "/t" + std::to_string(i) + "/a/b/c/d";
    std::error_code ec;
    std::filesystem::create_directories(deep, ec);
    ASSERT_FALSE(ec);
    WriteFile(deep + "/f", std::to_string(i));
    ASSERT_EQ(::mkdir((deep + "/e").c_str(), 0755), 0);
    WriteFile(deep + "/e/g", "g");
  }
  for (int i = 0; i < 50; ++i) {
    const std::string deep = root_ + "/t" + std::to_string(i) + "/a/b/c/d";
    std::optional<Event> f = log_.WaitFor([&](const Event& e) {
      return e.has_file() && e.file().path() == deep + "/f" &&
             e.file().after().sha256() == Sha256(std::to_string(i));
    });
    EXPECT_TRUE(f) << deep;
    EXPECT_TRUE(log_.WaitFor(FileIs(FileEvent::CREATED, deep + "/e/g"))) << deep;
  }
}

TEST_F(FimWatcherTest, WatchLimitNamesTheSubtreeWhichIsThenScannedPeriodically) {
  ASSERT_EQ(::mkdir((root_ + "/sub").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((root_ + "/sub/inner").c_str(), 0755), 0);
  FimOptions options;
  options.max_watches = 1;  // the root only
  options.fallback_scan_interval_ms = 200;
  Start({}, true, options);
  std::optional<Event> limit = log_.WaitFor(AgentIs(AgentEvent::WATCH_LIMIT_REACHED));
  ASSERT_TRUE(limit);
  EXPECT_EQ(limit->agent().path(), root_ + "/sub");  // one event for the subtree
  EXPECT_NE(limit->agent().message().find("max_watches"), std::string::npos);

  WriteFile(root_ + "/sub/inner/planted", "p");  // no watch sees this; the periodic scan does
  std::optional<Event> e = log_.WaitFor(FileIs(FileEvent::CREATED, root_ + "/sub/inner/planted"));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->file().after().sha256(), Sha256("p"));
  WriteFile(root_ + "/top", "t");  // the watched root still reports in real time
  EXPECT_TRUE(log_.WaitFor(FileIs(FileEvent::CREATED, root_ + "/top")));
  size_t limits = 0;
  for (const Event& ev : log_.Snapshot()) {
    limits += AgentIs(AgentEvent::WATCH_LIMIT_REACHED)(ev) ? 1 : 0;
  }
  EXPECT_EQ(limits, 1u);  // not repeated by every periodic scan
}

// A real IN_Q_OVERFLOW: the FIM thread is held while more files are created than the kernel
// queues (fs.inotify.max_queued_events), then every one of them must be reported.
TEST_F(FimWatcherTest, QueueOverflowRescansAndFindsEveryFile) {
  int max_queued = 16384;
  if (FILE* f = std::fopen("/proc/sys/fs/inotify/max_queued_events", "r")) {
    if (std::fscanf(f, "%d", &max_queued) != 1) max_queued = 16384;
    std::fclose(f);
  }
  const int files = max_queued + 2000;
  absl::Mutex gate_mu;
  bool open = false;
  FimRoot r;
  r.path = root_;
  watcher_ = std::make_unique<FimWatcher>(std::vector<FimRoot>{r}, SystemClock(), [&](Event e) {
    const bool hold = e.has_agent() && e.agent().kind() == AgentEvent::BASELINE_COMPLETE;
    log_.Add(std::move(e));
    if (hold) {
      absl::MutexLock lock(&gate_mu);
      gate_mu.Await(absl::Condition(&open));
    }
  });
  ASSERT_TRUE(watcher_->Start().ok());
  ASSERT_TRUE(log_.WaitFor(AgentIs(AgentEvent::BASELINE_COMPLETE)));
  for (int i = 0; i < files; ++i) WriteFile(root_ + "/f" + std::to_string(i), "x");
  {
    absl::MutexLock lock(&gate_mu);
    open = true;
  }
  ASSERT_TRUE(log_.WaitFor(AgentIs(AgentEvent::INOTIFY_OVERFLOW)));
  ASSERT_TRUE(log_.WaitFor(AgentIs(AgentEvent::RESCAN_DONE)));
  Barrier();
  std::unordered_set<std::string> created;
  for (const Event& e : log_.Snapshot()) {
    if (e.has_file() && e.file().change() == FileEvent::CREATED) created.insert(e.file().path());
  }
  for (int i = 0; i < files; ++i) {
    ASSERT_EQ(created.count(root_ + "/f" + std::to_string(i)), 1u) << i;
  }
}

TEST(IsExcluded, GlobWithoutSlashMatchesBaseNameWithSlashFullPath) {
  std::vector<std::string> globs = {"*.swp", "/etc/mtab"};
  EXPECT_TRUE(IsExcluded(globs, "/etc/.x.swp", ".x.swp"));
  EXPECT_TRUE(IsExcluded(globs, "/etc/mtab", "mtab"));
  EXPECT_FALSE(IsExcluded(globs, "/etc/sub/mtab", "mtab"));
  EXPECT_FALSE(IsExcluded(globs, "/etc/passwd", "passwd"));
}

}  // namespace
}  // namespace tripline::agent

namespace tripline::agent {
namespace {

// The batcher and spool as FIM sees them: `offer` takes events while there is room; the test
// seals what was taken into numbered batches (FimDelivery learns which ids each holds), makes
// batches durable, and "crashes" by dropping what was taken but not sealed.
class FimDeliveryPipelineTest : public FimWatcherTest {
 protected:
  void OpenDelivery(uint64_t landed) {
    delivery_.reset();
    absl::StatusOr<std::unique_ptr<FimDelivery>> d = FimDelivery::Open(dir_.Sub("delivery.db"));
    ASSERT_TRUE(d.ok()) << d.status();
    delivery_ = *std::move(d);
    ASSERT_TRUE(delivery_->Recover(landed).ok());
  }
  FimOptions Options() {
    FimOptions o;
    o.baseline_path = dir_.Sub("fim-baseline.db");
    o.delivery = delivery_.get();
    o.retry_ms = 10;
    o.offer = [this](const Event& e) {
      if (!room_.load()) {
        ++refused_;
        return false;
      }
      {
        absl::MutexLock lock(&taken_mu_);
        taken_.push_back(e);
      }
      log_.Add(e);
      return true;
    };
    return o;
  }
  // Makes `path` appear with `contents` in one step (renamed in from outside the root), so it is
  // one CREATED whenever FIM looks.
  void PlaceFile(const std::string& path, const std::string& contents) {
    const std::string staging = dir_.Sub("staging");
    WriteFile(staging, contents);
    ASSERT_EQ(::rename(staging.c_str(), path.c_str()), 0) << path;
  }
  // Like Barrier, with a marker that is one CREATED: nothing of it is left for a later look.
  void Settle() {
    const std::string marker = root_ + "/settled-" + std::to_string(++settles_);
    PlaceFile(marker, "s");
    ASSERT_TRUE(log_.WaitFor(FileIs(FileEvent::CREATED, marker)).has_value());
  }
  // Waits until the baseline file says the watcher holds pending events or dirty roots.
  void WaitStored(bool dirty) {
    for (int i = 0; i < 10000; ++i) {
      absl::StatusOr<std::unique_ptr<BaselineStore>> s =
          BaselineStore::Open(dir_.Sub("fim-baseline.db"));
      ASSERT_TRUE(s.ok());
      if (dirty ? !(*s)->LoadDirty()->empty() : *(*s)->MaxPendingId() > 0) return;
      absl::SleepFor(absl::Milliseconds(1));
    }
    FAIL() << "nothing stored";
  }
  // Seals everything taken so far into batch `seq`.
  void Seal(uint64_t seq) {
    tripline::v1::EventBatch batch;
    absl::MutexLock lock(&taken_mu_);
    for (Event& e : taken_) *batch.add_events() = std::move(e);
    taken_.clear();
    ASSERT_TRUE(delivery_->RecordSealed(seq, batch).ok());
  }
  // Waits for the event that shows `path` holding `contents`.
  void WaitContents(const std::string& path, const std::string& contents, size_t from = 0) {
    ASSERT_TRUE(log_.WaitFor(
        [&](const Event& e) {
          return e.has_file() && e.file().path() == path &&
                 e.file().after().sha256() == Sha256(contents);
        },
        from));
  }
  // Every file event about `path` from `from` on.
  std::vector<Event> EventsFor(const std::string& path, size_t from) {
    std::vector<Event> out;
    std::vector<Event> all = log_.Snapshot();
    for (size_t i = from; i < all.size(); ++i) {
      if (all[i].has_file() && all[i].file().path() == path) out.push_back(all[i]);
    }
    return out;
  }

  std::unique_ptr<FimDelivery> delivery_;
  std::atomic<bool> room_{true};
  std::atomic<int> refused_{0};
  int settles_ = 0;
  absl::Mutex taken_mu_;
  std::vector<Event> taken_ ABSL_GUARDED_BY(taken_mu_);
};

TEST_F(FimDeliveryPipelineTest, ACrashReportsAgainExactlyTheChangesWhoseBatchDidNotLand) {
  OpenDelivery(0);
  Start({}, true, Options());
  EXPECT_EQ(baseline_->agent().message(), "new baseline");
  const std::string durable = root_ + "/durable";
  const std::string landed = root_ + "/landed";
  const std::string lost_batch = root_ + "/lost-batch";
  const std::string in_memory = root_ + "/in-memory";
  PlaceFile(durable, "1");
  WaitContents(durable, "1");
  Seal(1);
  ASSERT_TRUE(delivery_->Durable(1).ok());  // fdatasync'd in the spool
  PlaceFile(landed, "2");
  WaitContents(landed, "2");
  Seal(2);  // written to the spool, not yet synced: survives a kill -9
  PlaceFile(lost_batch, "3");
  WaitContents(lost_batch, "3");
  Seal(3);  // sealed, but the process died before the spool had it
  PlaceFile(in_memory, "4");
  WaitContents(in_memory, "4");  // still in the batcher's queue
  const std::vector<Event> lost = [&] {
    std::vector<Event> v = EventsFor(lost_batch, 0);
    for (const Event& e : EventsFor(in_memory, 0)) v.push_back(e);
    return v;
  }();
  watcher_->Stop();
  {
    absl::MutexLock lock(&taken_mu_);
    taken_.clear();
  }

  // The restart: the spool's head is batch 2.
  OpenDelivery(2);
  const size_t mark = log_.size();
  Start({}, true, Options());
  EXPECT_EQ(baseline_->agent().message(), "0 changes since the stored baseline");
  Settle();
  EXPECT_TRUE(EventsFor(durable, mark).empty());
  EXPECT_TRUE(EventsFor(landed, mark).empty());
  // The lost events come again, as they were (same time, same states), before the new run's
  // BASELINE_COMPLETE.
  std::vector<Event> again = EventsFor(lost_batch, mark);
  for (const Event& e : EventsFor(in_memory, mark)) again.push_back(e);
  ASSERT_EQ(again.size(), lost.size());
  for (size_t i = 0; i < lost.size(); ++i) {
    EXPECT_EQ(again[i].SerializeAsString(), lost[i].SerializeAsString()) << i;
  }
  const int done = IndexOf(AgentIs(AgentEvent::BASELINE_COMPLETE), mark);
  EXPECT_LT(IndexOf(FileIs(FileEvent::CREATED, in_memory), mark), done);

  // Sealed and durable this time: a clean stop and start reports nothing again.
  Seal(3);
  ASSERT_TRUE(delivery_->Durable(3).ok());
  watcher_->Stop();
  OpenDelivery(3);
  const size_t mark2 = log_.size();
  Start({}, true, Options());
  EXPECT_EQ(baseline_->agent().message(), "0 changes since the stored baseline");
  Settle();
  for (const std::string& p : {durable, landed, lost_batch, in_memory}) {
    EXPECT_TRUE(EventsFor(p, mark2).empty()) << p;
  }
}

TEST_F(FimDeliveryPipelineTest, NothingIsOfferedBeforeTheLedgerKnowsWhatLanded) {
  OpenDelivery(0);
  Start({}, true, Options());
  watcher_->Stop();
  PlaceFile(root_ + "/early", "e");  // while the agent is down
  // The next start's ledger has not recovered yet (the collector's head is not known).
  delivery_.reset();
  absl::StatusOr<std::unique_ptr<FimDelivery>> d = FimDelivery::Open(dir_.Sub("delivery.db"));
  ASSERT_TRUE(d.ok());
  delivery_ = *std::move(d);
  const size_t mark = log_.size();
  FimRoot r;
  r.path = root_;
  watcher_ =
      std::make_unique<FimWatcher>(std::vector<FimRoot>{r}, Options(), SystemClock(), [](Event) {});
  ASSERT_TRUE(watcher_->Start().ok());
  WaitStored(/*dirty=*/false);  // found by the start-up diff and held
  EXPECT_EQ(log_.size(), mark);
  ASSERT_TRUE(delivery_->Recover(0).ok());
  ASSERT_TRUE(log_.WaitFor(AgentIs(AgentEvent::BASELINE_COMPLETE), mark));
  ASSERT_TRUE(log_.WaitFor(FileIs(FileEvent::CREATED, root_ + "/early"), mark));
}

TEST_F(FimDeliveryPipelineTest, WithoutRoomTheRootIsMarkedDirtyAndRescannedOnceThereIsRoom) {
  OpenDelivery(0);
  Start({}, true, Options());
  const std::string held = root_ + "/held";
  WriteFile(root_ + "/before", "b");
  WaitContents(root_ + "/before", "b");
  room_ = false;
  PlaceFile(held, "h");  // found, committed as pending, refused: waits
  for (int i = 0; i < 5000 && refused_.load() == 0; ++i) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_GT(refused_.load(), 0);
  const size_t mark = log_.size();
  std::vector<std::string> later;
  for (int i = 0; i < 50; ++i) {  // not even looked at: the root is dirty
    later.push_back(root_ + "/later-" + std::to_string(i));
    PlaceFile(later.back(), "l" + std::to_string(i));
  }
  ASSERT_EQ(::mkdir((root_ + "/newdir").c_str(), 0755), 0);
  PlaceFile(root_ + "/newdir/deep", "d");
  ASSERT_EQ(::unlink((root_ + "/before").c_str()), 0);
  // Persisted: a restart would rescan the root too.
  WaitStored(/*dirty=*/true);
  {
    absl::StatusOr<std::unique_ptr<BaselineStore>> s =
        BaselineStore::Open(dir_.Sub("fim-baseline.db"));
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(*(*s)->LoadDirty(), std::vector<std::string>{root_});
  }
  EXPECT_EQ(log_.size(), mark);

  room_ = true;
  std::optional<Event> done = log_.WaitFor(AgentIs(AgentEvent::RESCAN_DONE), mark);
  ASSERT_TRUE(done);
  EXPECT_NE(done->agent().message().find("marked dirty while the spool had no room"),
            std::string::npos)
      << done->agent().message();
  EXPECT_EQ(done->agent().path(), root_);
  Settle();
  // Each change once: the held one from its pending row, the others by the rescan.
  EXPECT_EQ(EventsFor(held, 0).size(), 1u);
  for (const std::string& p : later) {
    std::vector<Event> evs = EventsFor(p, mark);
    ASSERT_EQ(evs.size(), 1u) << p;
    EXPECT_EQ(evs[0].file().change(), FileEvent::CREATED);
  }
  EXPECT_EQ(EventsFor(root_ + "/newdir/deep", mark).size(), 1u);
  ASSERT_EQ(EventsFor(root_ + "/before", mark).size(), 1u);
  EXPECT_EQ(EventsFor(root_ + "/before", mark)[0].file().change(), FileEvent::DELETED);
  // Watched again in real time, deep directories included.
  WriteFile(root_ + "/newdir/deep", "d2");
  WaitContents(root_ + "/newdir/deep", "d2", mark);
  absl::StatusOr<std::unique_ptr<BaselineStore>> s =
      BaselineStore::Open(dir_.Sub("fim-baseline.db"));
  ASSERT_TRUE(s.ok());
  Settle();
  EXPECT_TRUE((*s)->LoadDirty()->empty());
}

TEST_F(FimDeliveryPipelineTest, ChangesLeftDirtyAtAStopAreReportedOnceAfterTheRestart) {
  OpenDelivery(0);
  Start({}, true, Options());
  room_ = false;
  PlaceFile(root_ + "/held", "h");
  for (int i = 0; i < 5000 && refused_.load() == 0; ++i) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_GT(refused_.load(), 0);
  PlaceFile(root_ + "/dirty", "d");
  WaitStored(/*dirty=*/true);  // a barrier cannot pass without room
  watcher_->Stop();
  room_ = true;
  const size_t mark = log_.size();
  OpenDelivery(0);
  Start({}, true, Options());
  EXPECT_EQ(baseline_->agent().message(), "1 changes since the stored baseline");
  Settle();
  EXPECT_EQ(EventsFor(root_ + "/held", mark).size(), 1u);   // its pending row
  EXPECT_EQ(EventsFor(root_ + "/dirty", mark).size(), 1u);  // the start-up diff
}

}  // namespace
}  // namespace tripline::agent
