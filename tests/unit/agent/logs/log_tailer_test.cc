#include "agent/logs/log_tailer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

using tripline::v1::Event;

// Collects what the tailer emits; tests wait on conditions over it.
class Sink {
 public:
  bool Add(Event e) {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(e));
    added_.SignalAll();
    return true;
  }
  std::vector<Event> Events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }
  std::vector<std::string> Lines() {
    std::vector<std::string> out;
    for (const Event& e : Events()) {
      if (e.has_log()) out.push_back(e.log().line());
    }
    return out;
  }
  // Waits up to 10 s for `pred` over the events; false at the deadline.
  bool WaitFor(const std::function<bool(const std::vector<Event>&)>& pred) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    absl::MutexLock lock(&mu_);
    while (!pred(events_)) {
      if (absl::Now() > deadline) return false;
      added_.WaitWithDeadline(&mu_, std::min(deadline, absl::Now() + absl::Milliseconds(20)));
    }
    return true;
  }
  bool WaitForLines(size_t n) {
    return WaitFor([n](const std::vector<Event>& evs) {
      size_t count = 0;
      for (const Event& e : evs) count += e.has_log();
      return count >= n;
    });
  }

 private:
  absl::Mutex mu_;
  absl::CondVar added_;
  std::vector<Event> events_;
};

void Append(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::app | std::ios::binary);
  f << text;
}

class LogTailerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    logs_ = dir_.Sub("logs");
    std::filesystem::create_directory(logs_);
    ledger_ = *OffsetLedger::Open(dir_.Sub(kLogOffsetsFile));
  }
  LogFileSource Source(const std::string& glob) {
    LogFileSource s;
    s.name = "app";
    s.paths = {logs_ + "/" + glob};
    s.start_at_beginning = true;
    return s;
  }
  std::unique_ptr<LogTailer> Start(LogFileSource source, LogTailerOptions options = {}) {
    auto t = std::make_unique<LogTailer>(
        std::vector<LogFileSource>{std::move(source)}, ledger_.get(), SystemClock(),
        [this](Event e) { return sink_.Add(std::move(e)); }, options);
    EXPECT_TRUE(t->Start().ok());
    return t;
  }
  // Marks everything emitted so far durable, as an acked batch would.
  void AllDurable(uint64_t seq) {
    tripline::v1::EventBatch batch;
    for (const Event& e : sink_.Events()) *batch.add_events() = e;
    ASSERT_TRUE(ledger_->RecordSealed(seq, batch).ok());
    ASSERT_TRUE(ledger_->Durable(seq).ok());
  }
  std::vector<std::string> AgentMessages() {
    std::vector<std::string> out;
    for (const Event& e : sink_.Events()) {
      if (e.has_agent()) out.push_back(e.agent().message());
    }
    return out;
  }

  tripline::testing::TempDir dir_;
  std::string logs_;
  std::unique_ptr<OffsetLedger> ledger_;
  Sink sink_;
};

TEST_F(LogTailerTest, NewFilesMatchingTheGlobArePickedUpOthersNot) {
  auto t = Start(Source("*.log"));
  ASSERT_TRUE(sink_.WaitFor([](const std::vector<Event>& evs) {
    return !evs.empty() && evs[0].has_agent();  // "no file matches yet"
  }));
  Append(logs_ + "/a.log", "one\ntwo\n");
  Append(logs_ + "/b.txt", "not me\n");
  Append(logs_ + "/c.log", "three\n");
  ASSERT_TRUE(sink_.WaitForLines(3));
  std::vector<std::string> lines = sink_.Lines();
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"one", "three", "two"}));
  for (const Event& e : sink_.Events()) {
    if (!e.has_log()) continue;
    EXPECT_EQ(e.log().source(), "app");
    EXPECT_NE(e.log().inode(), 0u);
  }
}

TEST_F(LogTailerTest, RenameRotationIsReadToItsEndAndTheNewFileFromItsStart) {
  const std::string app = logs_ + "/app.log";
  Append(app, "1\n2\n");
  auto t = Start(Source("app.log"), LogTailerOptions{.rotate_wait = absl::Milliseconds(200)});
  ASSERT_TRUE(sink_.WaitForLines(2));
  {
    std::ofstream old_writer(app, std::ios::app | std::ios::binary);
    ASSERT_EQ(::rename(app.c_str(), (app + ".1").c_str()), 0);
    old_writer << "3\n" << std::flush;  // the writer has not reopened yet
    Append(app, "4\n");
    old_writer << "5\n" << std::flush;
  }
  ASSERT_TRUE(sink_.WaitForLines(5));
  std::vector<std::string> lines = sink_.Lines();
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"1", "2", "3", "4", "5"}));
}

