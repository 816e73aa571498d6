#include "agent/logs/journal_reader.h"

#include <systemd/sd-journal.h>
#include <unistd.h>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "platform/crypto/digest.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

using tripline::v1::Event;

constexpr char kJournalSocket[] = "/run/systemd/journal/socket";

class Collected {
 public:
  bool Add(Event e) {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(e));
    return true;
  }
  std::vector<Event> Events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<Event> events_;
};

// Sends `message` to journald until `reader` has emitted it (it may still be positioning itself
// when the first one goes), up to 10 s; returns the events with that message.
std::vector<Event> SendUntilSeen(Collected& got, const std::string& message) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  absl::Time next_send = absl::InfinitePast();
  while (absl::Now() < deadline) {
    if (absl::Now() >= next_send) {
      sd_journal_send("MESSAGE=%s", message.c_str(), "PRIORITY=3",
                      "SYSLOG_IDENTIFIER=tripline-test", nullptr);
      next_send = absl::Now() + absl::Seconds(1);
    }
    std::vector<Event> out;
    for (const Event& e : got.Events()) {
      if (e.has_log() && e.log().line() == message) out.push_back(e);
    }
    if (!out.empty()) return out;
    absl::SleepFor(absl::Milliseconds(20));  // polling a condition with a deadline
  }
  return {};
}

TEST(JournalReader, ReadsNewEntriesWithFieldsAndResumesAfterTheDurableCursor) {
  if (::access(kJournalSocket, W_OK) != 0) {
    GTEST_SKIP() << "no systemd-journald on this machine (" << kJournalSocket
                 << " is missing): the journald source needs a running journal to be tested";
  }
  tripline::testing::TempDir dir;
  auto ledger = *OffsetLedger::Open(dir.Sub(kLogOffsetsFile));
  JournalSource source;
  source.name = "journal";
  source.max_priority = 3;
  const std::string tag = ToHex(RandomBytes(8));
  Collected got;
  {
    JournalReader reader({source}, ledger.get(), SystemClock(),
                         [&got](Event e) { return got.Add(std::move(e)); });
    ASSERT_TRUE(reader.Start().ok());
    std::vector<Event> first = SendUntilSeen(got, "tripline first " + tag);
    ASSERT_FALSE(first.empty());
    const tripline::v1::LogEvent& log = first[0].log();
    EXPECT_EQ(log.source(), "journal");
    EXPECT_FALSE(log.journal_cursor().empty());
    EXPECT_EQ(log.fields().at("priority"), "3");
    EXPECT_EQ(log.fields().at("app"), "tripline-test");
    reader.Stop();
    // Everything so far is durable.
    tripline::v1::EventBatch batch;
    for (const Event& e : got.Events()) *batch.add_events() = e;
    ASSERT_TRUE(ledger->RecordSealed(1, batch).ok());
    ASSERT_TRUE(ledger->Durable(1).ok());
    EXPECT_EQ(*ledger->JournalCursor("journal"), got.Events().back().log().journal_cursor());
  }
  const size_t before = got.Events().size();
  // An entry written while no reader runs is read after the restart; the durable ones are not.
  sd_journal_send("MESSAGE=tripline while down %s", tag.c_str(), "PRIORITY=3", nullptr);
  JournalReader reader({source}, ledger.get(), SystemClock(),
                       [&got](Event e) { return got.Add(std::move(e)); });
  ASSERT_TRUE(reader.Start().ok());
  ASSERT_FALSE(SendUntilSeen(got, "tripline after restart " + tag).empty());
  std::vector<std::string> lines;
  for (size_t i = before; i < got.Events().size(); ++i) {
    if (got.Events()[i].has_log()) lines.push_back(got.Events()[i].log().line());
  }
  EXPECT_NE(std::find(lines.begin(), lines.end(), "tripline while down " + tag), lines.end());
  EXPECT_EQ(std::find(lines.begin(), lines.end(), "tripline first " + tag), lines.end());
}

}  // namespace
}  // namespace tripline::agent
