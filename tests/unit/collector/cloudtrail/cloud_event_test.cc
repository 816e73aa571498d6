// Parsing LookupEvents answers and CloudTrail records: the shapes CloudTrail sends, and the
// hostile ones, each reported with its reason instead of failing the page.
#include "collector/cloudtrail/cloud_event.h"

#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tripline::collector {
namespace {

using nlohmann::json;

json Record(const std::string& id, const std::string& name) {
  return {{"eventVersion", "1.08"},
          {"eventID", id},
          {"eventName", name},
          {"eventSource", "ec2.amazonaws.com"},
          {"eventTime", "2026-11-23T18:00:05Z"},
          {"awsRegion", "eu-west-1"},
          {"sourceIPAddress", "203.0.113.50"},
          {"userAgent", "aws-cli/2.15.0"},
          {"userIdentity",
           {{"type", "AssumedRole"},
            {"arn", "arn:aws:sts::111122223333:assumed-role/ci/session"},
            {"accessKeyId", "ASIAEXAMPLE"}}}};
}

json Item(const json& record) {
  return {{"EventId", record["eventID"]},
          {"EventName", record["eventName"]},
          {"EventTime", 1795456805.0},
          {"EventSource", record["eventSource"]},
          {"Resources", json::array({{{"ResourceType", "AWS::EC2::SecurityGroup"},
                                      {"ResourceName", "sg-1"}}})},
          {"CloudTrailEvent", record.dump()}};
}

std::string Page(const json& items, const std::string& token = "") {
  json page = {{"Events", items}};
  if (!token.empty()) page["NextToken"] = token;
  return page.dump();
}

TEST(CloudEvent, RunInstancesGivesEveryFieldAndTheLaunchedIds) {
  json r = Record("11111111-2222-3333-4444-555555555555", "RunInstances");
  r["responseElements"] = {
      {"instancesSet",
       {{"items", json::array({{{"instanceId", "i-0aaa"}}, {{"instanceId", "i-0bbb"}}})}}}};
  absl::StatusOr<LookupEventsPage> page =
      ParseLookupEventsPage(Page(json::array({Item(r)}), "tok-2"), "us-east-1");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->events.size(), 1u);
  EXPECT_TRUE(page->malformed.empty());
  EXPECT_EQ(page->next_token, "tok-2");
  const CloudEvent& e = page->events[0];
  EXPECT_EQ(e.event_id, "11111111-2222-3333-4444-555555555555");
  EXPECT_EQ(e.event_name, "RunInstances");
  EXPECT_EQ(e.event_source, "ec2.amazonaws.com");
  EXPECT_EQ(e.region, "eu-west-1");  // the record's awsRegion, not the region polled
  EXPECT_EQ(e.principal_arn, "arn:aws:sts::111122223333:assumed-role/ci/session");
  EXPECT_EQ(e.access_key_id, "ASIAEXAMPLE");
  EXPECT_EQ(e.source_ip, "203.0.113.50");
  EXPECT_EQ(e.user_agent, "aws-cli/2.15.0");
  EXPECT_EQ(e.time_ns, int64_t{1795456805} * 1000000000);
  EXPECT_EQ(e.instance_ids, (std::vector<std::string>{"i-0aaa", "i-0bbb"}));
  EXPECT_EQ(e.resources, (std::vector<std::string>{"AWS::EC2::Instance i-0aaa",
                                                   "AWS::EC2::Instance i-0bbb",
                                                   "AWS::EC2::SecurityGroup sg-1"}));
  EXPECT_EQ(e.raw, r.dump());
}

TEST(CloudEvent, JsonPathStepsIntoArraysAndReturnsLeavesAsText) {
  json r = Record("e-1", "AuthorizeSecurityGroupIngress");
  r["requestParameters"] = {
      {"ipPermissions",
       {{"items", json::array({{{"ipRanges", {{"items", json::array({{{"cidrIp", "10.0.0.0/8"}}})}}},
                                {"toPort", 22}},
                               {{"ipRanges", {{"items", json::array({{{"cidrIp", "0.0.0.0/0"}}})}}},
                                {"toPort", 3389}}})}}},
      {"dryRun", false}};
  absl::StatusOr<CloudEvent> e = ParseCloudTrailRecord(r.dump(), "us-east-1");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(JsonPathValues(*e, "requestParameters.ipPermissions.items[].ipRanges.items[].cidrIp"),
            (std::vector<std::string>{"10.0.0.0/8", "0.0.0.0/0"}));
  EXPECT_EQ(JsonPathValues(*e, "requestParameters.ipPermissions.items[].toPort"),
            (std::vector<std::string>{"22", "3389"}));
  EXPECT_EQ(JsonPathValues(*e, "requestParameters.dryRun"), (std::vector<std::string>{"false"}));
  EXPECT_TRUE(JsonPathValues(*e, "requestParameters.nothing.here").empty());
  // An array where a key was expected, or a key where an array was: nothing, not a crash.
  EXPECT_TRUE(JsonPathValues(*e, "requestParameters.ipPermissions[].items").empty());
  EXPECT_TRUE(ValidateJsonPath("requestParameters.ipPermissions.items[].ipRanges").ok());
  EXPECT_FALSE(ValidateJsonPath("").ok());
  EXPECT_FALSE(ValidateJsonPath("a..b").ok());
  EXPECT_FALSE(ValidateJsonPath("a.b c").ok());
  EXPECT_FALSE(ValidateJsonPath("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q").ok());
}

