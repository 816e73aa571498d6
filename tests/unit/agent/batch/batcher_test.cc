#include "agent/batch/batcher.h"

#include <atomic>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "platform/crypto/batch_signature.h"
#include "platform/crypto/digest.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

class FixedClock : public Clock {
 public:
  int64_t NowUnixNanos() const override { return 1700000000000000000; }
  int64_t MonotonicNanos() const override { return 42; }
};

tripline::v1::Event FileEvent(const std::string& path) {
  tripline::v1::Event e;
  e.mutable_file()->set_path(path);
  e.mutable_file()->set_change(tripline::v1::FileEvent::MODIFIED);
  return e;
}

std::unique_ptr<Spool> OpenSpool(const std::string& dir, uint64_t max_bytes = 1 << 20) {
  absl::StatusOr<std::unique_ptr<Spool>> spool =
      Spool::Open(SpoolOptions{.dir = dir, .max_bytes = max_bytes});
  EXPECT_TRUE(spool.ok()) << spool.status();
  return *std::move(spool);
}

// Waits (bounded) until the spool holds `n` batches.
bool WaitForBatches(const Spool& outbox, size_t n) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (outbox.size() < n) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

tripline::v1::EventBatch Parse(const SealedBatch& b) {
  tripline::v1::EventBatch batch;
  EXPECT_TRUE(batch.ParseFromString(b.signed_batch->batch()));
  return batch;
}

SealedBatch Get(Spool& outbox, uint64_t seq) {
  return *outbox.WaitForSendable(seq, 1 << 20, outbox.generation());
}

class BatcherTest : public ::testing::Test {
 protected:
  std::unique_ptr<SigningKey> key_ = SigningKey::Generate();
  FixedClock clock_;
  tripline::testing::TempDir dir_;
  std::unique_ptr<Spool> spool_ = OpenSpool(dir_.Sub("spool"));
  Spool& outbox_ = *spool_;
};

TEST_F(BatcherTest, BatchClosesAtMaxEvents) {
  Batcher batcher("i-1", *key_, clock_, &outbox_,
                  BatcherOptions{.max_events = 3, .linger = absl::Hours(1)});
  batcher.Start(0, GenesisDigest());
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(batcher.Add(FileEvent("/etc/f" + std::to_string(i))));
  ASSERT_TRUE(WaitForBatches(outbox_, 2));
  EXPECT_EQ(outbox_.size(), 2u);  // the 7th event waits for max_events or linger
  tripline::v1::EventBatch first = Parse(Get(outbox_, 1));
  tripline::v1::EventBatch second = Parse(Get(outbox_, 2));
  ASSERT_EQ(first.events_size(), 3);
  ASSERT_EQ(second.events_size(), 3);
  EXPECT_EQ(first.events(0).seq(), 1u);
  EXPECT_EQ(first.events(2).seq(), 3u);
  EXPECT_EQ(second.events(0).seq(), 4u);
  EXPECT_EQ(second.events(0).file().path(), "/etc/f3");
  EXPECT_EQ(first.events(0).time_unix_ns(), clock_.NowUnixNanos());
  batcher.Stop();  // seals the rest
  ASSERT_EQ(outbox_.size(), 3u);
  tripline::v1::EventBatch third = Parse(Get(outbox_, 3));
  ASSERT_EQ(third.events_size(), 1);
  EXPECT_EQ(third.events(0).seq(), 7u);
}

TEST_F(BatcherTest, BatchClosesAtLinger) {
  Batcher batcher("i-1", *key_, clock_, &outbox_,
                  BatcherOptions{.max_events = 512, .linger = absl::Milliseconds(20)});
  batcher.Start(0, GenesisDigest());
  ASSERT_TRUE(batcher.Add(FileEvent("/etc/a")));
  ASSERT_TRUE(batcher.Add(FileEvent("/etc/b")));
  ASSERT_TRUE(WaitForBatches(outbox_, 1));
  tripline::v1::EventBatch batch = Parse(Get(outbox_, 1));
  EXPECT_EQ(batch.events_size(), 2);
  ASSERT_TRUE(batcher.Add(FileEvent("/etc/c")));
  ASSERT_TRUE(WaitForBatches(outbox_, 2));
  EXPECT_EQ(Parse(Get(outbox_, 2)).events_size(), 1);
}

