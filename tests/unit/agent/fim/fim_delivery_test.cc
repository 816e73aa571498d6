#include "agent/fim/fim_delivery.h"

#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

using tripline::v1::Event;
using tripline::v1::EventBatch;

Event FileAt(int64_t time_unix_ns) {
  Event e;
  e.set_time_unix_ns(time_unix_ns);
  e.mutable_file()->set_path("/etc/f" + std::to_string(time_unix_ns));
  return e;
}

// A batch holding file events made at `times`, with a log event and an agent event between them
// (other producers' events share batches with FIM's).
EventBatch Batch(const std::vector<int64_t>& times) {
  EventBatch b;
  b.add_events()->mutable_agent()->set_message("heartbeat");
  for (int64_t t : times) {
    *b.add_events() = FileAt(t);
    b.add_events()->mutable_log()->set_line("a log line");
  }
  return b;
}

class FimDeliveryTest : public ::testing::Test {
 protected:
  std::unique_ptr<FimDelivery> Open() {
    absl::StatusOr<std::unique_ptr<FimDelivery>> d = FimDelivery::Open(dir_.Sub("fim.db"));
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *std::move(d) : nullptr;
  }
  testing::TempDir dir_;
};

TEST_F(FimDeliveryTest, AfterACrashOnlyBatchesThatLandedCountAsDelivered) {
  {
    std::unique_ptr<FimDelivery> d = Open();
    ASSERT_TRUE(d->Recover(0).ok());
    EXPECT_TRUE(d->recovered());
    for (uint64_t id = 1; id <= 5; ++id) d->Offering(id, static_cast<int64_t>(id) * 10);
    ASSERT_TRUE(d->RecordSealed(1, Batch({10, 20})).ok());
    ASSERT_TRUE(d->RecordSealed(2, Batch({30})).ok());
    ASSERT_TRUE(d->RecordSealed(3, Batch({40})).ok());
    ASSERT_TRUE(d->RecordSealed(4, EventBatch()).ok());  // no file events: names nothing
    EXPECT_EQ(d->delivered_through(), 0u);               // none durable yet; id 5 never sealed
  }                                                      // killed here
  std::unique_ptr<FimDelivery> d = Open();
  EXPECT_FALSE(d->recovered());
  EXPECT_EQ(d->max_known_id(), 4u);
  // Batch 2 is the last one the spool (or the collector) has: 3 was lost, and its seq is reused.
  ASSERT_TRUE(d->Recover(2).ok());
  EXPECT_EQ(d->delivered_through(), 3u);
  ASSERT_TRUE(d->Recover(9).ok());  // only the first call counts
  EXPECT_EQ(d->delivered_through(), 3u);
  // Batch 3 of this run holds other ids: the old row for 3 does not count for it.
  d->Offering(6, 60);
  ASSERT_TRUE(d->RecordSealed(3, Batch({60})).ok());
  ASSERT_TRUE(d->Durable(3).ok());
  EXPECT_EQ(d->delivered_through(), 6u);
}

TEST_F(FimDeliveryTest, DurableBatchesMoveTheWatermarkForGood) {
  {
    std::unique_ptr<FimDelivery> d = Open();
    ASSERT_TRUE(d->Recover(0).ok());
    d->Offering(1, 10);
    d->Offering(2, 20);
    ASSERT_TRUE(d->RecordSealed(1, Batch({10})).ok());
    ASSERT_TRUE(d->RecordSealed(2, Batch({20})).ok());
    ASSERT_TRUE(d->Durable(1).ok());
    EXPECT_EQ(d->delivered_through(), 1u);
    ASSERT_TRUE(d->Durable(1).ok());  // again: no change
    EXPECT_EQ(d->delivered_through(), 1u);
  }
  std::unique_ptr<FimDelivery> d = Open();
  // Even when nothing landed past what was durable (a spool cut back), what was durable stays.
  ASSERT_TRUE(d->Recover(1).ok());
  EXPECT_EQ(d->delivered_through(), 1u);
}

TEST_F(FimDeliveryTest, AnEventNotTakenIsNotCountedInTheNextBatch) {
  std::unique_ptr<FimDelivery> d = Open();
  ASSERT_TRUE(d->Recover(0).ok());
  d->Offering(1, 10);
  d->Offering(2, 20);
  d->Withdraw(2);  // no room: offered again later
  ASSERT_TRUE(d->RecordSealed(1, Batch({10})).ok());
  d->Offering(2, 20);
  ASSERT_TRUE(d->RecordSealed(2, Batch({20})).ok());
  ASSERT_TRUE(d->Durable(1).ok());
  EXPECT_EQ(d->delivered_through(), 1u);
  ASSERT_TRUE(d->Durable(2).ok());
  EXPECT_EQ(d->delivered_through(), 2u);
}

TEST_F(FimDeliveryTest, AnEventLostBeforeSealingIsNeverCountedAsDelivered) {
  std::unique_ptr<FimDelivery> d = Open();
  ASSERT_TRUE(d->Recover(0).ok());
  d->Offering(1, 10);
  d->Offering(2, 20);
  d->Offering(3, 30);
  ASSERT_TRUE(d->RecordSealed(1, Batch({10})).ok());
  // The event of id 2 never reached a batch: neither it nor anything after it counts, so a
  // restart offers them again.
  ASSERT_TRUE(d->RecordSealed(2, Batch({30})).ok());
  ASSERT_TRUE(d->Durable(2).ok());
  EXPECT_EQ(d->delivered_through(), 1u);
}

}  // namespace
}  // namespace tripline::agent
