#include "agent/spool/spool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "platform/crypto/batch_signature.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

// A batch whose bytes name its seq, so a test can tell which one it got back.
SealedBatch Batch(uint64_t seq, size_t filler = 100) {
  tripline::v1::EventBatch b;
  b.set_agent_id("i-spool");
  b.set_batch_seq(seq);
  b.add_events()->mutable_file()->set_path("/etc/f" + std::to_string(seq) +
                                           std::string(filler, 'x'));
  auto sb = std::make_shared<tripline::v1::SignedBatch>();
  sb->set_batch(b.SerializeAsString());
  sb->set_signature(std::string(64, 's'));
  return SealedBatch{seq, sb};
}

uint64_t SeqOf(const SealedBatch& b) {
  tripline::v1::EventBatch batch;
  EXPECT_TRUE(batch.ParseFromString(b.signed_batch->batch()));
  return batch.batch_seq();
}

std::unique_ptr<Spool> Open(SpoolOptions options) {
  absl::StatusOr<std::unique_ptr<Spool>> spool = Spool::Open(std::move(options));
  EXPECT_TRUE(spool.ok()) << spool.status();
  return spool.ok() ? *std::move(spool) : nullptr;
}

std::vector<std::string> Segments(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().filename().string().rfind("segment-", 0) == 0) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool WaitCommitted(Spool& spool, uint64_t seq) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (spool.committed_seq() < seq) {
    if (absl::Now() > deadline) return false;
    spool.WaitUntilCommitted(deadline);
  }
  return true;
}

// Fails writes and syncs on demand, like a full or broken disk.
class FaultyIo : public SpoolIo {
 public:
  ssize_t Pwrite(int fd, const void* buf, size_t n, off_t offset) override {
    if (failing_writes_.load() > 0) {
      --failing_writes_;
      // Half a record reaches the file first, as a real short write would leave it.
      (void)SpoolIo::Pwrite(fd, buf, n / 2, offset);
      errno = ENOSPC;
      return -1;
    }
    return SpoolIo::Pwrite(fd, buf, n, offset);
  }
  int Fdatasync(int fd) override {
    if (failing_syncs_.load()) {
      errno = EIO;
      return -1;
    }
    return SpoolIo::Fdatasync(fd);
  }
  std::atomic<int> failing_writes_{0};
  std::atomic<bool> failing_syncs_{false};
};

TEST(Spool, PushedBatchesSurviveReopenInOrder) {
  tripline::testing::TempDir dir;
  std::string digest5;
  {
    auto spool = Open({.dir = dir.path()});
    EXPECT_FALSE(spool->recovery().head);  // fresh
    for (uint64_t s = 1; s <= 5; ++s) {
      SealedBatch b = Batch(s);
      if (s == 5) digest5 = ChainDigest(b.signed_batch->batch());
      ASSERT_TRUE(spool->Push(b));
    }
    ASSERT_TRUE(WaitCommitted(*spool, 5));
  }
  auto spool = Open({.dir = dir.path()});
  ASSERT_TRUE(spool->recovery().head);
  EXPECT_EQ(spool->recovery().head->seq, 5u);
  EXPECT_EQ(spool->recovery().head->digest, digest5);
  EXPECT_EQ(spool->recovery().records, 5u);
  EXPECT_EQ(spool->recovery().dropped_tail_bytes, 0u);
  for (uint64_t s = 1; s <= 5; ++s) {
    std::optional<SealedBatch> b = spool->WaitForSendable(s, 64, spool->generation());
    ASSERT_TRUE(b);
    EXPECT_EQ(SeqOf(*b), s);
  }
  EXPECT_TRUE(spool->Push(Batch(6)));
  EXPECT_FALSE(spool->Push(Batch(8)));  // out of order: refused, never spooled
}

