#include "agent/config/agent_config.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

using ::testing::HasSubstr;

constexpr char kMinimal[] = R"(agent_id: i-0123456789abcdef0
collector:
  address: 127.0.0.1:7443
  plaintext: true
  enrollment_token_file: /etc/tripline/enrollment-token
fim:
  paths:
    - path: /etc
)";

std::string Message(const absl::StatusOr<AgentConfig>& c) {
  return std::string(c.status().message());
}

TEST(AgentConfig, DefaultsApplyToAMinimalFile) {
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(kMinimal, "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->agent_id, "i-0123456789abcdef0");
  EXPECT_EQ(c->state_dir, "/var/lib/tripline");
  EXPECT_EQ(c->log_level, "info");
  EXPECT_TRUE(c->collector.plaintext);
  ASSERT_EQ(c->fim.paths.size(), 1u);
  EXPECT_EQ(c->fim.paths[0].path, "/etc");
  EXPECT_TRUE(c->fim.paths[0].recursive);
  EXPECT_TRUE(c->fim.paths[0].exclude.empty());
  EXPECT_EQ(c->fim.paths[0].max_hash_bytes, 64 << 20);
  EXPECT_EQ(c->batch.max_events, 512);
  EXPECT_EQ(c->batch.linger_ms, 10);
  EXPECT_EQ(c->transport.window, 64);
  EXPECT_EQ(c->transport.backoff_initial_ms, 200);
  EXPECT_EQ(c->transport.backoff_max_ms, 30000);
}

TEST(AgentConfig, EveryDocumentedKeyIsRead) {
  constexpr char kFull[] = R"(agent_id: host-7.example_a
state_dir: /var/lib/tripline-test
log_level: debug
collector:
  address: collector.internal:7443
  plaintext: false
  ca_file: /etc/tripline/collector-ca.pem
  cert_file: /etc/tripline/agent.pem
  key_file: /etc/tripline/agent.key
  enrollment_token_file: /etc/tripline/enrollment-token
fim:
  paths:
    - path: /etc/
      recursive: false
      exclude: ["*.swp", "/etc/mtab"]
      max_hash_bytes: 1024
    - /usr/bin
batch:
  max_events: 100
  linger: 250ms
transport:
  window: 8
  backoff_initial: 1s
  backoff_max: 2m
)";
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(kFull, "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state_dir, "/var/lib/tripline-test");
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->collector.address, "collector.internal:7443");
  EXPECT_FALSE(c->collector.plaintext);
  EXPECT_EQ(c->collector.ca_file, "/etc/tripline/collector-ca.pem");
  EXPECT_EQ(c->collector.cert_file, "/etc/tripline/agent.pem");
  EXPECT_EQ(c->collector.key_file, "/etc/tripline/agent.key");
  ASSERT_EQ(c->fim.paths.size(), 2u);
  EXPECT_EQ(c->fim.paths[0].path, "/etc");  // trailing slash dropped
  EXPECT_FALSE(c->fim.paths[0].recursive);
  EXPECT_THAT(c->fim.paths[0].exclude, ::testing::ElementsAre("*.swp", "/etc/mtab"));
  EXPECT_EQ(c->fim.paths[0].max_hash_bytes, 1024);
  EXPECT_EQ(c->fim.paths[1].path, "/usr/bin");
  EXPECT_TRUE(c->fim.paths[1].recursive);
  EXPECT_EQ(c->batch.max_events, 100);
  EXPECT_EQ(c->batch.linger_ms, 250);
  EXPECT_EQ(c->transport.window, 8);
  EXPECT_EQ(c->transport.backoff_initial_ms, 1000);
  EXPECT_EQ(c->transport.backoff_max_ms, 120000);
}