TEST_F(LogTailerTest, CopytruncateReadsTheNewContentFromTheStartAndTheRestFromTheCopy) {
  const std::string app = logs_ + "/app.log";
  Append(app, "a1\na2\n");
  auto t = Start(Source("app.log"));
  ASSERT_TRUE(sink_.WaitForLines(2));
  // More lines, then copy and truncate at once: the tailer may not have read a3/a4 yet.
  Append(app, "a3\na4\n");
  std::filesystem::copy_file(app, app + ".1");
  ASSERT_EQ(::truncate(app.c_str(), 0), 0);
  Append(app, "b1-longer-than-before\n");
  ASSERT_TRUE(sink_.WaitForLines(5));
  std::vector<std::string> lines = sink_.Lines();
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"a1", "a2", "a3", "a4", "b1-longer-than-before"}));
  for (const Event& e : sink_.Events()) {
    if (e.has_log() && e.log().line() == "b1-longer-than-before") {
      EXPECT_EQ(e.log().offset(), 0u);
      EXPECT_EQ(e.log().generation(), 1u);
    }
  }
}

TEST_F(LogTailerTest, DeletedWhileOpenIsReadToItsEnd) {
  const std::string app = logs_ + "/app.log";
  Append(app, "x\n");
  auto t = Start(Source("app.log"));
  ASSERT_TRUE(sink_.WaitForLines(1));
  {
    std::ofstream w(app, std::ios::app | std::ios::binary);
    ASSERT_EQ(::unlink(app.c_str()), 0);
    w << "after unlink\n" << std::flush;
  }
  ASSERT_TRUE(sink_.WaitForLines(2));
  EXPECT_EQ(sink_.Lines().back(), "after unlink");
}

TEST_F(LogTailerTest, PartialLinesWaitThenGoFlaggedLongLinesAreCutAndBytesStayBytes) {
  LogFileSource s = Source("app.log");
  s.max_line = 8;
  s.partial_timeout = absl::Milliseconds(100);
  auto t = Start(s);
  Append(logs_ + "/app.log", std::string("caf\xc3\xa9 \xff\xfe\n") + "0123456789abcdef\n" +
                                 "tail without newline");
  ASSERT_TRUE(sink_.WaitForLines(3));
  std::vector<Event> evs = sink_.Events();
  std::vector<const tripline::v1::LogEvent*> logs;
  for (const Event& e : evs) {
    if (e.has_log()) logs.push_back(&e.log());
  }
  ASSERT_EQ(logs.size(), 3u);
  EXPECT_EQ(logs[0]->line(), "caf\xc3\xa9 \xff\xfe");
  EXPECT_FALSE(logs[0]->truncated());
  EXPECT_EQ(logs[1]->line(), "01234567");
  EXPECT_TRUE(logs[1]->truncated());
  EXPECT_EQ(logs[1]->next_offset() - logs[1]->offset(), 17u);
  EXPECT_EQ(logs[2]->line(), "tail wit");
  EXPECT_TRUE(logs[2]->partial());
}

TEST_F(LogTailerTest, ARestartResumesAfterTheLastDurableLine) {
  const std::string app = logs_ + "/app.log";
  Append(app, "1\n2\n");
  {
    auto t = Start(Source("app.log"));
    ASSERT_TRUE(sink_.WaitForLines(2));
    t->Stop();
    AllDurable(1);
    Append(app, "3\n");
    // Emitted but never durable: must come again.
    auto t2 = Start(Source("app.log"));
    ASSERT_TRUE(sink_.WaitForLines(3));
    t2->Stop();
  }
  const size_t before = sink_.Lines().size();
  auto t3 = Start(Source("app.log"));
  ASSERT_TRUE(sink_.WaitForLines(before + 1));
  std::vector<std::string> lines = sink_.Lines();
  EXPECT_EQ(std::vector<std::string>(lines.begin() + before, lines.end()),
            std::vector<std::string>{"3"});
}

TEST_F(LogTailerTest, StartAtEndSkipsWhatWasThereOnTheFirstStartOnly) {
  const std::string app = logs_ + "/app.log";
  Append(app, "old\n");
  LogFileSource s = Source("*.log");
  s.start_at_beginning = false;
  auto t = Start(s);
  // Appended lines arrive, what was there before does not (polled: the tailer may still be
  // starting, and then "fresh" is there before it and skipped too).
  ASSERT_TRUE(sink_.WaitFor([&](const std::vector<Event>& evs) {
    for (const Event& e : evs) {
      if (e.has_log()) return true;
    }
    Append(app, "fresh\n");
    return false;
  }));
  // A file that appears later is new: read from its beginning.
  Append(logs_ + "/new.log", "new file line\n");
  ASSERT_TRUE(sink_.WaitFor([](const std::vector<Event>& evs) {
    for (const Event& e : evs) {
      if (e.has_log() && e.log().line() == "new file line") return true;
    }
    return false;
  }));
  for (const std::string& line : sink_.Lines()) {
    EXPECT_TRUE(line == "fresh" || line == "new file line") << line;
  }
}