TEST(Spool, AckedSegmentsAreDeletedAndTheCursorCarriesTheChainHead) {
  tripline::testing::TempDir dir;
  std::string digest;
  {
    auto spool = Open({.dir = dir.path(), .max_bytes = 1 << 20, .segment_bytes = 1024});
    for (uint64_t s = 1; s <= 40; ++s) {
      SealedBatch b = Batch(s);
      digest = ChainDigest(b.signed_batch->batch());
      ASSERT_TRUE(spool->Push(b));
    }
    ASSERT_TRUE(WaitCommitted(*spool, 40));
    const size_t before = Segments(dir.path()).size();
    EXPECT_GT(before, 3u);
    spool->AckThrough(20);
    EXPECT_LT(Segments(dir.path()).size(), before);
    EXPECT_EQ(spool->size(), 20u);
    spool->AckThrough(40);
    EXPECT_EQ(spool->size(), 0u);
    EXPECT_LE(Segments(dir.path()).size(), 1u);  // at most the segment being written
  }
  auto spool = Open({.dir = dir.path(), .max_bytes = 1 << 20, .segment_bytes = 1024});
  EXPECT_EQ(spool->recovery().acked_seq, 40u);
  EXPECT_EQ(spool->recovery().records, 0u);
  ASSERT_TRUE(spool->recovery().head);
  EXPECT_EQ(spool->recovery().head->seq, 40u);
  EXPECT_EQ(spool->recovery().head->digest, digest);
  EXPECT_TRUE(spool->Push(Batch(41)));
}

TEST(Spool, TornTailRecordIsDroppedOnOpen) {
  tripline::testing::TempDir dir;
  {
    auto spool = Open({.dir = dir.path()});
    for (uint64_t s = 1; s <= 3; ++s) ASSERT_TRUE(spool->Push(Batch(s)));
    ASSERT_TRUE(WaitCommitted(*spool, 3));
  }
  std::vector<std::string> segs = Segments(dir.path());
  ASSERT_EQ(segs.size(), 1u);
  const auto size = std::filesystem::file_size(segs[0]);
  std::filesystem::resize_file(segs[0], size - 7);  // a crash in the middle of the third append
  auto spool = Open({.dir = dir.path()});
  EXPECT_GT(spool->recovery().dropped_tail_bytes, 0u);
  EXPECT_EQ(spool->recovery().records, 2u);
  ASSERT_TRUE(spool->recovery().head);
  EXPECT_EQ(spool->recovery().head->seq, 2u);
  for (uint64_t s = 1; s <= 2; ++s) {
    std::optional<SealedBatch> b = spool->WaitForSendable(s, 64, spool->generation());
    ASSERT_TRUE(b);
    EXPECT_EQ(SeqOf(*b), s);
  }
  // The chain goes on at 3 in the same file, and a second reopen finds all of it.
  ASSERT_TRUE(spool->Push(Batch(3)));
  ASSERT_TRUE(WaitCommitted(*spool, 3));
  spool.reset();
  spool = Open({.dir = dir.path()});
  EXPECT_EQ(spool->recovery().dropped_tail_bytes, 0u);
  EXPECT_EQ(spool->recovery().records, 3u);
}

TEST(Spool, CorruptTailByteDropsOnlyTheLastRecord) {
  tripline::testing::TempDir dir;
  {
    auto spool = Open({.dir = dir.path()});
    for (uint64_t s = 1; s <= 4; ++s) ASSERT_TRUE(spool->Push(Batch(s)));
    ASSERT_TRUE(WaitCommitted(*spool, 4));
  }
  std::vector<std::string> segs = Segments(dir.path());
  ASSERT_EQ(segs.size(), 1u);
  int fd = ::open(segs[0].c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const off_t last = ::lseek(fd, -1, SEEK_END);
  char byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, last), 1);
  byte ^= 0x01;
  ASSERT_EQ(::pwrite(fd, &byte, 1, last), 1);
  ::close(fd);
  auto spool = Open({.dir = dir.path()});
  EXPECT_EQ(spool->recovery().records, 3u);
  EXPECT_GT(spool->recovery().dropped_tail_bytes, 0u);
  EXPECT_EQ(spool->recovery().head->seq, 3u);
}