TEST_F(BatcherTest, HeartbeatsCarryTheSpoolBacklogEvenWhenNothingElseHappens) {
  Batcher batcher("i-1", *key_, clock_, &outbox_,
                  BatcherOptions{.max_events = 512,
                                 .linger = absl::Milliseconds(1),
                                 .heartbeat = absl::Milliseconds(50),
                                 .version = "9.9.9"});
  batcher.Start(0, GenesisDigest());
  // Nothing is added and nothing is acked: the heartbeats come anyway, and each one sees the
  // batches sealed before it waiting in the spool.
  ASSERT_TRUE(WaitForBatches(outbox_, 3));
  batcher.Stop();
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    tripline::v1::EventBatch b = Parse(Get(outbox_, seq));
    ASSERT_EQ(b.events_size(), 1) << seq;
    const tripline::v1::AgentEvent& hb = b.events(0).agent();
    EXPECT_EQ(hb.kind(), tripline::v1::AgentEvent::HEARTBEAT);
    EXPECT_EQ(hb.version(), "9.9.9");
    EXPECT_EQ(hb.spool_batches(), seq - 1);
    EXPECT_EQ(hb.spool_bytes() > 0, seq > 1) << seq;
    EXPECT_EQ(b.events(0).seq(), seq);
  }
}

TEST_F(BatcherTest, NoHeartbeatsUnlessAsked) {
  Batcher batcher("i-1", *key_, clock_, &outbox_,
                  BatcherOptions{.max_events = 512, .linger = absl::Milliseconds(1)});
  batcher.Start(0, GenesisDigest());
  ASSERT_TRUE(batcher.Add(FileEvent("/etc/a")));
  ASSERT_TRUE(WaitForBatches(outbox_, 1));
  absl::SleepFor(absl::Milliseconds(100));  // time for a heartbeat, had one been due
  batcher.Stop();
  EXPECT_EQ(outbox_.size(), 1u);
}

TEST_F(BatcherTest, ChainContinuesFromTheDurableHeadAndSignaturesVerify) {
  const std::string durable_digest = RandomBytes(32);
  Batcher batcher("i-abc", *key_, clock_, &outbox_,
                  BatcherOptions{.max_events = 2, .linger = absl::Hours(1)});
  batcher.Start(41, durable_digest);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(batcher.Add(FileEvent("/f")));
  ASSERT_TRUE(WaitForBatches(outbox_, 3));
  std::string prev = durable_digest;
  for (uint64_t seq = 42; seq <= 44; ++seq) {
    SealedBatch sealed = Get(outbox_, seq);
    EXPECT_EQ(sealed.seq, seq);
    tripline::v1::EventBatch batch = Parse(sealed);
    EXPECT_EQ(batch.agent_id(), "i-abc");
    EXPECT_EQ(batch.batch_seq(), seq);
    EXPECT_EQ(batch.prev_digest(), prev);
    EXPECT_EQ(batch.created_unix_ns(), clock_.NowUnixNanos());
    EXPECT_TRUE(VerifyBatchSignature(key_->public_key(), sealed.signed_batch->batch(),
                                     sealed.signed_batch->signature()));
    EXPECT_FALSE(VerifyBatchSignature(SigningKey::Generate()->public_key(),
                                      sealed.signed_batch->batch(),
                                      sealed.signed_batch->signature()));
    prev = ChainDigest(sealed.signed_batch->batch());
  }
}

TEST_F(BatcherTest, EventsAddedBeforeStartAreSealedAfterIt) {
  Batcher batcher("i-1", *key_, clock_, &outbox_,
                  BatcherOptions{.max_events = 10, .linger = absl::Milliseconds(1)});
  ASSERT_TRUE(batcher.Add(FileEvent("/early")));
  EXPECT_EQ(outbox_.size(), 0u);
  batcher.Start(7, RandomBytes(32));
  ASSERT_TRUE(WaitForBatches(outbox_, 1));
  tripline::v1::EventBatch batch = Parse(Get(outbox_, 8));
  ASSERT_EQ(batch.events_size(), 1);
  EXPECT_EQ(batch.events(0).file().path(), "/early");
}