TEST_F(LogTailerTest, BadInputIsReportedNeverFatal) {
  ASSERT_EQ(::mkfifo((logs_ + "/pipe.log").c_str(), 0600), 0);
  Append(logs_ + "/core.log", std::string("\x7f" "ELF\0\0\0", 7));
  auto t = Start(Source("*.log"));
  ASSERT_TRUE(sink_.WaitFor([](const std::vector<Event>& evs) {
    int problems = 0;
    for (const Event& e : evs) {
      problems += e.has_agent() && e.agent().kind() == tripline::v1::AgentEvent::LOG_SOURCE_ERROR;
    }
    return problems >= 2;
  }));
  std::string all;
  for (const std::string& m : AgentMessages()) all += m + "\n";
  EXPECT_NE(all.find("binary"), std::string::npos) << all;
  EXPECT_NE(all.find("not a regular file"), std::string::npos) << all;
  // And it still tails what is fine.
  Append(logs_ + "/ok.log", "fine\n");
  ASSERT_TRUE(sink_.WaitForLines(1));
  EXPECT_EQ(sink_.Lines(), std::vector<std::string>{"fine"});
  // A file created empty whose first bytes are binary is caught when they come.
  Append(logs_ + "/late.log", "");
  ASSERT_TRUE(sink_.WaitFor([&](const std::vector<Event>&) {
    return std::filesystem::exists(logs_ + "/late.log");
  }));
  Append(logs_ + "/late.log", std::string("\0\0\0\x01 sqlite page\n", 17));
  ASSERT_TRUE(sink_.WaitFor([](const std::vector<Event>& evs) {
    int binary = 0;
    for (const Event& e : evs) {
      binary += e.has_agent() && e.agent().message().find("binary") != std::string::npos;
    }
    return binary >= 2;
  }));
  EXPECT_EQ(sink_.Lines(), std::vector<std::string>{"fine"});

  // A directory that does not exist is reported, and watched once it appears.
  LogFileSource missing = Source("x.log");
  missing.name = "later";
  missing.paths = {dir_.Sub("not-yet") + "/x.log"};
  LogTailer t2({missing}, ledger_.get(), SystemClock(),
               [this](Event e) { return sink_.Add(std::move(e)); },
               LogTailerOptions{.retry_interval = absl::Milliseconds(50)});
  ASSERT_TRUE(t2.Start().ok());
  ASSERT_TRUE(sink_.WaitFor([](const std::vector<Event>& evs) {
    for (const Event& e : evs) {
      if (e.has_agent() && e.agent().message().find("cannot watch") != std::string::npos) {
        return true;
      }
    }
    return false;
  }));
  std::filesystem::create_directory(dir_.Sub("not-yet"));
  Append(dir_.Sub("not-yet") + "/x.log", "appeared\n");
  ASSERT_TRUE(sink_.WaitForLines(2));
}

// Lines with their counts, for exactly-once checks.
std::map<std::string, int> Counts(const std::vector<std::string>& lines) {
  std::map<std::string, int> out;
  for (const std::string& l : lines) ++out[l];
  return out;
}

TEST_F(LogTailerTest, AFileRotatedAwayBeforeItWasOpenedIsReadWhole) {
  // app.log was created, written and renamed to app.log.1 between two looks of the tailer, and
  // a new app.log created. (Staged in another directory and moved in, so the tailer cannot get
  // to it at its first name.)
  const std::string app = logs_ + "/app.log";
  auto t = Start(Source("app.log"), LogTailerOptions{.rotate_wait = absl::Milliseconds(200)});
  ASSERT_TRUE(sink_.WaitFor([](const std::vector<Event>& evs) {
    return !evs.empty() && evs[0].has_agent();  // "no file matches yet": the tailer is looking
  }));
  const std::string staging = dir_.Sub("staging");
  std::filesystem::create_directory(staging);
  Append(staging + "/app.log", "r1\nr2\n");
  ASSERT_EQ(::rename((staging + "/app.log").c_str(), (app + ".1").c_str()), 0);
  Append(app, "n1\n");
  ASSERT_TRUE(sink_.WaitForLines(3));
  EXPECT_EQ(Counts(sink_.Lines()), (std::map<std::string, int>{{"n1", 1}, {"r1", 1}, {"r2", 1}}));
  for (const Event& e : sink_.Events()) {
    if (e.has_log() && e.log().line() == "r1") {
      EXPECT_EQ(e.log().offset(), 0u);
    }
  }
  // Rotated on (app.log.1 -> app.log.2) it is the same file: not read again.
  ASSERT_EQ(::rename((app + ".1").c_str(), (app + ".2").c_str()), 0);
  Append(app, "n2\n");
  ASSERT_TRUE(sink_.WaitForLines(4));
  EXPECT_EQ(Counts(sink_.Lines()),
            (std::map<std::string, int>{{"n1", 1}, {"n2", 1}, {"r1", 1}, {"r2", 1}}));
}