TEST(CloudEvent, BadItemsAreReportedWithTheirReasonAndTheRestParsed) {
  json good = Item(Record("good-1", "CreateBucket"));
  json not_json = Item(Record("bad-1", "RunInstances"));
  not_json["CloudTrailEvent"] = "{\"eventName\": ";
  json wrong_type = Item(Record("bad-2", "RunInstances"));
  json r2 = Record("bad-2", "RunInstances");
  r2["userIdentity"]["arn"] = 42;
  wrong_type["CloudTrailEvent"] = r2.dump();
  json deep = Item(Record("bad-3", "PutObject"));
  deep["CloudTrailEvent"] = std::string(1000, '[') + std::string(1000, ']');
  json huge = Item(Record("bad-4", "PutObject"));
  json r4 = Record("bad-4", "PutObject");
  r4["requestParameters"] = {{"blob", std::string(kMaxRecordBytes, 'x')}};
  huge["CloudTrailEvent"] = r4.dump();
  json bad_id = Item(Record("bad-5", "RunInstances"));
  json r5 = Record("bad-5", "RunInstances");
  r5["responseElements"] = {{"instancesSet", {{"items", json::array({{{"instanceId", "i-1\n"}}})}}}};
  bad_id["CloudTrailEvent"] = r5.dump();
  json mismatched = Item(Record("bad-6", "RunInstances"));
  mismatched["EventId"] = "other-id";
  json no_time = Item(Record("bad-7", "RunInstances"));
  no_time["EventTime"] = "yesterday";
  json no_id = Item(Record("x", "RunInstances"));
  no_id.erase("EventId");

  absl::StatusOr<LookupEventsPage> page = ParseLookupEventsPage(
      Page(json::array({not_json, good, wrong_type, deep, huge, bad_id, mismatched, no_time, no_id,
                        "a string", 7})),
      "us-east-1");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->events.size(), 1u);
  EXPECT_EQ(page->events[0].event_id, "good-1");
  ASSERT_EQ(page->malformed.size(), 10u);
  auto reason = [&](size_t i) { return page->malformed[i].reason; };
  EXPECT_EQ(page->malformed[0].event_id, "bad-1");
  EXPECT_NE(reason(0).find("not JSON"), std::string::npos) << reason(0);
  EXPECT_NE(reason(1).find("userIdentity.arn: not a string"), std::string::npos) << reason(1);
  EXPECT_NE(reason(2).find("nested deeper"), std::string::npos) << reason(2);
  EXPECT_NE(reason(3).find("over the"), std::string::npos) << reason(3);
  EXPECT_NE(reason(4).find("not an instance id"), std::string::npos) << reason(4);
  EXPECT_NE(reason(5).find("differs"), std::string::npos) << reason(5);
  EXPECT_NE(reason(6).find("EventTime"), std::string::npos) << reason(6);
  EXPECT_EQ(page->malformed[7].event_id, "");
  EXPECT_NE(reason(9).find("not an object"), std::string::npos) << reason(9);
  for (const MalformedRecord& m : page->malformed) EXPECT_LE(m.raw.size(), 4096u);
}

TEST(CloudEvent, AnAnswerOfTheWrongShapeIsRefusedWhole) {
  EXPECT_FALSE(ParseLookupEventsPage("", "us-east-1").ok());
  EXPECT_FALSE(ParseLookupEventsPage("[]", "us-east-1").ok());
  EXPECT_FALSE(ParseLookupEventsPage(R"({"Events": {}})", "us-east-1").ok());
  EXPECT_FALSE(ParseLookupEventsPage(R"({"Events": [], "NextToken": 5})", "us-east-1").ok());
  absl::StatusOr<LookupEventsPage> empty = ParseLookupEventsPage(R"({"Events": []})", "us-east-1");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->events.empty());
  EXPECT_TRUE(empty->next_token.empty());
}

}  // namespace
}  // namespace tripline::collector
