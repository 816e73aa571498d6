// The poller and the writer together on a real SQLite store, with a scripted LookupEvents source
// that pages newest first like CloudTrail: paging, the persisted cursor, de-duplication across
// overlapping windows and restarts, failures in the middle of a window, malformed records, and
// the stop actions a cloud rule queues.
#include "collector/cloudtrail/cloudtrail_poller.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <thread>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "collector/cloudtrail/cloud_event_writer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/temp_dir.h"

namespace tripline::collector {
namespace {

using nlohmann::json;
constexpr int64_t kSec = 1000000000;
constexpr int64_t kStart = int64_t{1795456800} * kSec;

class TestClock : public Clock {
 public:
  int64_t NowUnixNanos() const override { return now.load(); }
  int64_t MonotonicNanos() const override { return SystemClock().MonotonicNanos(); }
  std::atomic<int64_t> now{kStart};
};

struct Call {
  int64_t start_ns, end_ns;
  std::string token;
  int64_t mono_ns;  // when it was made (the clock the poller spaces calls with)
};

// Items in CloudTrail's shape; answers newest first, `page_size` at a time, tokens are offsets.
class ScriptedSource : public LookupEventsSource {
 public:
  struct State {
    std::vector<std::pair<int64_t, json>> items;  // (time, item)
    std::vector<Call> calls;
    int fail_call = 0;  // the call with this 1-based number fails (Unavailable)
  };
  explicit ScriptedSource(std::shared_ptr<State> state) : state_(std::move(state)) {}
  absl::StatusOr<std::string> LookupEvents(int64_t start_ns, int64_t end_ns,
                                           const std::string& token, int max_results) override {
    state_->calls.push_back({start_ns, end_ns, token, SystemClock().MonotonicNanos()});
    if (static_cast<int>(state_->calls.size()) == state_->fail_call) {
      return absl::UnavailableError("LookupEvents: ThrottlingException: Rate exceeded");
    }
    std::vector<std::pair<int64_t, json>> found;
    for (const auto& it : state_->items) {
      if (it.first >= start_ns && it.first <= end_ns) found.push_back(it);
    }
    std::stable_sort(found.begin(), found.end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    const size_t offset = token.empty() ? 0 : std::stoul(token);
    json page = {{"Events", json::array()}};
    for (size_t i = offset; i < found.size() && i < offset + max_results; ++i) {
      page["Events"].push_back(found[i].second);
    }
    if (offset + max_results < found.size()) page["NextToken"] = std::to_string(offset + max_results);
    return page.dump();
  }

 private:
  std::shared_ptr<State> state_;
};

json Item(const std::string& id, const std::string& name, int64_t time_ns,
          const std::vector<std::string>& launched = {},
          const std::string& principal = "arn:aws:sts::111122223333:assumed-role/ci/s") {
  json record = {{"eventID", id},
                 {"eventName", name},
                 {"eventSource", "ec2.amazonaws.com"},
                 {"awsRegion", "us-east-1"},
                 {"sourceIPAddress", "198.51.100.7"},
                 {"userIdentity", {{"arn", principal}}}};
  if (!launched.empty()) {
    json items = json::array();
    for (const auto& i : launched) items.push_back({{"instanceId", i}});
    record["responseElements"] = {{"instancesSet", {{"items", items}}}};
  }
  return {{"EventId", id},
          {"EventName", name},
          {"EventTime", static_cast<double>(time_ns / kSec)},
          {"CloudTrailEvent", record.dump()}};
}

class PollerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = CollectorStore::Open(dir_.Sub("collector.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto rules = ParseRules(R"(
rules:
  - id: unexpected-launch
    title: Unexpected launch
    severity: critical
    match:
      kind: cloud
      event_names: [RunInstances]
      principals_allow: ["arn:aws:sts::*:assumed-role/deploy-*/*"]
    suppress: 10m
    response: [stop]
)",
                            "rules.yaml");
    ASSERT_TRUE(rules.ok()) << rules.status();
    rules_ = std::make_shared<const RuleSet>(std::move(*rules));
    writer_ = std::make_unique<CloudEventWriter>(
        store_.get(), [this] { return rules_; }, true, clock_, [this] { ++wakes_; });
    state_ = std::make_shared<ScriptedSource::State>();
  }

  std::unique_ptr<CloudTrailPoller> NewPoller() {
    CloudTrailPollerOptions o;
    o.region = "us-east-1";
    o.lookback_ns = 3600 * kSec;
    o.overlap_ns = 300 * kSec;
    o.min_call_interval_ns = 0;
    o.max_results = 50;
    return std::make_unique<CloudTrailPoller>(o, std::make_unique<ScriptedSource>(state_),
                                              writer_.get(), clock_);
  }

