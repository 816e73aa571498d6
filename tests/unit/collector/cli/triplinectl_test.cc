// triplinectl as a whole program, driven in-process against a real gRPC server on loopback.
#include "collector/cli/triplinectl.h"

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "platform/fs/file_util.h"
#include "tests/support/temp_dir.h"
#include "tests/unit/collector/cli/fake_operator.h"

namespace tripline::cli {
namespace {

using testing::FakeCollector;
using testing::kNowNs;

constexpr char kToken[] = "op-token-0123456789abcdef";

struct CtlResult {
  int code = -1;
  std::string out;
  std::string err;
};

class TriplinectlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    token_file_ = dir_.path() + "/token";
    ASSERT_TRUE(WriteFileAtomic(token_file_, std::string(kToken) + "\n", 0600).ok());
    env_vars_["TRIPLINE_COLLECTOR"] = collector_.address();
    env_vars_["TRIPLINE_TOKEN_FILE"] = token_file_;
  }

  Environment Env() const {
    Environment env;
    auto vars = env_vars_;
    env.getenv = [vars](const std::string& name) -> std::optional<std::string> {
      auto it = vars.find(name);
      if (it == vars.end()) return std::nullopt;
      return it->second;
    };
    env.terminal_columns = 200;
    env.now_unix_ns = kNowNs;
    return env;
  }

  CtlResult Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), "triplinectl");
    args.insert(args.begin() + 1, "--plaintext");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    std::ostringstream out, err;
    CtlResult r;
    r.code = RunTriplinectl(static_cast<int>(argv.size()), argv.data(), Env(), out, err);
    r.out = out.str();
    r.err = err.str();
    return r;
  }

  tripline::testing::TempDir dir_;
  FakeCollector collector_;
  std::string token_file_;
  std::map<std::string, std::string> env_vars_;
};

