#include "agent/logs/offset_ledger.h"

#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

tripline::v1::EventBatch Batch(std::initializer_list<std::tuple<uint64_t, uint64_t, uint64_t>> lines) {
  tripline::v1::EventBatch b;
  for (const auto& [inode, generation, next] : lines) {
    tripline::v1::LogEvent* l = b.add_events()->mutable_log();
    l->set_source("app");
    l->set_device(1);
    l->set_inode(inode);
    l->set_generation(generation);
    l->set_next_offset(next);
  }
  b.add_events()->mutable_agent()->set_message("not a line");
  return b;
}

uint64_t OffsetOf(OffsetLedger& ledger, uint64_t inode, uint64_t generation = 0) {
  absl::StatusOr<std::vector<FileRow>> rows = ledger.Files("app");
  EXPECT_TRUE(rows.ok()) << rows.status();
  for (const FileRow& r : *rows) {
    if (r.key.inode == inode && r.key.generation == generation) return r.offset;
  }
  ADD_FAILURE() << "no row for inode " << inode;
  return 0;
}

void Track(OffsetLedger& ledger, uint64_t inode, uint64_t generation = 0) {
  FileRow row;
  row.key = FileKey{"app", 1, inode, generation};
  row.path = "/var/log/app.log";
  ASSERT_TRUE(ledger.Put(row).ok());
}

TEST(OffsetLedger, OffsetsMoveOnlyWhenBatchesAreDurable) {
  tripline::testing::TempDir dir;
  auto ledger = *OffsetLedger::Open(dir.Sub(kLogOffsetsFile));
  Track(*ledger, 7);
  ASSERT_TRUE(ledger->RecordSealed(1, Batch({{7, 0, 10}, {7, 0, 20}})).ok());
  ASSERT_TRUE(ledger->RecordSealed(2, Batch({{7, 0, 35}})).ok());
  EXPECT_EQ(OffsetOf(*ledger, 7), 0u);
  ASSERT_TRUE(ledger->Durable(1).ok());
  EXPECT_EQ(OffsetOf(*ledger, 7), 20u);
  ASSERT_TRUE(ledger->Durable(1).ok());  // again: nothing changes
  ASSERT_TRUE(ledger->Durable(2).ok());
  EXPECT_EQ(OffsetOf(*ledger, 7), 35u);
}

TEST(OffsetLedger, RecoverKeepsWhatLandedAndForgetsWhatDidNot) {
  tripline::testing::TempDir dir;
  {
    auto ledger = *OffsetLedger::Open(dir.Sub(kLogOffsetsFile));
    Track(*ledger, 7);
    ASSERT_TRUE(ledger->RecordSealed(4, Batch({{7, 0, 100}})).ok());
    ASSERT_TRUE(ledger->RecordSealed(5, Batch({{7, 0, 200}})).ok());
    ASSERT_TRUE(ledger->RecordSealed(6, Batch({{7, 0, 300}})).ok());
  }  // the process dies: batch 5 landed, 6 did not
  auto ledger = *OffsetLedger::Open(dir.Sub(kLogOffsetsFile));
  ASSERT_TRUE(ledger->Recover(5).ok());
  EXPECT_EQ(OffsetOf(*ledger, 7), 200u);
  // Seq 6 is reused by the next run for other lines: the old record must not count.
  ASSERT_TRUE(ledger->RecordSealed(6, Batch({{7, 0, 250}})).ok());
  ASSERT_TRUE(ledger->Durable(6).ok());
  EXPECT_EQ(OffsetOf(*ledger, 7), 250u);
}

TEST(OffsetLedger, GenerationsKeepOffsetsOfTruncatedContentApart) {
  tripline::testing::TempDir dir;
  auto ledger = *OffsetLedger::Open(dir.Sub(kLogOffsetsFile));
  Track(*ledger, 7, 0);
  Track(*ledger, 7, 1);
  // Lines of the old content sealed after the truncation was seen still only move generation 0.
  ASSERT_TRUE(ledger->RecordSealed(1, Batch({{7, 1, 5}, {7, 0, 900}})).ok());
  ASSERT_TRUE(ledger->Durable(1).ok());
  EXPECT_EQ(OffsetOf(*ledger, 7, 0), 900u);
  EXPECT_EQ(OffsetOf(*ledger, 7, 1), 5u);
}

TEST(OffsetLedger, RetiredRowsGoOnceNothingPendingNamesThem) {
  tripline::testing::TempDir dir;
  auto ledger = *OffsetLedger::Open(dir.Sub(kLogOffsetsFile));
  Track(*ledger, 7);
  ASSERT_TRUE(ledger->RecordSealed(1, Batch({{7, 0, 10}})).ok());
  ASSERT_TRUE(ledger->SetState(FileKey{"app", 1, 7, 0}, FileRowState::kRetired).ok());
  EXPECT_EQ(ledger->Files("app")->size(), 1u);
  ASSERT_TRUE(ledger->Durable(1).ok());
  EXPECT_EQ(ledger->Files("app")->size(), 0u);
}

TEST(OffsetLedger, JournalCursorsAreDurableLikeOffsets) {
  tripline::testing::TempDir dir;
  {
    auto ledger = *OffsetLedger::Open(dir.Sub(kLogOffsetsFile));
    for (uint64_t seq = 1; seq <= 3; ++seq) {
      tripline::v1::EventBatch b;
      tripline::v1::LogEvent* l = b.add_events()->mutable_log();
      l->set_source("journal");
      l->set_journal_cursor("s=" + std::to_string(seq));
      ASSERT_TRUE(ledger->RecordSealed(seq, b).ok());
    }
    ASSERT_TRUE(ledger->Durable(1).ok());
    EXPECT_EQ(*ledger->JournalCursor("journal"), "s=1");
  }
  auto ledger = *OffsetLedger::Open(dir.Sub(kLogOffsetsFile));
  ASSERT_TRUE(ledger->Recover(2).ok());  // batch 2 landed, 3 did not
  EXPECT_EQ(*ledger->JournalCursor("journal"), "s=2");
  EXPECT_EQ(*ledger->JournalCursor("other"), "");
}

TEST(OffsetLedger, SourcesRememberTheyStarted) {
  tripline::testing::TempDir dir;
  auto ledger = *OffsetLedger::Open(dir.Sub(kLogOffsetsFile));
  EXPECT_FALSE(*ledger->SourceStarted("app"));
  ASSERT_TRUE(ledger->MarkSourceStarted("app").ok());
  EXPECT_TRUE(*ledger->SourceStarted("app"));
  EXPECT_FALSE(*ledger->SourceStarted("other"));
}

}  // namespace
}  // namespace tripline::agent
