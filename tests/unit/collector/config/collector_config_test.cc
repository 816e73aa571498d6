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

TEST(CollectorConfig, BadValuesNameTheirPlace) {
  const std::string base = "enrollment_token_file: /e\noperator_token_file: /o\n";
  auto err = [&](const std::string& extra) {
    absl::StatusOr<CollectorConfig> c = ParseCollectorConfig(base + extra, "c.yaml");
    return c.ok() ? std::string("ok") : std::string(c.status().message());
  };
  EXPECT_NE(err("listen: nowhere\n").find("c.yaml:3:9"), std::string::npos);
  EXPECT_NE(err("listen: 127.0.0.1:99999\n").find("port"), std::string::npos);
  EXPECT_NE(err("response:\n  mode: approve\n").find("c.yaml:4:9"), std::string::npos);
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
