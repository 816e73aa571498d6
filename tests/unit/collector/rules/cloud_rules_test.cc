// Rules of kind cloud: what they match on a CloudEvent, and the errors of bad ones.
#include <string>

#include "collector/cloudtrail/cloud_event.h"
#include "collector/rules/rule_set.h"
#include "gtest/gtest.h"

namespace tripline::collector {
namespace {

CloudEvent Event(const std::string& name, const std::string& principal, const std::string& ip,
                 const std::string& region, const std::string& extra_json = "") {
  const std::string record =
      R"({"eventID":"e-1","eventName":")" + name + R"(","awsRegion":")" + region +
      R"(","sourceIPAddress":")" + ip + R"(","userIdentity":{"arn":")" + principal + R"("})" +
      extra_json + "}";
  absl::StatusOr<CloudEvent> e = ParseCloudTrailRecord(record, region);
  EXPECT_TRUE(e.ok()) << e.status() << " " << record;
  return e.ok() ? *e : CloudEvent();
}

std::vector<std::string> Matching(const RuleSet& rules, const CloudEvent& e) {
  std::vector<std::string> out;
  for (const auto& [rule, fields] : rules.MatchCloud(e)) out.push_back(rule->id);
  return out;
}

RuleSet Parse(const std::string& text) {
  absl::StatusOr<RuleSet> rules = ParseRules(text, "rules.yaml");
  EXPECT_TRUE(rules.ok()) << rules.status();
  return rules.ok() ? *rules : RuleSet();
}

std::string ErrorOf(const std::string& text) {
  absl::StatusOr<RuleSet> rules = ParseRules(text, "rules.yaml");
  return rules.ok() ? "" : std::string(rules.status().message());
}

using V = std::vector<std::string>;

TEST(CloudRules, EventNamesPrincipalGlobsAndTheAllowList) {
  RuleSet rules = Parse(R"(
rules:
  - id: launch
    title: t
    severity: high
    match:
      kind: cloud
      event_names: [RunInstances]
      principals: ["arn:aws:sts::111122223333:*"]
      principals_allow: ["arn:aws:sts::*:assumed-role/deploy-*/*"]
    response: [stop]
)");
  ASSERT_EQ(rules.rules().size(), 1u);
  EXPECT_TRUE(rules.rules()[0].Stops());
  EXPECT_FALSE(rules.rules()[0].Isolates());
  EXPECT_EQ(Matching(rules, Event("RunInstances", "arn:aws:sts::111122223333:assumed-role/ci/x",
                                  "203.0.113.1", "us-east-1")),
            V{"launch"});
  EXPECT_EQ(Matching(rules, Event("RunInstances",
                                  "arn:aws:sts::111122223333:assumed-role/deploy-prod/pipeline",
                                  "203.0.113.1", "us-east-1")),
            V{});
  EXPECT_EQ(Matching(rules, Event("RunInstances", "arn:aws:sts::999999999999:assumed-role/ci/x",
                                  "203.0.113.1", "us-east-1")),
            V{});  // another account
  EXPECT_EQ(Matching(rules, Event("StopInstances", "arn:aws:sts::111122223333:assumed-role/ci/x",
                                  "203.0.113.1", "us-east-1")),
            V{});
}

