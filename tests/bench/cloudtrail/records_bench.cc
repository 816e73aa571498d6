// CloudTrail records/s: LookupEvents pages of 50 recorded-shape events, parsed
// (ParseLookupEventsPage), then parsed and stored with the shipped rules run over them
// (CloudEventWriter on a real SQLite file), side by side with the JSON parse alone (nlohmann),
// the floor any parser of these pages pays. Prints figures; asserts nothing.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "collector/cloudtrail/cloud_event.h"
#include "collector/cloudtrail/cloud_event_writer.h"
#include "collector/rules/rule_set.h"
#include "collector/store/collector_store.h"
#include "nlohmann/json.hpp"
#include "platform/runtime/clock.h"
#include "platform/runtime/logging.h"
#include "tests/support/temp_dir.h"

namespace tripline::collector {
namespace {

using nlohmann::json;

// One realistic page: mostly read-only calls, some RunInstances by a deployer (no response).
std::string Page(int page_no) {
  json events = json::array();
  for (int i = 0; i < 50; ++i) {
    const int n = page_no * 50 + i;
    const bool launch = n % 25 == 0;
    json record = {
        {"eventVersion", "1.08"},
        {"userIdentity",
         {{"type", "AssumedRole"},
          {"principalId", "AROAEXAMPLE:session"},
          {"arn", launch ? "arn:aws:sts::111122223333:assumed-role/deploy-prod/pipeline"
                         : "arn:aws:sts::111122223333:assumed-role/app/instance-" +
                               std::to_string(n % 40)},
          {"accountId", "111122223333"},
          {"accessKeyId", "ASIAEXAMPLE" + std::to_string(n % 97)},
          {"sessionContext",
           {{"sessionIssuer", {{"type", "Role"}, {"userName", "app"}}},
            {"attributes", {{"creationDate", "2026-11-23T17:00:00Z"}, {"mfaAuthenticated", "false"}}}}}}},
        {"eventTime", "2026-11-23T18:00:00Z"},
        {"eventSource", "ec2.amazonaws.com"},
        {"eventName", launch ? "RunInstances" : "DescribeInstances"},
        {"awsRegion", "us-east-1"},
        {"sourceIPAddress", "10.0." + std::to_string(n % 250) + ".7"},
        {"userAgent", "aws-sdk-go-v2/1.24.0 os/linux lang/go#1.21.5 api/ec2#1.141.0"},
        {"requestParameters",
         {{"instancesSet", {{"items", json::array({{{"instanceId", "i-0abc"}}})}}},
          {"filterSet", json::object()}}},
        {"responseElements", nullptr},
        {"requestID", "req-" + std::to_string(n)},
        {"eventID", "bench-" + std::to_string(n)},
        {"readOnly", !launch},
        {"eventType", "AwsApiCall"},
        {"managementEvent", true},
        {"recipientAccountId", "111122223333"},
        {"eventCategory", "Management"}};
    if (launch) {
      record["responseElements"] = {
          {"instancesSet", {{"items", json::array({{{"instanceId", "i-0l" + std::to_string(n)}}})}}}};
    }
    events.push_back({{"EventId", record["eventID"]},
                      {"EventName", record["eventName"]},
                      {"ReadOnly", launch ? "false" : "true"},
                      {"EventTime", 1795456800.0 + n},
                      {"EventSource", "ec2.amazonaws.com"},
                      {"Username", "app"},
                      {"Resources", json::array()},
                      {"CloudTrailEvent", record.dump()}});
  }
  return json({{"Events", events}, {"NextToken", "token"}}).dump();
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

int Run() {
  spdlog::set_level(spdlog::level::warn);
  constexpr int kPages = 400;  // 20,000 records
  std::vector<std::string> pages;
  size_t bytes = 0;
  for (int p = 0; p < kPages; ++p) {
    pages.push_back(Page(p));
    bytes += pages.back().size();
  }
  const double records = kPages * 50.0;

  // Best of three rounds each, alternating, so neither side gets the cold caches.
  size_t sink = 0;
  double json_only = 0, parse = 0;
  for (int round = 0; round < 3; ++round) {
    auto t = std::chrono::steady_clock::now();
    for (const std::string& p : pages) {
      json page = json::parse(p);
      for (const json& item : page["Events"]) {
        sink += json::parse(item["CloudTrailEvent"].get<std::string>()).size();
      }
    }
    json_only = std::max(json_only, records / Seconds(t));
    t = std::chrono::steady_clock::now();
    for (const std::string& p : pages) {
      absl::StatusOr<LookupEventsPage> page = ParseLookupEventsPage(p, "us-east-1");
      if (!page.ok() || page->events.size() != 50) {
        std::fprintf(stderr, "parse failed: %s\n", page.status().ToString().c_str());
        return 1;
      }
      sink += page->events.size();
    }
    parse = std::max(parse, records / Seconds(t));
  }

  tripline::testing::TempDir dir;
  auto store = CollectorStore::Open(dir.Sub("collector.db"));
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<RuleSet> rules =
      LoadRules(std::string(TRIPLINE_SOURCE_DIR) + "/packaging/config/rules/cloudtrail.yaml");
  if (!rules.ok()) {
    std::fprintf(stderr, "%s\n", rules.status().ToString().c_str());
    return 1;
  }
  auto shared = std::make_shared<const RuleSet>(*std::move(rules));
  CloudEventWriter writer(
      store->get(), [&] { return shared; }, true, SystemClock(), [] {});
  auto t = std::chrono::steady_clock::now();
  int stored = 0;
  for (size_t i = 0; i < pages.size(); ++i) {
    absl::StatusOr<LookupEventsPage> page = ParseLookupEventsPage(pages[i], "us-east-1");
    absl::StatusOr<int> n = writer.Store("us-east-1", page->events, page->malformed,
                                         i + 1 == pages.size() ? std::optional<int64_t>(1) : std::nullopt);
    if (!n.ok()) {
      std::fprintf(stderr, "%s\n", n.status().ToString().c_str());
      return 1;
    }
    stored += *n;
  }
  const double parse_store = records / Seconds(t);

  std::printf("cloudtrail records: %d pages x 50 records, %.1f KiB per page on average\n", kPages,
              bytes / 1024.0 / kPages);
  std::printf("  %-46s %12.0f records/s\n", "nlohmann JSON parse only (peer, the floor)", json_only);
  std::printf("  %-46s %12.0f records/s\n", "ParseLookupEventsPage (checked CloudEvents)", parse);
  std::printf("  %-46s %12.0f records/s  (%d stored, shipped rules)\n",
              "parse + store + rules (one txn per page)", parse_store, stored);
  std::printf("  LookupEvents delivers at most 50 records x 2 calls/s = 100 records/s per region\n");
  return sink == 0 ? 1 : 0;
}

}  // namespace
}  // namespace tripline::collector

int main() { return tripline::collector::Run(); }
