// The `logs:` section of agent.yaml (parsed by agent/config, used by agent/logs).
#include "agent/config/agent_config.h"
#include "gtest/gtest.h"
#include "platform/fs/file_util.h"

namespace tripline::agent {
namespace {

constexpr char kBase[] = R"(agent_id: i-1
collector: {address: "127.0.0.1:1", plaintext: true, enrollment_token_file: /t}
fim: {paths: [/etc]}
)";

absl::StatusOr<AgentConfig> Parse(const std::string& logs) {
  return ParseAgentConfig(std::string(kBase) + logs, "agent.yaml");
}

std::string ErrorOf(const std::string& logs) {
  absl::StatusOr<AgentConfig> c = Parse(logs);
  EXPECT_FALSE(c.ok());
  return c.ok() ? "" : std::string(c.status().message());
}

TEST(LogConfig, SourcesWithDefaults) {
  absl::StatusOr<AgentConfig> c = Parse(R"(logs:
  rotate_wait: 2s
  sources:
    - name: auth
      paths: ["/var/log/auth.log"]
      parser: syslog
    - name: web
      paths: ["/var/log/nginx/access*.log", "/srv/x.log"]
      include: 'GET|POST'
      exclude: '\.(css|js)'
      start_at: beginning
      max_line: 1024
      partial_timeout: 250ms
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->logs.rotate_wait_ms, 2000);
  ASSERT_EQ(c->logs.sources.size(), 2u);
  const LogSourceConfig& auth = c->logs.sources[0];
  EXPECT_EQ(auth.parser, "syslog");
  EXPECT_EQ(auth.start_at, "end");
  EXPECT_EQ(auth.max_line, 65536);
  EXPECT_EQ(auth.partial_timeout_ms, 5000);
  const LogSourceConfig& web = c->logs.sources[1];
  EXPECT_EQ(web.paths.size(), 2u);
  EXPECT_EQ(web.exclude, "\\.(css|js)");
  EXPECT_EQ(web.start_at, "beginning");
  EXPECT_EQ(web.max_line, 1024);
  EXPECT_EQ(web.partial_timeout_ms, 250);
  EXPECT_TRUE(Parse("").ok());  // logs are optional
}

TEST(LogConfig, MistakesNameTheLineAndTheProblem) {
  std::string err = ErrorOf("logs:\n  sources:\n    - name: a\n      paths: [x.log]\n");
  EXPECT_NE(err.find("agent.yaml:7:"), std::string::npos) << err;
  EXPECT_NE(err.find("absolute path"), std::string::npos) << err;
  err = ErrorOf("logs:\n  sources:\n    - name: a\n      paths: [/var/*/x.log]\n");
  EXPECT_NE(err.find("only the last component may be a glob"), std::string::npos) << err;
  err = ErrorOf("logs:\n  sources:\n    - name: a\n      paths: [/x]\n      include: '(a'\n");
  EXPECT_NE(err.find("bad RE2"), std::string::npos) << err;
  err = ErrorOf("logs:\n  sources:\n    - {name: a, paths: [/x]}\n    - {name: a, paths: [/y]}\n");
  EXPECT_NE(err.find("duplicate source name 'a'"), std::string::npos) << err;
  err = ErrorOf("logs:\n  sources:\n    - {name: A B, paths: [/x]}\n");
  EXPECT_NE(err.find("source name"), std::string::npos) << err;
  err = ErrorOf("logs:\n  sources:\n    - {name: a, paths: [/x], parser: xml}\n");
  EXPECT_NE(err.find("parser"), std::string::npos) << err;
  err = ErrorOf("logs:\n  sources:\n    - {name: a, paths: [/x], tail: yes}\n");
  EXPECT_NE(err.find("tail"), std::string::npos) << err;
  err = ErrorOf("logs:\n  sources:\n    - {name: a}\n");
  EXPECT_NE(err.find("at least one path"), std::string::npos) << err;
}

TEST(LogConfig, JournaldSources) {
  absl::StatusOr<AgentConfig> c = Parse(R"(logs:
  sources:
    - {name: units, type: journald, units: [ssh.service, nginx.service], max_priority: 4}
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->logs.sources[0].type, "journald");
  EXPECT_EQ(c->logs.sources[0].units.size(), 2u);
  EXPECT_EQ(c->logs.sources[0].max_priority, 4);
  std::string err = ErrorOf("logs:\n  sources:\n    - {name: j, type: journald, paths: [/x]}\n");
  EXPECT_NE(err.find("not for type: journald"), std::string::npos) << err;
  err = ErrorOf("logs:\n  sources:\n    - {name: j, type: journald, max_priority: 9}\n");
  EXPECT_NE(err.find("max_priority"), std::string::npos) << err;
}

TEST(LogConfig, ShippedAgentYamlLoads) {
  // The package's enroll script adds the instance's agent_id; the rest is as shipped.
  absl::StatusOr<std::string> shipped =
      ReadFileToString(std::string(TRIPLINE_SOURCE_DIR) + "/packaging/config/agent.yaml");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  absl::StatusOr<AgentConfig> c =
      ParseAgentConfig("agent_id: i-0123456789abcdef0\n" + *shipped, "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_FALSE(c->logs.sources.empty());
  EXPECT_EQ(c->logs.sources[0].name, "auth");
}

}  // namespace
}  // namespace tripline::agent
