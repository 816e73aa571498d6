// LookupEventsClient against the local CloudTrail endpoint (tests/fakes/cloudtrail_endpoint.py),
// which checks every SigV4 signature with botocore: a passing call proves the JSON 1.1 request
// (X-Amz-Target, Content-Type, body) was signed the way AWS expects.
#include "collector/cloudtrail/lookup_events_client.h"


#include <cstdlib>
#include <string>

#include "collector/cloudtrail/cloud_event.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/local_endpoint.h"

namespace tripline::collector {
namespace {

constexpr char kAccessKey[] = "AKIDCLOUDTRAILTEST01";
constexpr char kSecretKey[] = "cloudtrail-test-secret-key";
constexpr int64_t kSec = 1000000000;

class LookupEventsClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(endpoint_.running());
    setenv("AWS_ACCESS_KEY_ID", kAccessKey, 1);
    setenv("AWS_SECRET_ACCESS_KEY", kSecretKey, 1);
    unsetenv("AWS_SESSION_TOKEN");
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
  }

  std::unique_ptr<LookupEventsSource> Client(int max_attempts = 4) {
    AwsConfig aws;
    aws.max_attempts = max_attempts;
    aws.retry_base_ms = 1;
    CloudTrailConfig ct;
    ct.endpoint = endpoint_.url();
    auto client = MakeLookupEventsClient(aws, ct, "eu-west-1");
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  void Feed(int n) {
    nlohmann::json records = nlohmann::json::array();
    for (int i = 0; i < n; ++i) {
      records.push_back({{"eventID", "ev-" + std::to_string(i)},
                         {"eventName", "DescribeInstances"},
                         {"eventTime", "2026-11-23T18:00:0" + std::to_string(i) + "Z"},
                         {"awsRegion", "eu-west-1"},
                         {"userIdentity", {{"arn", "arn:aws:iam::1:user/a"}}}});
    }
    const std::string body = nlohmann::json({{"region", "eu-west-1"}, {"records", records}}).dump();
    ASSERT_NE(endpoint_.Admin("/_tripline/records", &body), "");
  }

  std::string Inject(int count) {
    const std::string body =
        nlohmann::json({{"code", "ThrottlingException"}, {"count", count}}).dump();
    return endpoint_.Admin("/_tripline/inject", &body);
  }

  nlohmann::json Calls() {
    return nlohmann::json::parse(endpoint_.Admin("/_tripline/calls"), nullptr, false);
  }

  testing::LocalEndpoint endpoint_{TRIPLINE_CLOUDTRAIL_ENDPOINT_SCRIPT,
                                   {"--region", "eu-west-1", "--access-key", kAccessKey,
                                    "--secret-key", kSecretKey}};
};

const int64_t kFrom = int64_t{1795456800} * kSec;  // 2026-11-23T18:00:00Z

TEST_F(LookupEventsClientTest, SignedPagesComeNewestFirstWithANextToken) {
  Feed(3);
  auto client = Client();
  ASSERT_NE(client, nullptr);
  absl::StatusOr<std::string> first = client->LookupEvents(kFrom, kFrom + 60 * kSec, "", 2);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<LookupEventsPage> page = ParseLookupEventsPage(*first, "eu-west-1");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->events.size(), 2u);
  EXPECT_EQ(page->events[0].event_id, "ev-2");
  EXPECT_EQ(page->events[1].event_id, "ev-1");
  ASSERT_FALSE(page->next_token.empty());
  absl::StatusOr<std::string> second =
      client->LookupEvents(kFrom, kFrom + 60 * kSec, page->next_token, 2);
  ASSERT_TRUE(second.ok()) << second.status();
  page = ParseLookupEventsPage(*second, "eu-west-1");
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->events.size(), 1u);
  EXPECT_EQ(page->events[0].event_id, "ev-0");
  EXPECT_TRUE(page->next_token.empty());
  const nlohmann::json calls = Calls();
  ASSERT_EQ(calls.size(), 2u);
  for (const auto& c : calls) {
    EXPECT_TRUE(c["signature_ok"].get<bool>()) << c.dump();
    EXPECT_EQ(c["target"], kLookupEventsTarget);
    EXPECT_EQ(c["region"], "eu-west-1");
  }
  EXPECT_EQ(calls[0]["request"]["StartTime"].get<double>(), 1795456800.0);
  EXPECT_EQ(calls[0]["request"]["EndTime"].get<double>(), 1795456860.0);
  EXPECT_TRUE(calls[1]["request"]["NextToken"].get<bool>());
}

TEST_F(LookupEventsClientTest, ThrottlingIsRetriedThenReportedAsUnavailable) {
  Feed(1);
  auto client = Client(/*max_attempts=*/3);
  ASSERT_NE(client, nullptr);
  ASSERT_NE(Inject(2), "");
  absl::StatusOr<std::string> ok = client->LookupEvents(kFrom, kFrom + 60 * kSec, "", 50);
  ASSERT_TRUE(ok.ok()) << ok.status();  // the third attempt went through
  ASSERT_NE(Inject(3), "");
  absl::StatusOr<std::string> throttled = client->LookupEvents(kFrom, kFrom + 60 * kSec, "", 50);
  ASSERT_FALSE(throttled.ok());
  EXPECT_EQ(throttled.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(throttled.status().message().find("ThrottlingException"), std::string::npos);
  EXPECT_EQ(Calls().size(), 6u);
}

TEST_F(LookupEventsClientTest, AWrongSecretIsRefusedAndNotRetried) {
  setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret", 1);
  auto client = Client();
  ASSERT_NE(client, nullptr);
  absl::StatusOr<std::string> r = client->LookupEvents(kFrom, kFrom + 60 * kSec, "", 50);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  EXPECT_NE(r.status().message().find("InvalidSignatureException"), std::string::npos);
  EXPECT_EQ(Calls().size(), 1u);
}

TEST(LookupEventsRequestBody, TimesInEpochSecondsAndTheTokenOnlyWhenPaging) {
  EXPECT_EQ(LookupEventsRequestBody(kFrom, kFrom + 61 * kSec + 5, "", 50),
            R"({"EndTime":1795456861,"MaxResults":50,"StartTime":1795456800})");
  EXPECT_EQ(LookupEventsRequestBody(kFrom, kFrom, "a\"b", 5),
            R"({"EndTime":1795456800,"MaxResults":5,"NextToken":"a\"b","StartTime":1795456800})");
}

}  // namespace
}  // namespace tripline::collector