TEST_F(LogTailerTest, FilesCreatedAndRotatedWhileTheAgentWasDownAreReadOnceOnRestart) {
  const std::string app = logs_ + "/app.log";
  Append(app, "x1\n");
  {
    auto t = Start(Source("app.log"));
    ASSERT_TRUE(sink_.WaitForLines(1));
    t->Stop();
  }
  AllDurable(1);
  // Down: x2 goes to the followed file; logrotate runs twice (numbered, create).
  Append(app, "x2\n");
  ASSERT_EQ(::rename(app.c_str(), (app + ".1").c_str()), 0);
  Append(app, "y1\ny2\n");
  ASSERT_EQ(::rename((app + ".1").c_str(), (app + ".2").c_str()), 0);
  ASSERT_EQ(::rename(app.c_str(), (app + ".1").c_str()), 0);
  Append(app, "z1\n");
  auto t = Start(Source("app.log"), LogTailerOptions{.rotate_wait = absl::Milliseconds(200)});
  ASSERT_TRUE(sink_.WaitForLines(5));
  EXPECT_EQ(Counts(sink_.Lines()), (std::map<std::string, int>{
                                       {"x1", 1}, {"x2", 1}, {"y1", 1}, {"y2", 1}, {"z1", 1}}));
  AllDurable(2);
  t->Stop();
  // Another restart reads nothing again.
  auto t2 = Start(Source("app.log"));
  Append(app, "z2\n");
  ASSERT_TRUE(sink_.WaitForLines(6));
  EXPECT_EQ(Counts(sink_.Lines()),
            (std::map<std::string, int>{
                {"x1", 1}, {"x2", 1}, {"y1", 1}, {"y2", 1}, {"z1", 1}, {"z2", 1}}));
}

TEST_F(LogTailerTest, OldArchivesCopiesAndCompressedFilesAreNeverRead) {
  const std::string app = logs_ + "/app.log";
  Append(app + ".1", "archived before the first start\n");
  Append(app + ".2.gz", std::string("\x1f\x8b\x08\0\0\0\0\0\0\x03", 10));
  Append(app, "live1\n");
  {
    auto t = Start(Source("app.log"));  // start_at: beginning, for app.log only
    ASSERT_TRUE(sink_.WaitForLines(1));
    // While running: a copy of what was read (cp app.log app.log.bak) and an archive compressed
    // from it are not new content.
    std::filesystem::copy_file(app, app + ".bak");
    Append(app + ".1.gz", std::string("\x1f\x8b\x08\0\0\0\0\0\0\x03more", 14));
    Append(app, "live2\n");
    ASSERT_TRUE(sink_.WaitForLines(2));
    t->Stop();
  }
  AllDurable(1);
  // Down: the archives move on (numbered rotation), the live file is copied aside.
  ASSERT_EQ(::rename((app + ".1").c_str(), (app + ".3").c_str()), 0);
  std::filesystem::copy_file(app, app + ".copy");
  auto t = Start(Source("app.log"));
  Append(app, "live3\n");
  ASSERT_TRUE(sink_.WaitForLines(3));
  EXPECT_EQ(sink_.Lines(), (std::vector<std::string>{"live1", "live2", "live3"}));
  for (const std::string& m : AgentMessages()) {
    EXPECT_EQ(m.find("binary"), std::string::npos) << m;  // archives are not log files
  }
}

TEST_F(LogTailerTest, ALedgerWithoutFamiliesTreatsWhatIsThereAsOld) {
  // A source started by a version that kept no families: its rotated files were read then.
  const std::string app = logs_ + "/app.log";
  Append(app + ".1", "read by the previous version\n");
  ASSERT_TRUE(ledger_->MarkSourceStarted("app").ok());
  auto t = Start(Source("app.log"));
  Append(app, "new\n");
  ASSERT_TRUE(sink_.WaitForLines(1));
  t->Stop();
  EXPECT_EQ(sink_.Lines(), std::vector<std::string>{"new"});
}

}  // namespace
}  // namespace tripline::agent