TEST(Spool, CorruptRecordBeforeTheLastSegmentIsDataLoss) {
  tripline::testing::TempDir dir;
  {
    auto spool = Open({.dir = dir.path(), .max_bytes = 1 << 20, .segment_bytes = 512});
    for (uint64_t s = 1; s <= 12; ++s) ASSERT_TRUE(spool->Push(Batch(s)));
    ASSERT_TRUE(WaitCommitted(*spool, 12));
  }
  std::vector<std::string> segs = Segments(dir.path());
  ASSERT_GE(segs.size(), 2u);
  int fd = ::open(segs[0].c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "\xff", 1, 20), 1);
  ::close(fd);
  absl::StatusOr<std::unique_ptr<Spool>> spool =
      Spool::Open({.dir = dir.path(), .max_bytes = 1 << 20, .segment_bytes = 512});
  ASSERT_FALSE(spool.ok());
  EXPECT_EQ(spool.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(spool.status().message().find(segs[0]), std::string::npos) << spool.status();
}

TEST(Spool, CorruptCursorIsDataLossNamingIt) {
  tripline::testing::TempDir dir;
  {
    auto spool = Open({.dir = dir.path(), .max_bytes = 1 << 20, .segment_bytes = 256});
    for (uint64_t s = 1; s <= 8; ++s) ASSERT_TRUE(spool->Push(Batch(s)));
    ASSERT_TRUE(WaitCommitted(*spool, 8));
    spool->AckThrough(8);
  }
  ASSERT_TRUE(std::filesystem::exists(dir.Sub("cursor")));
  std::filesystem::resize_file(dir.Sub("cursor"), 5);
  absl::StatusOr<std::unique_ptr<Spool>> spool = Spool::Open({.dir = dir.path()});
  ASSERT_FALSE(spool.ok());
  EXPECT_EQ(spool.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(spool.status().message().find("cursor"), std::string::npos);
}

TEST(Spool, PushBlocksAtTheCapUntilAnAckFreesSpaceAndLeavesANotice) {
  tripline::testing::TempDir dir;
  auto spool = Open({.dir = dir.path(), .max_bytes = 4096, .segment_bytes = 1024});
  uint64_t seq = 1;
  while (spool->bytes() + 300 < 4096) ASSERT_TRUE(spool->Push(Batch(seq++)));
  std::atomic<bool> pushed{false};
  const uint64_t blocked_seq = seq;
  std::thread pusher([&] {
    EXPECT_TRUE(spool->Push(Batch(blocked_seq)));
    pushed = true;
  });
  // The pusher is parked at the cap: wait until the spool says so, then check it did not write.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (spool->pressure_episodes() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_EQ(spool->pressure_episodes(), 1u);
  EXPECT_FALSE(pushed);
  EXPECT_TRUE(spool->under_pressure());
  EXPECT_FALSE(spool->TakePressureNotice());  // the episode is not over yet
  ASSERT_TRUE(WaitCommitted(*spool, blocked_seq - 1));
  spool->AckThrough(blocked_seq - 1);
  pusher.join();
  EXPECT_TRUE(pushed);
  EXPECT_FALSE(spool->under_pressure());
  std::optional<PressureNotice> notice = spool->TakePressureNotice();
  ASSERT_TRUE(notice);
  EXPECT_NE(notice->message.find("cap of 4096 bytes"), std::string::npos) << notice->message;
  EXPECT_GT(notice->time_unix_ns, 0);
  EXPECT_LE(spool->bytes(), 4096u);
}

TEST(Spool, DiskFullBlocksAndRetriesWithoutLeavingAPartialRecord) {
  tripline::testing::TempDir dir;
  FaultyIo io;
  {
    auto spool = Open({.dir = dir.path(), .retry_interval = absl::Milliseconds(5), .io = &io});
    ASSERT_TRUE(spool->Push(Batch(1)));
    io.failing_writes_ = 3;
    ASSERT_TRUE(spool->Push(Batch(2)));  // returns once a retry succeeds
    EXPECT_EQ(io.failing_writes_.load(), 0);
    ASSERT_TRUE(spool->Push(Batch(3)));
    ASSERT_TRUE(WaitCommitted(*spool, 3));
    std::optional<PressureNotice> notice = spool->TakePressureNotice();
    ASSERT_TRUE(notice);
    EXPECT_NE(notice->message.find("ENOSPC"), std::string::npos) << notice->message;
  }
  auto spool = Open({.dir = dir.path()});
  EXPECT_EQ(spool->recovery().dropped_tail_bytes, 0u);
  EXPECT_EQ(spool->recovery().records, 3u);
  for (uint64_t s = 1; s <= 3; ++s) {
    std::optional<SealedBatch> b = spool->WaitForSendable(s, 64, spool->generation());
    ASSERT_TRUE(b);
    EXPECT_EQ(SeqOf(*b), s);
  }
}

TEST(Spool, DiskFullDuringShutdownDropsInsteadOfHanging) {
  tripline::testing::TempDir dir;
  FaultyIo io;
  auto spool = Open({.dir = dir.path(), .retry_interval = absl::Milliseconds(5), .io = &io});
  io.failing_writes_ = 1 << 20;
  spool->SetNonBlocking();
  EXPECT_FALSE(spool->Push(Batch(1)));
}

TEST(Spool, BatchesAreNotSendableUntilFdatasyncSucceeds) {
  tripline::testing::TempDir dir;
  FaultyIo io;
  io.failing_syncs_ = true;
  auto spool = Open({.dir = dir.path(), .retry_interval = absl::Milliseconds(5), .io = &io});
  ASSERT_TRUE(spool->Push(Batch(1)));
  EXPECT_FALSE(spool->WaitUntilCommitted(absl::Now() + absl::Milliseconds(50)));
  EXPECT_EQ(spool->committed_seq(), 0u);
  io.failing_syncs_ = false;
  std::optional<SealedBatch> b = spool->WaitForSendable(1, 64, spool->generation());
  ASSERT_TRUE(b);
  EXPECT_EQ(spool->committed_seq(), 1u);
}

TEST(Spool, AckDropsBatchesAndWindowLimitsWhatIsSendable) {
  tripline::testing::TempDir dir;
  auto spool = Open({.dir = dir.path()});
  for (uint64_t seq = 1; seq <= 4; ++seq) ASSERT_TRUE(spool->Push(Batch(seq)));
  ASSERT_TRUE(spool->WaitForSendable(2, 2, spool->generation()));
  // seq 3 is beyond acked(0) + window(2): the wait ends only by interruption.
  std::atomic<bool> returned{false};
  const uint64_t generation = spool->generation();
  std::thread waiter([&] {
    EXPECT_FALSE(spool->WaitForSendable(3, 2, generation));
    returned = true;
  });
  spool->Interrupt();
  waiter.join();
  EXPECT_TRUE(returned);
  spool->AckThrough(2);
  EXPECT_EQ(spool->size(), 2u);
  EXPECT_EQ(spool->acked_seq(), 2u);
  std::optional<SealedBatch> b = spool->WaitForSendable(3, 2, spool->generation());
  ASSERT_TRUE(b);
  EXPECT_EQ(b->seq, 3u);
  EXPECT_FALSE(spool->WaitUntilEmpty(absl::Now() + absl::Milliseconds(1)));
  spool->AckThrough(4);
  EXPECT_TRUE(spool->WaitUntilEmpty(absl::Now()));
}

TEST(Spool, BatchesBeyondTheMemoryCacheAreReadBackFromDisk) {
  tripline::testing::TempDir dir;
  auto spool = Open({.dir = dir.path(), .max_cached_bytes = 0});
  for (uint64_t seq = 1; seq <= 3; ++seq) ASSERT_TRUE(spool->Push(Batch(seq, 5000)));
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    std::optional<SealedBatch> b = spool->WaitForSendable(seq, 64, spool->generation());
    ASSERT_TRUE(b);
    EXPECT_EQ(SeqOf(*b), seq);
  }
}