TEST_F(TriplinectlTest, AgentsTableSendsTheBearerToken) {
  CtlResult r = Ctl({"agents"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("i-0aaa1111"), std::string::npos);
  EXPECT_NE(r.out.find("12s ago"), std::string::npos);
  EXPECT_EQ(collector_.service().last_authorization(), std::string("Bearer ") + kToken);
  EXPECT_EQ(r.out.find(kToken), std::string::npos);
  EXPECT_EQ(r.err.find(kToken), std::string::npos);
}

TEST_F(TriplinectlTest, JsonUsesProtoFieldNamesAndPrintsZeroes) {
  CtlResult r = Ctl({"agents", "--json"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("\"agent_id\":\"i-0aaa1111\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"durable_seq\":\"42\""), std::string::npos) << r.out;
  // The second agent was never enrolled (0): a script still finds the field.
  EXPECT_NE(r.out.find("\"enrolled_unix_ns\":\"0\""), std::string::npos) << r.out;
}

TEST_F(TriplinectlTest, EventFiltersReachTheCollector) {
  CtlResult r =
      Ctl({"events", "--agent", "i-0aaa1111", "--kind", "log", "--limit", "5", "--after", "2"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  const auto req = collector_.service().last_events_request();
  EXPECT_EQ(req.agent_id(), "i-0aaa1111");
  EXPECT_EQ(req.kind(), "log");
  EXPECT_EQ(req.limit(), 5u);
  EXPECT_EQ(req.after_id(), 2);
  EXPECT_NE(r.out.find("Failed password for root\\x1b[2J"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("/etc/hosts"), std::string::npos);
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos);
}

TEST_F(TriplinectlTest, EventTimeTextAndPathFilters) {
  CtlResult r = Ctl({"events", "--since", "2h", "--until", "2024-05-01T11:59:00Z", "--path",
                     "/etc/*", "--text", "root"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  const auto req = collector_.service().last_events_request();
  EXPECT_EQ(req.since_unix_ns(), kNowNs - 2 * 3600 * testing::kSecond);
  EXPECT_EQ(req.until_unix_ns(), kNowNs - 60 * testing::kSecond);
  EXPECT_EQ(req.path_glob(), "/etc/*");
  EXPECT_EQ(req.text(), "root");
  r = Ctl({"events", "--since", "yesterday"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_NE(r.err.find("--since yesterday"), std::string::npos) << r.err;
}

TEST_F(TriplinectlTest, FollowPrintsTheBacklogThenTheStreamFromTheLastOne) {
  CtlResult r = Ctl({"events", "--follow", "--agent", "i-0aaa1111"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  const auto watch = collector_.service().last_watch_request();
  EXPECT_EQ(watch.agent_id(), "i-0aaa1111");
  EXPECT_EQ(watch.after_id(), 3);  // the last backlog event of that agent
  // Backlog: events 1 and 3 of i-0aaa1111; the stream: every canned event re-sent as 101..104.
  EXPECT_EQ(r.out.rfind("1  2024-05-01T11:58:00Z  i-0aaa1111  file  MODIFIED /etc/hosts", 0), 0u)
      << r.out;
  EXPECT_NE(r.out.find("\n3  "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n104  "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos);
}

TEST_F(TriplinectlTest, IncidentsStatusFilterAndIncidentShow) {
  CtlResult r = Ctl({"incidents", "--status", "open"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(collector_.service().last_incidents_request().status(), "open");
  EXPECT_NE(r.out.find("ssh-bruteforce"), std::string::npos);
  EXPECT_EQ(r.out.find("tmp-dropper"), std::string::npos);

  r = Ctl({"incident", "show", "7"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("Timeline (4 entries)"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos);
}

TEST_F(TriplinectlTest, ActionsForOneIncident) {
  CtlResult r = Ctl({"actions", "--incident", "7", "--json"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(collector_.service().last_actions_request().incident_id(), 7);
  EXPECT_NE(r.out.find("\"error_code\":\"UnauthorizedOperation\""), std::string::npos);
  EXPECT_NE(r.out.find("\"aws_request_id\":\"req-1111\""), std::string::npos);
}

TEST_F(TriplinectlTest, IncidentVerbsSendTheChangeAndPrintTheResult) {
  CtlResult r = Ctl({"incident", "resolve", "7", "--note", "false positive: a config push"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  auto req = collector_.service().last_update_request();
  EXPECT_EQ(req.id(), 7);
  EXPECT_EQ(req.status(), "resolved");
  EXPECT_EQ(req.note(), "false positive: a config push");
  EXPECT_NE(r.out.find("resolved"), std::string::npos) << r.out;

  r = Ctl({"incident", "ack", "7"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(collector_.service().last_update_request().status(), "acknowledged");

  r = Ctl({"incident", "assign", "7", "bob", "--json"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  req = collector_.service().last_update_request();
  EXPECT_EQ(req.assignee(), "bob");
  EXPECT_TRUE(req.status().empty());
  EXPECT_NE(r.out.find("\"assignee\":\"bob\""), std::string::npos) << r.out;

  r = Ctl({"incident", "unassign", "7"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_TRUE(collector_.service().last_update_request().unassign());

  r = Ctl({"incident", "note", "7", "called the owner"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(collector_.service().last_update_request().note(), "called the owner");
  EXPECT_TRUE(collector_.service().last_update_request().status().empty());

  EXPECT_EQ(Ctl({"incident", "note", "7"}).code, kExitUsage);
  EXPECT_EQ(Ctl({"incident", "resolve", "99"}).code, kExitRpcError);
}

TEST_F(TriplinectlTest, ServerErrorsExitOneWithCodeAndMessage) {
  CtlResult r = Ctl({"incident", "show", "99"});
  EXPECT_EQ(r.code, kExitRpcError);
  EXPECT_NE(r.err.find("NOT_FOUND"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no incident 99"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());

  collector_.service().FailWith(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "bad token"));
  r = Ctl({"agents"});
  EXPECT_EQ(r.code, kExitRpcError);
  EXPECT_NE(r.err.find("UNAUTHENTICATED: bad token"), std::string::npos) << r.err;
}

TEST_F(TriplinectlTest, UnreachableAndTimedOutCollectorsExitThree) {
  // A port that was just free: nothing listens on it.
  CtlResult r = Ctl({"--collector", "127.0.0.1:1", "--timeout", "2s", "agents"});
  EXPECT_EQ(r.code, kExitUnreachable) << r.err;
  EXPECT_NE(r.err.find("127.0.0.1:1"), std::string::npos) << r.err;

  collector_.service().HangUntilCancelled();
  r = Ctl({"--timeout", "200ms", "agents"});
  EXPECT_EQ(r.code, kExitUnreachable) << r.err;
}

TEST_F(TriplinectlTest, UsageErrorsExitTwoWithoutCallingTheCollector) {
  EXPECT_EQ(Ctl({"events", "--kind", "bogus"}).code, kExitUsage);
  EXPECT_EQ(Ctl({"incident", "show", "-1"}).code, kExitUsage);
  EXPECT_EQ(Ctl({"nonsense"}).code, kExitUsage);
  CtlResult r = Ctl({"--timeout", "soon", "agents"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_NE(r.err.find("--timeout soon"), std::string::npos) << r.err;
  EXPECT_EQ(collector_.service().calls(), 0);
}

TEST_F(TriplinectlTest, TokenProblemsAreUsageErrorsThatNeverEchoTheToken) {
  env_vars_["TRIPLINE_TOKEN_FILE"] = dir_.path() + "/missing";
  CtlResult r = Ctl({"agents"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;

  const std::string spaced = dir_.path() + "/spaced";
  ASSERT_TRUE(WriteFileAtomic(spaced, "secret part two\n", 0600).ok());
  r = Ctl({"--token-file", spaced, "agents"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_EQ(r.err.find("secret"), std::string::npos) << r.err;

  const std::string empty = dir_.path() + "/empty";
  ASSERT_TRUE(WriteFileAtomic(empty, "  \n", 0600).ok());
  r = Ctl({"--token-file", empty, "agents"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_NE(r.err.find("empty"), std::string::npos) << r.err;
  EXPECT_EQ(collector_.service().calls(), 0);
}

TEST(CollectorAddress, FlagThenEnvironmentThenDefault) {
  Environment env;
  env.getenv = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  EXPECT_EQ(CollectorAddress("", env), kDefaultCollector);
  EXPECT_EQ(CollectorAddress("10.0.0.1:7443", env), "10.0.0.1:7443");
  env.getenv = [](const std::string& n) -> std::optional<std::string> {
    if (n == "TRIPLINE_COLLECTOR") return "collector.internal:7443";
    return std::nullopt;
  };
  EXPECT_EQ(CollectorAddress("", env), "collector.internal:7443");
  EXPECT_EQ(CollectorAddress("x:1", env), "x:1");
}

TEST(TokenPath, FallsBackToHomeAndFailsWithoutIt) {
  Environment env;
  env.getenv = [](const std::string& n) -> std::optional<std::string> {
    if (n == "HOME") return "/home/op";
    return std::nullopt;
  };
  EXPECT_EQ(*TokenPath("", env), "/home/op/.config/tripline/token");
  env.getenv = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  EXPECT_FALSE(TokenPath("", env).ok());
  EXPECT_EQ(*TokenPath("/t", env), "/t");
}

TEST(TransportCredentials, MtlsFlagsGoTogetherAndFilesMustBeReadable) {
  TransportOptions options;
  options.plaintext = true;
  EXPECT_TRUE(MakeTransportCredentials(options).ok());
  options.plaintext = false;
  EXPECT_TRUE(MakeTransportCredentials(options).ok());  // the system's roots
  options.cert_file = "/nonexistent/cert.pem";
  EXPECT_FALSE(MakeTransportCredentials(options).ok());  // a certificate without its key
  options.cert_file.clear();
  options.ca_file = "/nonexistent/ca.pem";
  auto missing = MakeTransportCredentials(options);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("--ca-file"), std::string::npos);
}

}  // namespace
}  // namespace tripline::cli