TEST_F(BatcherTest, FullSpoolBlocksInsteadOfDroppingAndSaysSo) {
  // A cap below two batches: every batch waits for the ack of the one before.
  std::unique_ptr<Spool> spool = OpenSpool(dir_.Sub("tiny"), 1);
  Spool& tiny = *spool;
  Batcher batcher(
      "i-1", *key_, clock_, &tiny,
      BatcherOptions{.max_events = 1, .linger = absl::ZeroDuration(), .max_queued_events = 2});
  batcher.Start(0, GenesisDigest());
  constexpr int kEvents = 30;
  std::thread producer([&] {
    for (int i = 0; i < kEvents; ++i) ASSERT_TRUE(batcher.Add(FileEvent(std::to_string(i))));
  });
  // Consume like a collector that acks one batch at a time, until every file event arrived; the
  // spool's pressure notices arrive as AgentEvents in between.
  int next_path = 0, pressure_events = 0;
  for (uint64_t seq = 1; next_path < kEvents; ++seq) {
    std::optional<SealedBatch> b = tiny.WaitForSendable(seq, 1, tiny.generation());
    ASSERT_TRUE(b);
    tripline::v1::EventBatch batch = Parse(*b);
    ASSERT_EQ(batch.events_size(), 1);
    tiny.AckThrough(seq);
    if (batch.events(0).has_agent()) {
      EXPECT_EQ(batch.events(0).agent().kind(), tripline::v1::AgentEvent::SPOOL_PRESSURE);
      EXPECT_NE(batch.events(0).agent().message().find("cap"), std::string::npos);
      ++pressure_events;
      continue;
    }
    EXPECT_EQ(batch.events(0).file().path(), std::to_string(next_path++));
  }
  producer.join();
  batcher.SetNonBlocking();  // the last pressure notice may still be queued: nobody acks it
  EXPECT_EQ(next_path, kEvents);
  EXPECT_GE(tiny.pressure_episodes(), 1u);
  EXPECT_GE(pressure_events, 1);
  // Every notice's own batch meets this cap again, yet notices never crowd out the events: at
  // most one waits at a time, so they alternate with the file events at worst.
  EXPECT_LE(pressure_events, kEvents + 1);
}

TEST_F(BatcherTest, NonBlockingModeDropsWhenFull) {
  Batcher batcher(
      "i-1", *key_, clock_, &outbox_,
      BatcherOptions{.max_events = 1, .linger = absl::ZeroDuration(), .max_queued_events = 2});
  ASSERT_TRUE(batcher.Add(FileEvent("a")));
  ASSERT_TRUE(batcher.Add(FileEvent("b")));
  batcher.SetNonBlocking();
  EXPECT_FALSE(batcher.Add(FileEvent("c")));
}

TEST_F(BatcherTest, TryAddRefusesInsteadOfBlockingWhileTheQueueIsFull) {
  Batcher batcher(
      "i-1", *key_, clock_, spool_.get(),
      BatcherOptions{.max_events = 2, .linger = absl::Hours(1), .max_queued_events = 3});
  // Not started: nothing is sealed, so the queue fills.
  EXPECT_TRUE(batcher.TryAdd(FileEvent("/etc/a")));
  EXPECT_TRUE(batcher.TryAdd(FileEvent("/etc/b")));
  EXPECT_TRUE(batcher.TryAdd(FileEvent("/etc/c")));
  EXPECT_FALSE(batcher.TryAdd(FileEvent("/etc/d")));
  batcher.Start(0, GenesisDigest());  // seals a and b (a full batch): room again
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  bool taken = false;
  while (!(taken = batcher.TryAdd(FileEvent("/etc/d"))) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_TRUE(taken);
  batcher.Stop();
  ASSERT_TRUE(WaitForBatches(*spool_, 2));
  tripline::v1::EventBatch second = Parse(Get(*spool_, 2));
  ASSERT_EQ(second.events_size(), 2);
  EXPECT_EQ(second.events(0).file().path(), "/etc/c");
  EXPECT_EQ(second.events(1).file().path(), "/etc/d");
  EXPECT_EQ(second.events(1).seq(), 4u);  // the refused try took no seq
}

}  // namespace
}  // namespace tripline::agent