TEST(Spool, AnAckPastTheSpoolMovesTheChainHeadForward) {
  tripline::testing::TempDir dir;
  auto spool = Open({.dir = dir.path()});
  ASSERT_TRUE(spool->Push(Batch(1)));
  spool->AckThrough(9);  // the collector had more than this spool (its tail was torn)
  EXPECT_EQ(spool->size(), 0u);
  EXPECT_TRUE(spool->Push(Batch(2)));  // the collector has it: not spooled
  EXPECT_EQ(spool->size(), 0u);
  EXPECT_TRUE(spool->Push(Batch(10)));
  EXPECT_TRUE(spool->WaitForSendable(10, 64, spool->generation()));
}

TEST(Spool, AChainThatJumpsAheadStartsANewSegmentAndSurvivesReopen) {
  tripline::testing::TempDir dir;
  {
    auto spool = Open({.dir = dir.path()});
    for (uint64_t s = 1; s <= 3; ++s) ASSERT_TRUE(spool->Push(Batch(s)));
    ASSERT_TRUE(WaitCommitted(*spool, 3));
    spool->AckThrough(9);  // the collector is past this spool
    ASSERT_TRUE(spool->Push(Batch(10)));
    ASSERT_TRUE(spool->Push(Batch(11)));
    ASSERT_TRUE(WaitCommitted(*spool, 11));
  }
  {
    auto spool = Open({.dir = dir.path()});
    EXPECT_EQ(spool->recovery().dropped_tail_bytes, 0u);
    EXPECT_EQ(spool->recovery().records, 2u);
    ASSERT_TRUE(spool->recovery().head);
    EXPECT_EQ(spool->recovery().head->seq, 11u);
    spool->AckThrough(11);
    ASSERT_TRUE(spool->Push(Batch(20)));  // a fresh start from a collector head of 19
    ASSERT_TRUE(WaitCommitted(*spool, 20));
  }
  auto spool = Open({.dir = dir.path()});
  EXPECT_EQ(spool->recovery().dropped_tail_bytes, 0u);
  EXPECT_EQ(spool->recovery().records, 1u);
  EXPECT_EQ(spool->recovery().head->seq, 20u);
  std::optional<SealedBatch> b = spool->WaitForSendable(20, 64, spool->generation());
  ASSERT_TRUE(b);
  EXPECT_EQ(SeqOf(*b), 20u);
}