  std::vector<std::string> StoredIds() {
    std::vector<std::string> out;
    auto events = store_->ListCloudEvents(0, 100000);
    EXPECT_TRUE(events.ok()) << events.status();
    if (events.ok()) {
      for (const auto& e : *events) out.push_back(e.event_id);
    }
    return out;
  }

  void Feed(int n, int64_t from_ns, const std::string& prefix) {
    for (int i = 0; i < n; ++i) {
      state_->items.emplace_back(from_ns + i * kSec,
                                 Item(prefix + std::to_string(i), "DescribeInstances",
                                      from_ns + i * kSec));
    }
  }

  tripline::testing::TempDir dir_;
  TestClock clock_;
  std::unique_ptr<CollectorStore> store_;
  std::shared_ptr<const RuleSet> rules_;
  std::unique_ptr<CloudEventWriter> writer_;
  std::shared_ptr<ScriptedSource::State> state_;
  std::atomic<int> wakes_{0};
};

TEST_F(PollerTest, FirstWindowReachesBackTheLookbackAndPagesThroughIt) {
  Feed(120, kStart - 1000 * kSec, "e-");
  auto poller = NewPoller();
  ASSERT_TRUE(poller->PollOnce().ok());
  ASSERT_EQ(state_->calls.size(), 3u);  // 50 + 50 + 20
  EXPECT_EQ(state_->calls[0].start_ns, kStart - 3600 * kSec);
  EXPECT_EQ(state_->calls[0].end_ns, kStart);
  EXPECT_EQ(state_->calls[0].token, "");
  EXPECT_EQ(state_->calls[1].token, "50");
  EXPECT_EQ(state_->calls[2].token, "100");
  EXPECT_EQ(StoredIds().size(), 120u);
  auto cursor = store_->GetCloudCursor("us-east-1");
  ASSERT_TRUE(cursor.ok());
  ASSERT_TRUE(cursor->has_value());
  EXPECT_EQ(**cursor, kStart);
  EXPECT_EQ(poller->stats().windows, 1);
  EXPECT_EQ(poller->stats().events_new, 120);
}

TEST_F(PollerTest, NextWindowStartsOverlapBeforeTheCursorAndDropsWhatItSawAgain) {
  Feed(10, kStart - 100 * kSec, "e-");
  auto poller = NewPoller();
  ASSERT_TRUE(poller->PollOnce().ok());
  clock_.now += 60 * kSec;
  // Delivered late: its time is before the cursor, inside the overlap.
  state_->items.emplace_back(kStart - 20 * kSec, Item("late-1", "DescribeVolumes", kStart - 20 * kSec));
  ASSERT_TRUE(poller->PollOnce().ok());
  EXPECT_EQ(state_->calls.back().start_ns, kStart - 300 * kSec);
  EXPECT_EQ(state_->calls.back().end_ns, kStart + 60 * kSec);
  const std::vector<std::string> ids = StoredIds();
  EXPECT_EQ(ids.size(), 11u);
  EXPECT_NE(std::find(ids.begin(), ids.end(), "late-1"), ids.end());
  EXPECT_EQ(poller->stats().events_seen, 10);  // the first window's, seen again in memory
}

TEST_F(PollerTest, ARestartedPollerStoresNothingTwice) {
  Feed(75, kStart - 200 * kSec, "e-");
  ASSERT_TRUE(NewPoller()->PollOnce().ok());
  clock_.now += 30 * kSec;
  auto second = NewPoller();  // a new process: no memory of seen ids
  ASSERT_TRUE(second->PollOnce().ok());
  EXPECT_EQ(second->stats().events_new, 0);
  EXPECT_EQ(second->stats().events_seen, 75);
  EXPECT_EQ(StoredIds().size(), 75u);
}

TEST_F(PollerTest, AFailedPageLeavesTheCursorAndTheWindowIsReadAgainWhole) {
  Feed(120, kStart - 1000 * kSec, "e-");
  state_->fail_call = 2;
  auto poller = NewPoller();
  EXPECT_FALSE(poller->PollOnce().ok());
  EXPECT_EQ(StoredIds().size(), 50u);  // the first page is kept
  auto cursor = store_->GetCloudCursor("us-east-1");
  ASSERT_TRUE(cursor.ok());
  EXPECT_FALSE(cursor->has_value());
  ASSERT_TRUE(poller->PollOnce().ok());
  EXPECT_EQ(state_->calls[2].start_ns, kStart - 3600 * kSec);  // the same window again
  EXPECT_EQ(state_->calls[2].token, "");
  const std::vector<std::string> ids = StoredIds();
  EXPECT_EQ(ids.size(), 120u);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 120u);
}

TEST_F(PollerTest, MalformedRecordsAreStoredOnceAndSkipped) {
  Feed(3, kStart - 100 * kSec, "e-");
  json bad = Item("bad-1", "RunInstances", kStart - 50 * kSec);
  bad["CloudTrailEvent"] = "not json";
  state_->items.emplace_back(kStart - 50 * kSec, bad);
  auto poller = NewPoller();
  ASSERT_TRUE(poller->PollOnce().ok());
  clock_.now += 10 * kSec;
  ASSERT_TRUE(poller->PollOnce().ok());  // the bad record comes again in the overlap
  EXPECT_EQ(StoredIds().size(), 3u);
  auto errors = store_->ListCloudEventErrors(10);
  ASSERT_TRUE(errors.ok());
  ASSERT_EQ(errors->size(), 1u);
  EXPECT_EQ((*errors)[0].event_id, "bad-1");
  EXPECT_NE((*errors)[0].reason.find("not JSON"), std::string::npos);
  EXPECT_EQ(poller->stats().malformed, 2);
}

TEST_F(PollerTest, AnUnexpectedLaunchQueuesAStopPerLaunchedInstanceEvenWhenSuppressed) {
  state_->items.emplace_back(kStart - 50 * kSec, Item("run-1", "RunInstances", kStart - 50 * kSec,
                                                      {"i-01", "i-02"}));
  state_->items.emplace_back(kStart - 40 * kSec,
                             Item("run-ok", "RunInstances", kStart - 40 * kSec, {"i-09"},
                                  "arn:aws:sts::111122223333:assumed-role/deploy-prod/p"));
  state_->items.emplace_back(kStart - 30 * kSec, Item("run-2", "RunInstances", kStart - 30 * kSec,
                                                      {"i-03"}));
  auto poller = NewPoller();
  ASSERT_TRUE(poller->PollOnce().ok());
  auto actions = store_->ListActions(0, 100);
  ASSERT_TRUE(actions.ok());
  std::vector<std::string> targets;
  for (const ActionRecord& a : *actions) {
    EXPECT_EQ(a.kind, "stop");
    EXPECT_EQ(a.status, "pending");
    EXPECT_EQ(a.actor, "collector");
    EXPECT_EQ(a.agent_id, "cloudtrail:us-east-1");
    targets.push_back(a.target);
  }
  EXPECT_EQ(targets, (std::vector<std::string>{"i-01", "i-02", "i-03"}));
  // One incident (the second launch falls in the suppress time), holding both launches.
  auto incidents = store_->ListIncidents("", 10);
  ASSERT_TRUE(incidents.ok());
  ASSERT_EQ(incidents->size(), 1u);
  EXPECT_EQ((*incidents)[0].rule_id, "unexpected-launch");
  auto linked = store_->IncidentCloudEvents((*incidents)[0].id);
  ASSERT_TRUE(linked.ok());
  ASSERT_EQ(linked->size(), 2u);
  EXPECT_GT(wakes_.load(), 0);
}

// LookupEvents allows about 2 calls per second per region: pages of one window are spaced too.
TEST_F(PollerTest, CallsAreSpacedByTheMinimumCallInterval) {
  Feed(120, kStart - 1000 * kSec, "e-");
  CloudTrailPollerOptions o;
  o.region = "us-east-1";
  o.min_call_interval_ns = 100000000;
  CloudTrailPoller poller(o, std::make_unique<ScriptedSource>(state_), writer_.get(), clock_);
  ASSERT_TRUE(poller.PollOnce().ok());
  ASSERT_TRUE(poller.PollOnce().ok());
  ASSERT_EQ(state_->calls.size(), 4u);  // three pages, then a window of one
  for (size_t i = 1; i < state_->calls.size(); ++i) {
    EXPECT_GE(state_->calls[i].mono_ns - state_->calls[i - 1].mono_ns, o.min_call_interval_ns);
  }
}

TEST_F(PollerTest, StopReturnsPromptlyWhileWaitingBetweenPolls) {
  CloudTrailPollerOptions o;
  o.region = "us-east-1";
  o.poll_interval_ns = 3600 * kSec;
  o.min_call_interval_ns = 0;
  auto poller = std::make_unique<CloudTrailPoller>(o, std::make_unique<ScriptedSource>(state_),
                                                   writer_.get(), clock_);
  poller->Start();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (poller->stats().windows < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(poller->stats().windows, 1);
  poller->Stop();  // must not wait out the hour
  EXPECT_EQ(state_->calls.size(), 1u);
}

}  // namespace
}  // namespace tripline::collector