TEST(AgentConfig, MalformedYamlNamesFileAndLine) {
  absl::StatusOr<AgentConfig> c =
      ParseAgentConfig("agent_id: a\ncollector:\n  address: [unclosed\n", "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("agent.yaml:"));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AgentConfig, UnknownKeyNamesFileLineAndKey) {
  std::string text = kMinimal;
  text.replace(text.find("  address:"), 10, "  adress:");
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(text, "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("agent.yaml:3:3:"));
  EXPECT_THAT(Message(c), HasSubstr("unknown key 'adress'"));
}

TEST(AgentConfig, WrongTypeNamesFileLineAndKey) {
  std::string text = kMinimal;
  text.replace(text.find("plaintext: true"), 15, "plaintext: maybe");
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(text, "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("agent.yaml:4:14:"));
  EXPECT_THAT(Message(c), HasSubstr("collector.plaintext"));
  EXPECT_THAT(Message(c), HasSubstr("maybe"));
}

TEST(AgentConfig, MissingAddressNamesFileLineAndKey) {
  std::string text = kMinimal;
  text.erase(text.find("  address: 127.0.0.1:7443\n"), 26);
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(text, "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("agent.yaml:3:"));
  EXPECT_THAT(Message(c), HasSubstr("'address'"));
}

TEST(AgentConfig, CaFileIsRequiredUnlessPlaintext) {
  std::string text = kMinimal;
  text.replace(text.find("plaintext: true"), 15, "plaintext: false");
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(text, "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("ca_file"));
  EXPECT_THAT(Message(c), HasSubstr("agent.yaml:3:"));
}

TEST(AgentConfig, RelativeFimPathIsRejected) {
  std::string text = kMinimal;
  text.replace(text.find("path: /etc"), 10, "path: etc");
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(text, "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("agent.yaml:8:"));
  EXPECT_THAT(Message(c), HasSubstr("absolute"));
}

TEST(AgentConfig, NoFimPathIsAnError) {
  std::string text = kMinimal;
  text.replace(text.find("    - path: /etc\n"), 17, "    []\n");
  text.replace(text.find("  paths:\n    []"), 15, "  paths: []");
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(text, "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("at least one path"));
}

TEST(AgentConfig, AgentIdWithForbiddenCharactersIsRejected) {
  std::string text = kMinimal;
  text.replace(0, std::string("agent_id: i-0123456789abcdef0").size(), "agent_id: \"a/b\"");
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(text, "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("agent.yaml:1:"));
  EXPECT_FALSE(ValidAgentId(std::string(129, 'a')));
  EXPECT_TRUE(ValidAgentId(std::string(128, 'a')));
}

TEST(AgentConfig, OutOfRangeNumberAndBadDurationAreErrors) {
  std::string text = std::string(kMinimal) + "batch:\n  max_events: 0\n";
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(text, "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("agent.yaml:10:15:"));
  text = std::string(kMinimal) + "transport:\n  backoff_initial: soon\n";
  c = ParseAgentConfig(text, "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("transport.backoff_initial"));
}

TEST(AgentConfig, LoadFromFileNamesThePath) {
  testing::TempDir dir;
  const std::string path = dir.Sub("agent.yaml");
  {
    std::ofstream out(path);
    out << "agent_id: a\nbogus: 1\n";
  }
  absl::StatusOr<AgentConfig> c = LoadAgentConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr(path + ":2:1:"));
  EXPECT_FALSE(LoadAgentConfig(dir.Sub("missing.yaml")).ok());
}

}  // namespace
}  // namespace tripline::agent

namespace tripline::agent {
namespace {

TEST(AgentConfig, FimBaselineAndRealtimeOptionsAreRead) {
  constexpr char kText[] = R"(state_dir: /tmp/state
fim:
  threads: 2
  debounce: 250ms
  debounce_max: 5s
  fallback_scan_interval: 30s
  max_watches: 1000
  paths:
    - path: /etc
      attributes: [size, mode, owner, mtime, sha256]
      one_filesystem: false
    - /usr/bin
)";
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(kText, "agent.yaml", AgentConfigUse::kOneShot);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->fim.threads, 2);
  EXPECT_EQ(c->fim.debounce_ms, 250);
  EXPECT_EQ(c->fim.debounce_max_ms, 5000);
  EXPECT_EQ(c->fim.fallback_scan_interval_ms, 30000);
  EXPECT_EQ(c->fim.max_watches, 1000);
  EXPECT_THAT(c->fim.paths[0].attributes,
              ::testing::ElementsAre("size", "mode", "owner", "mtime", "sha256"));
  EXPECT_FALSE(c->fim.paths[0].one_filesystem);
  EXPECT_THAT(c->fim.paths[1].attributes,
              ::testing::ElementsAre("size", "mode", "owner", "inode", "links", "sha256"));
  EXPECT_TRUE(c->fim.paths[1].one_filesystem);
}

TEST(AgentConfig, OneShotUseNeedsNoCollectorButTheDaemonDoes) {
  constexpr char kText[] = "fim:\n  paths: [/etc]\n";
  EXPECT_TRUE(ParseAgentConfig(kText, "agent.yaml", AgentConfigUse::kOneShot).ok());
  absl::StatusOr<AgentConfig> daemon = ParseAgentConfig(kText, "agent.yaml");
  ASSERT_FALSE(daemon.ok());
  EXPECT_THAT(std::string(daemon.status().message()), HasSubstr("collector"));
}

TEST(AgentConfig, WithoutAgentIdTheIdentityComesFromImds) {
  std::string text = kMinimal;
  text.erase(0, text.find('\n') + 1);  // no agent_id
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(text, "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->agent_id, "");
  EXPECT_EQ(c->imds.endpoint, "http://169.254.169.254");
  EXPECT_EQ(c->imds.timeout_ms, 2000);
  EXPECT_EQ(c->imds.attempts, 3);

  c = ParseAgentConfig(text + "imds:\n  endpoint: http://127.0.0.1:8080/\n  timeout: 500ms\n"
                              "  attempts: 5\n",
                       "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->imds.endpoint, "http://127.0.0.1:8080");
  EXPECT_EQ(c->imds.timeout_ms, 500);
  EXPECT_EQ(c->imds.attempts, 5);

  c = ParseAgentConfig(text + "imds:\n  endpoint: 169.254.169.254\n", "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("agent.yaml:"));
  EXPECT_THAT(Message(c), HasSubstr("expected http:// and a numeric address"));
  // IMDS is plain HTTP at a numeric address: a name or TLS is a mistake, said where it is.
  c = ParseAgentConfig(text + "imds:\n  endpoint: https://169.254.169.254\n", "agent.yaml");
  EXPECT_THAT(Message(c), HasSubstr("expected http:// and a numeric address"));
  c = ParseAgentConfig(text + "imds:\n  endpoint: http://metadata.internal\n", "agent.yaml");
  EXPECT_THAT(Message(c), HasSubstr("IPv4 address or a bracketed IPv6 address"));
  c = ParseAgentConfig(text + "imds:\n  endpoint: http://[fd00:ec2::254]\n", "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->imds.endpoint, "http://[fd00:ec2::254]");
  c = ParseAgentConfig(text + "imds:\n  attempts: 0\n", "agent.yaml");
  EXPECT_FALSE(c.ok());
  c = ParseAgentConfig(text + "imds:\n  token: x\n", "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("token"));
}

TEST(AgentConfig, UnknownAttributeNamesFileLineAndWord) {
  constexpr char kText[] = "fim:\n  paths:\n    - path: /etc\n      attributes: [size, colour]\n";
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(kText, "agent.yaml", AgentConfigUse::kOneShot);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("agent.yaml:4:"));
  EXPECT_THAT(Message(c), HasSubstr("unknown attribute 'colour'"));
}

TEST(AgentConfig, SpoolDefaultsUnderStateDirAndReadsItsKeys) {
  absl::StatusOr<AgentConfig> c = ParseAgentConfig(kMinimal, "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->spool.dir, "/var/lib/tripline/spool");
  EXPECT_EQ(c->spool.max_bytes, int64_t{256} << 20);
  c = ParseAgentConfig(std::string(kMinimal) + "spool:\n  dir: /srv/spool\n  max_bytes: 1048576\n",
                       "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->spool.dir, "/srv/spool");
  EXPECT_EQ(c->spool.max_bytes, 1048576);
}

TEST(AgentConfig, SpoolRejectsARelativeDirAndATinyCap) {
  absl::StatusOr<AgentConfig> c =
      ParseAgentConfig(std::string(kMinimal) + "spool:\n  dir: spool\n", "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("agent.yaml:"));
  EXPECT_THAT(Message(c), HasSubstr("absolute"));
  c = ParseAgentConfig(std::string(kMinimal) + "spool:\n  max_bytes: 10\n", "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("max_bytes"));
  c = ParseAgentConfig(std::string(kMinimal) + "spool:\n  size: 10\n", "agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c), HasSubstr("size"));
}

}  // namespace
}  // namespace tripline::agent