TEST(Spool, Crc32cMatchesTheKnownValue) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);  // RFC 3720 check value
  EXPECT_NE(MaskCrc(Crc32c("")), Crc32c(""));
}

TEST(Spool, Crc32cAgreesWithTheBitwiseDefinitionAtEveryLengthAndAlignment) {
  // The hardware path works 8 bytes at a time: lengths and start offsets around that stride.
  auto bitwise = [](std::string_view data) {
    uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : data) {
      c ^= b;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
  };
  std::string bytes;
  for (int i = 0; i < 300; ++i) bytes.push_back(static_cast<char>((i * 131 + 7) & 0xff));
  for (size_t start = 0; start < 9; ++start) {
    for (size_t len = 0; start + len <= bytes.size(); len += (len < 40 ? 1 : 37)) {
      std::string_view piece = std::string_view(bytes).substr(start, len);
      ASSERT_EQ(Crc32c(piece), bitwise(piece)) << "start=" << start << " len=" << len;
    }
  }
}

TEST(Spool, CursorAfterAcksNamesTheAckedBatchDigest) {
  // The acked batch's digest is computed only when the cursor is written: after a reopen the
  // chain must go on from exactly that batch.
  tripline::testing::TempDir dir;
  std::string digest_of_12;
  {
    auto spool = Open({.dir = dir.path(), .max_bytes = 4096, .segment_bytes = 512});
    for (uint64_t seq = 1; seq <= 12; ++seq) {
      SealedBatch b = Batch(seq);
      if (seq == 12) digest_of_12 = ChainDigest(b.signed_batch->batch());
      ASSERT_TRUE(spool->Push(std::move(b)));
    }
    ASSERT_TRUE(spool->WaitUntilCommitted(absl::Now() + absl::Seconds(10)));
    spool->AckThrough(12);
  }
  auto spool = Open({.dir = dir.path(), .max_bytes = 4096, .segment_bytes = 512});
  EXPECT_EQ(spool->recovery().acked_seq, 12u);
  ASSERT_TRUE(spool->recovery().head);
  EXPECT_EQ(spool->recovery().head->seq, 12u);
  EXPECT_EQ(spool->recovery().head->digest, digest_of_12);
}

}  // namespace
}  // namespace tripline::agent
