#include "collector/config/collector_config.h"

#include <fstream>

#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace tripline::collector {
namespace {

TEST(CollectorConfig, FullFileParses) {
  absl::StatusOr<CollectorConfig> c = ParseCollectorConfig(R"(listen: 127.0.0.1:0
tls:
  plaintext: true
database: /tmp/x.db
rules: /tmp/rules.yaml
enrollment_token_file: /tmp/e
operator_token_file: /tmp/o
log_level: debug
aws:
  region: eu-west-1
  endpoint: http://127.0.0.1:9
  isolation_security_group: sg-0123
response:
  mode: off
)", "collector.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "127.0.0.1:0");
  EXPECT_TRUE(c->tls.plaintext);
  EXPECT_EQ(c->aws.region, "eu-west-1");
  EXPECT_EQ(c->aws.endpoint, "http://127.0.0.1:9");
  EXPECT_EQ(c->aws.isolation_security_group, "sg-0123");
  EXPECT_EQ(c->response_mode, ResponseMode::kOff);
  EXPECT_EQ(c->log_level, "debug");
}

TEST(CollectorConfig, CloudTrailSectionParsesWithDefaults) {
  const std::string base =
      "enrollment_token_file: /e\ndatabase: /var/lib/t/c.db\ntls:\n  plaintext: true\n";
  absl::StatusOr<CollectorConfig> off = ParseCollectorConfig(base, "c.yaml");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_TRUE(off->cloudtrail.regions.empty());  // the source is off
  absl::StatusOr<CollectorConfig> c = ParseCollectorConfig(
      base + "cloudtrail:\n  regions: [us-east-1, eu-west-1]\n  poll_interval: 30s\n"
             "  lookback: 2h\n  overlap: 5m\n  endpoint: http://127.0.0.1:9\n",
      "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cloudtrail.regions, (std::vector<std::string>{"us-east-1", "eu-west-1"}));
  EXPECT_EQ(c->cloudtrail.poll_interval_ms, 30000);
  EXPECT_EQ(c->cloudtrail.lookback_ms, 7200000);
  EXPECT_EQ(c->cloudtrail.overlap_ms, 300000);
  EXPECT_EQ(c->cloudtrail.max_calls_per_second, 2);
  EXPECT_EQ(c->cloudtrail.endpoint, "http://127.0.0.1:9");
  struct Bad {
    const char* yaml;
    const char* where;
    const char* why;
  };
  for (const Bad& bad : {
           Bad{"cloudtrail:\n  regions: []\n", "c.yaml:6", "at least one region"},
           Bad{"cloudtrail:\n  regions: [US_EAST]\n", "c.yaml:6", "not a region name"},
           Bad{"cloudtrail:\n  regions: [us-east-1, us-east-1]\n", "c.yaml:6", "listed twice"},
           Bad{"cloudtrail:\n  regions: [us-east-1]\n  overlap: 0s\n", "c.yaml:7", "overlap"},
           Bad{"cloudtrail:\n  regions: [us-east-1]\n  max_calls_per_second: 5\n", "c.yaml:7",
               "max_calls_per_second"},
           Bad{"cloudtrail:\n  regions: [us-east-1]\n  endpoint: ftp://x\n", "c.yaml:7",
               "http://"},
           Bad{"cloudtrail:\n  regions: [us-east-1]\n  poll: 1s\n", "c.yaml:7", "poll"},
       }) {
    absl::StatusOr<CollectorConfig> r = ParseCollectorConfig(base + bad.yaml, "c.yaml");
    ASSERT_FALSE(r.ok()) << bad.yaml;
    const std::string msg(r.status().message());
    EXPECT_NE(msg.find(bad.where), std::string::npos) << msg;
    EXPECT_NE(msg.find(bad.why), std::string::npos) << msg;
  }
}

TEST(CollectorConfig, OperatorAccessDefaultsAndCertificates) {
  const std::string base =
      "enrollment_token_file: /e\ndatabase: /var/lib/t/c.db\ntls:\n  plaintext: true\n";
  absl::StatusOr<CollectorConfig> c = ParseCollectorConfig(base, "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->operator_token_file.empty());  // the bootstrap token is optional
  EXPECT_EQ(c->operators.token_key_file, "/var/lib/t/operator-token.key");

  c = ParseCollectorConfig(
      "enrollment_token_file: /e\ntls:\n  cert_file: /c\n  key_file: /k\n"
      "  client_ca_file: /ca\noperators:\n  token_key_file: /k2\n  certificates:\n"
      "    - {common_name: alice.ops, role: respond}\n    - {common_name: ci}\n",
      "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->operators.token_key_file, "/k2");
  ASSERT_EQ(c->operators.cert_roles.size(), 2u);
  EXPECT_EQ(c->operators.cert_roles[0], std::make_pair(std::string("alice.ops"),
                                                       std::string("respond")));
  EXPECT_EQ(c->operators.cert_roles[1].second, "read");

  auto err = [&](const std::string& extra) {
    absl::StatusOr<CollectorConfig> r = ParseCollectorConfig(base + extra, "c.yaml");
    return r.ok() ? std::string("ok") : std::string(r.status().message());
  };
  EXPECT_NE(err("operators:\n  certificates:\n    - {common_name: a, role: root}\n")
                .find("c.yaml:7:"),
            std::string::npos);
  // Without a client CA the collector never sees a certificate: refuse the promise.
  EXPECT_NE(err("operators:\n  certificates:\n    - {common_name: a}\n").find("client_ca_file"),
            std::string::npos);
  EXPECT_NE(err("operators:\n  tokens: 3\n").find("tokens"), std::string::npos);
}

TEST(CollectorConfig, UnknownKeyIsReportedBeforeMissingOnes) {
  absl::StatusOr<CollectorConfig> c =
      ParseCollectorConfig("listen: 127.0.0.1:0\ndatabase: x.db\ntreshold: 3\n", "bad.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("bad.yaml:3:1"), absl::string_view::npos) << c.status();
  EXPECT_NE(c.status().message().find("treshold"), absl::string_view::npos);
}

TEST(CollectorConfig, ResponseGuardrailsAndAwsEndpointsParse) {
  absl::StatusOr<CollectorConfig> c = ParseCollectorConfig(R"(enrollment_token_file: /e
operator_token_file: /o
aws:
  endpoint: http://127.0.0.1:9
  autoscaling_endpoint: http://127.0.0.1:10
  max_attempts: 6
  retry_base: 20ms
response:
  mode: dry-run
  max_auto_isolations_per_hour: 3
  self_instance_id: i-0collector
  never_isolate:
    instance_ids: [i-0bastion]
    tags: ["role=bastion", "tripline:never-isolate"]
notify:
  sns_topic_arn: arn:aws:sns:eu-west-1:111122223333:alerts
  webhooks:
    - url: https://hooks.example/x
      format: slack
)", "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->response_mode, ResponseMode::kDryRun);
  EXPECT_STREQ(ResponseModeName(c->response_mode), "dry-run");
  EXPECT_EQ(c->response.max_auto_isolations_per_hour, 3);
  EXPECT_EQ(c->response.self_instance_id, "i-0collector");
  EXPECT_EQ(c->response.never_isolate_ids, std::vector<std::string>{"i-0bastion"});
  EXPECT_EQ(c->response.never_isolate_tags,
            (std::map<std::string, std::string>{{"role", "bastion"}, {"tripline:never-isolate", ""}}));
  // An overridden EC2 endpoint stands for IAM too (a local endpoint never leaks to AWS).
  EXPECT_EQ(c->aws.iam_endpoint, "http://127.0.0.1:9");
  EXPECT_EQ(c->aws.autoscaling_endpoint, "http://127.0.0.1:10");
  EXPECT_EQ(c->aws.max_attempts, 6);
  EXPECT_EQ(c->aws.retry_base_ms, 20);
  ASSERT_EQ(c->notify.webhooks.size(), 1u);
  EXPECT_TRUE(c->notify.webhooks[0].slack);
  EXPECT_EQ(c->notify.sns_topic_arn, "arn:aws:sns:eu-west-1:111122223333:alerts");
}

TEST(CollectorConfig, BadValuesNameTheirPlace) {
  const std::string base = "enrollment_token_file: /e\noperator_token_file: /o\n";
  auto err = [&](const std::string& extra) {
    absl::StatusOr<CollectorConfig> c = ParseCollectorConfig(base + extra, "c.yaml");
    return c.ok() ? std::string("ok") : std::string(c.status().message());
  };
  EXPECT_NE(err("listen: nowhere\n").find("c.yaml:3:9"), std::string::npos);
  EXPECT_NE(err("listen: 127.0.0.1:99999\n").find("port"), std::string::npos);
  EXPECT_NE(err("response:\n  mode: sometimes\n").find("c.yaml:4:9"), std::string::npos);
  EXPECT_NE(err("response:\n  never_isolate:\n    instance_ids: [web-1]\n").find("c.yaml:5:19"),
            std::string::npos);
  EXPECT_NE(err("response:\n  max_auto_isolations_per_hour: -1\n").find("c.yaml:4:33"),
            std::string::npos);
  EXPECT_NE(err("aws:\n  iam_endpoint: iam.local\n").find("c.yaml:4:17"), std::string::npos);
  EXPECT_NE(err("notify:\n  webhooks:\n    - url: ftp://x\n").find("c.yaml:5:12"),
            std::string::npos);
  EXPECT_NE(err("notify:\n  sns_topic_arn: security\n").find("c.yaml:4:18"), std::string::npos);
  EXPECT_NE(err("aws:\n  endpoint: ftp://x\n").find("c.yaml:4:13"), std::string::npos);
  EXPECT_NE(err("tls:\n  plaintext: maybe\n").find("c.yaml:4:14"), std::string::npos);
  EXPECT_NE(ParseCollectorConfig("listen: 127.0.0.1:0\n", "c.yaml")
                .status()
                .message()
                .find("enrollment_token_file"),
            absl::string_view::npos);
}

TEST(CollectorConfig, SecretFileIsTrimmedAndEmptyIsRefused) {
  tripline::testing::TempDir dir;
  std::ofstream(dir.Sub("token")) << "  s3cret-token \n";
  std::ofstream(dir.Sub("empty")) << "\n  \n";
  absl::StatusOr<std::string> t = ReadSecretFile(dir.Sub("token"), "operator_token_file");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, "s3cret-token");
  absl::StatusOr<std::string> e = ReadSecretFile(dir.Sub("empty"), "operator_token_file");
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<std::string> m = ReadSecretFile(dir.Sub("missing"), "operator_token_file");
  EXPECT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("operator_token_file"), absl::string_view::npos);
}

}  // namespace
}  // namespace tripline::collector