TEST(CloudRules, SourceIpListsAndRegions) {
  RuleSet rules = Parse(R"(
rules:
  - id: outside-office
    title: t
    severity: high
    match:
      kind: cloud
      source_ips_not: [198.51.100.0/24, "2001:db8:1::/48"]
  - id: from-tor-list
    title: t
    severity: high
    match:
      kind: cloud
      source_ips: [203.0.113.0/24, "2001:db8:bad::/48"]
  - id: unused-region
    title: t
    severity: high
    match:
      kind: cloud
      regions_not: [us-east-1, eu-west-1]
  - id: only-frankfurt
    title: t
    severity: low
    match:
      kind: cloud
      regions: [eu-central-1]
)");
  const std::string p = "arn:aws:iam::111122223333:user/alice";
  EXPECT_EQ(Matching(rules, Event("ListBuckets", p, "198.51.100.20", "us-east-1")), V{});
  EXPECT_EQ(Matching(rules, Event("ListBuckets", p, "2001:db8:1:5::1", "us-east-1")), V{});
  EXPECT_EQ(Matching(rules, Event("ListBuckets", p, "203.0.113.9", "eu-west-1")),
            (V{"outside-office", "from-tor-list"}));
  EXPECT_EQ(Matching(rules, Event("ListBuckets", p, "2001:db8:bad::7", "eu-west-1")),
            (V{"outside-office", "from-tor-list"}));
  EXPECT_EQ(Matching(rules, Event("ListBuckets", p, "198.51.100.20", "eu-central-1")),
            (V{"unused-region", "only-frankfurt"}));
  // A service caller ("ec2.amazonaws.com") is no address: outside every list.
  EXPECT_EQ(Matching(rules, Event("ListBuckets", p, "ec2.amazonaws.com", "us-east-1")),
            V{"outside-office"});
}

TEST(CloudRules, WhereConditionsOnJsonPathsOfTheRecord) {
  RuleSet rules = Parse(R"(
rules:
  - id: open-world
    title: t
    severity: high
    match:
      kind: cloud
      event_names: [AuthorizeSecurityGroupIngress]
      where:
        - {field: "requestParameters.ipPermissions.items[].ipRanges.items[].cidrIp", in: ["0.0.0.0/0"]}
        - {field: errorCode, not_matches: "."}
  - id: no-mfa
    title: t
    severity: high
    match:
      kind: cloud
      event_names: [ConsoleLogin]
      where:
        - {field: additionalEventData.MFAUsed, equals: "No"}
)");
  const std::string p = "arn:aws:iam::111122223333:user/alice";
  auto ingress = [&](const std::string& cidrs, const std::string& error) {
    return Event("AuthorizeSecurityGroupIngress", p, "203.0.113.1", "us-east-1",
                 R"(,"requestParameters":{"ipPermissions":{"items":[{"ipRanges":{"items":[)" +
                     cidrs + "]}}]}}" + error);
  };
  EXPECT_EQ(Matching(rules, ingress(R"({"cidrIp":"10.0.0.0/8"},{"cidrIp":"0.0.0.0/0"})", "")),
            V{"open-world"});
  EXPECT_EQ(Matching(rules, ingress(R"({"cidrIp":"10.0.0.0/8"})", "")), V{});
  EXPECT_EQ(Matching(rules, ingress(R"({"cidrIp":"0.0.0.0/0"})",
                                    R"(,"errorCode":"Client.UnauthorizedOperation")")),
            V{});
  EXPECT_EQ(Matching(rules, Event("ConsoleLogin", p, "203.0.113.1", "us-east-1",
                                  R"(,"additionalEventData":{"MFAUsed":"No"})")),
            V{"no-mfa"});
  EXPECT_EQ(Matching(rules, Event("ConsoleLogin", p, "203.0.113.1", "us-east-1",
                                  R"(,"additionalEventData":{"MFAUsed":"Yes"})")),
            V{});
}

TEST(CloudRules, MatchGivesTheFieldsThresholdsGroupBy) {
  RuleSet rules = Parse(R"(
rules:
  - id: secrets
    title: t
    severity: high
    match: {kind: cloud, event_names: [GetSecretValue]}
    threshold: {count: 3, within: 60s, group_by: [principal_arn]}
)");
  const CloudEvent e =
      Event("GetSecretValue", "arn:aws:iam::1:user/bob", "203.0.113.1", "us-east-1");
  auto matches = rules.MatchCloud(e);
  ASSERT_EQ(matches.size(), 1u);
  bool found = false;
  for (const auto& [k, v] : matches[0].second) {
    if (k == "principal_arn") found = v == "arn:aws:iam::1:user/bob";
  }
  EXPECT_TRUE(found);
  ASSERT_TRUE(rules.rules()[0].threshold.has_value());
  EXPECT_EQ(rules.rules()[0].threshold->count, 3);
}

TEST(CloudRules, BadCloudRulesNameFileLineAndWhy) {
  EXPECT_NE(ErrorOf(R"(
rules:
  - id: x
    title: t
    severity: high
    match: {kind: cloud, source_ips: [10.0.0.0/33]}
)").find("rules.yaml:6"), std::string::npos);
  EXPECT_NE(ErrorOf(R"(
rules:
  - id: x
    title: t
    severity: high
    match: {kind: cloud, where: [{field: "a b", equals: "1"}]}
)").find("JSON path"), std::string::npos);
  EXPECT_NE(ErrorOf(R"(
rules:
  - id: x
    title: t
    severity: high
    match: {kind: cloud, paths: ["/etc/**"]}
)").find("not for kind: cloud"), std::string::npos);
  EXPECT_NE(ErrorOf(R"(
rules:
  - id: x
    title: t
    severity: high
    match: {kind: file, event_names: [RunInstances]}
)").find("only for kind: cloud"), std::string::npos);
  EXPECT_NE(ErrorOf(R"(
rules:
  - id: x
    title: t
    severity: high
    match: {kind: file}
    response: [stop]
)").find("'stop' is for kind: cloud"), std::string::npos);
  EXPECT_NE(ErrorOf(R"(
rules:
  - id: x
    title: t
    severity: high
    match: {kind: cloud}
    threshold: {count: 2, within: 1m, group_by: [ip]}
)").find("group_by 'ip'"), std::string::npos);
}

TEST(ShippedCloudRules, EachFiresOnTheEventItIsFor) {
  absl::StatusOr<RuleSet> rules =
      LoadRules(std::string(TRIPLINE_SOURCE_DIR) + "/packaging/config/rules/cloudtrail.yaml");
  ASSERT_TRUE(rules.ok()) << rules.status();
  const std::string attacker = "arn:aws:sts::111122223333:assumed-role/ci/stolen";
  const std::string launch =
      R"(,"responseElements":{"instancesSet":{"items":[{"instanceId":"i-0abc"}]}})";
  EXPECT_EQ(Matching(*rules, Event("RunInstances", attacker, "203.0.113.1", "us-east-1", launch)),
            V{"cloudtrail-run-instances-unexpected-principal"});
  EXPECT_EQ(Matching(*rules, Event("RunInstances", attacker, "203.0.113.1", "ap-south-1", launch)),
            (V{"cloudtrail-run-instances-unexpected-principal",
               "cloudtrail-run-instances-unused-region"}));
  EXPECT_EQ(Matching(*rules, Event("RunInstances",
                                   "arn:aws:sts::111122223333:assumed-role/deploy-prod/p",
                                   "203.0.113.1", "us-east-1", launch)),
            V{});
  EXPECT_EQ(
      Matching(*rules,
               Event("AuthorizeSecurityGroupIngress", attacker, "203.0.113.1", "us-east-1",
                     R"(,"requestParameters":{"ipPermissions":{"items":[{"ipv6Ranges":{"items":[{"cidrIpv6":"::/0"}]}}]}})")),
      V{"cloudtrail-security-group-open-ipv6"});
  CloudEvent stop = Event("StopLogging", attacker, "203.0.113.1", "us-east-1");
  stop.event_source = "cloudtrail.amazonaws.com";
  EXPECT_EQ(Matching(*rules, stop), V{"cloudtrail-logging-tampered"});
  CloudEvent attach = Event("AttachUserPolicy", attacker, "203.0.113.1", "us-east-1",
                            R"(,"requestParameters":{"policyArn":"arn:aws:iam::aws:policy/AdministratorAccess"})");
  attach.event_source = "iam.amazonaws.com";
  EXPECT_EQ(Matching(*rules, attach), V{"cloudtrail-admin-policy-attached"});
  CloudEvent login = Event("ConsoleLogin", attacker, "203.0.113.1", "us-east-1",
                           R"(,"additionalEventData":{"MFAUsed":"No"},"responseElements":{"ConsoleLogin":"Success"})");
  EXPECT_EQ(Matching(*rules, login), V{"cloudtrail-console-login-without-mfa"});
}

}  // namespace
}  // namespace tripline::collector
