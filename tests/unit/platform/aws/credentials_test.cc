// The credential chain against real files in a temp dir and the local IMDSv2 / container
// credentials endpoint (tests/fakes/imds_endpoint.py): order of sources, profiles, refresh before
// expiry, and credentials from IMDS signing a real call (with X-Amz-Security-Token) that the local
// EC2 endpoint verifies with botocore.
#include "platform/aws/credentials.h"

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "platform/aws/ec2_client.h"
#include "tests/support/local_endpoint.h"
#include "tests/support/temp_dir.h"

namespace tripline::aws {
namespace {

using tripline::testing::LocalEndpoint;

class FakeClock : public Clock {
 public:
  int64_t NowUnixNanos() const override { return now_.load(); }
  int64_t MonotonicNanos() const override { return now_.load(); }
  void Set(int64_t ns) { now_ = ns; }

 private:
  std::atomic<int64_t> now_{SystemClock().NowUnixNanos()};
};

Environment EnvOf(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// Options that reach nothing outside: a HOME in the temp dir, IMDS on a closed loopback port.
CredentialChain::Options Isolated(const tripline::testing::TempDir& dir,
                                  std::map<std::string, std::string> env = {}) {
  CredentialChain::Options o;
  o.env = EnvOf(std::move(env));
  o.home = dir.path();
  o.imds_endpoint = "http://127.0.0.1:1";
  o.container_host = "http://127.0.0.1:1";
  o.timeout_ms = 2000;
  return o;
}

TEST(CredentialChain, EnvironmentComesBeforeFiles) {
  tripline::testing::TempDir dir;
  std::filesystem::create_directories(dir.Sub(".aws"));
  Write(dir.Sub(".aws/credentials"),
        "[default]\naws_access_key_id = AKIDFILE\n"
        "aws_secret_access_key = file-secret\n");
  CredentialChain chain(Isolated(dir, {{"AWS_ACCESS_KEY_ID", "AKIDENV"},
                                       {"AWS_SECRET_ACCESS_KEY", "env-secret"},
                                       {"AWS_SESSION_TOKEN", "env-token"}}));
  auto c = chain.Get();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->source, "environment");
  EXPECT_EQ(c->credentials.access_key_id, "AKIDENV");
  EXPECT_EQ(c->credentials.session_token, "env-token");

  CredentialChain half(Isolated(dir, {{"AWS_ACCESS_KEY_ID", "AKIDENV"}}));
  EXPECT_EQ(half.Get().status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CredentialChain, SharedFilesFollowTheProfile) {
  tripline::testing::TempDir dir;
  std::filesystem::create_directories(dir.Sub(".aws"));
  Write(dir.Sub(".aws/credentials"),
        "# keys\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = d\n\n"
        "[work]\naws_access_key_id=AKIDWORK\naws_secret_access_key=w\naws_session_token=wt\n");
  Write(dir.Sub(".aws/config"),
        "[default]\nregion = us-west-2\n[profile work]\nregion = eu-central-1\n"
        "[profile ops]\naws_access_key_id = AKIDOPS\naws_secret_access_key = o\n"
        "[sso-session corp]\nsso_region = us-east-1\n");
  {
    CredentialChain chain(Isolated(dir));
    EXPECT_EQ(chain.Get()->credentials.access_key_id, "AKIDDEFAULT");
    EXPECT_EQ(*chain.Region(), "us-west-2");
  }
  {
    CredentialChain chain(Isolated(dir, {{"AWS_PROFILE", "work"}}));
    auto c = chain.Get();
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->credentials.access_key_id, "AKIDWORK");
    EXPECT_EQ(c->credentials.session_token, "wt");
    EXPECT_NE(c->source.find("profile work"), std::string::npos);
    EXPECT_EQ(*chain.Region(), "eu-central-1");
  }
  {
    CredentialChain chain(Isolated(dir, {{"AWS_PROFILE", "ops"}}));
    EXPECT_EQ(chain.Get()->credentials.access_key_id, "AKIDOPS");  // from the config file
  }
  {
    Write(dir.Sub("other"), "[default]\naws_access_key_id\n");
    CredentialChain chain(Isolated(dir, {{"AWS_SHARED_CREDENTIALS_FILE", dir.Sub("other")}}));
    auto c = chain.Get();
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(dir.Sub("other") + ":2:"), std::string::npos) << c.status();
  }
}

TEST(CredentialChain, NothingFoundSaysWhatWasTried) {
  tripline::testing::TempDir dir;
  CredentialChain chain(Isolated(dir));
  auto c = chain.Get();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  for (const char* source : {"environment", "shared", "container", "IMDSv2"}) {
    EXPECT_NE(c.status().message().find(source), std::string::npos) << c.status();
  }
}

TEST(CredentialChain, ContainerEndpointWithAuthorizationToken) {
  LocalEndpoint imds(TRIPLINE_IMDS_ENDPOINT_SCRIPT, {"--container-token", "ecs-token-1"});
  ASSERT_TRUE(imds.running());
  tripline::testing::TempDir dir;
  Write(dir.Sub("token"), "ecs-token-1\n");
  CredentialChain chain(
      Isolated(dir, {{"AWS_CONTAINER_CREDENTIALS_FULL_URI", imds.url() + "/v2/credentials/task"},
                     {"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", dir.Sub("token")}}));
  auto c = chain.Get();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->credentials.access_key_id, "AKIDIMDS0001");
  EXPECT_EQ(c->credentials.session_token, "token-1");
  EXPECT_GT(c->expires_unix_ns, 0);

  CredentialChain wrong(
      Isolated(dir, {{"AWS_CONTAINER_CREDENTIALS_FULL_URI", imds.url() + "/v2/credentials/task"},
                     {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "guess"}}));
  EXPECT_NE(wrong.Get().status().message().find("HTTP 403"), std::string::npos);

  // Plain http to anywhere but this host or the container agent is refused before any request.
  CredentialChain far(
      Isolated(dir, {{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.1.2.3/creds"}}));
  EXPECT_EQ(far.Get().status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CredentialChain, ImdsRoleCredentialsAreFetchedAgainBeforeTheyExpire) {
  LocalEndpoint imds(
      TRIPLINE_IMDS_ENDPOINT_SCRIPT,
      {"--lifetime", "3600", "--region", "ap-southeast-2", "--instance-id", "i-0collector0000001"});
  ASSERT_TRUE(imds.running());
  tripline::testing::TempDir dir;
  FakeClock clock;
  CredentialChain::Options o = Isolated(dir);
  o.imds_endpoint = imds.url();
  o.clock = &clock;
  CredentialChain chain(o);
  auto first = chain.Get();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->credentials.access_key_id, "AKIDIMDS0001");
  EXPECT_EQ(first->source, "imds role collector-role");
  EXPECT_EQ(chain.Get()->credentials.access_key_id, "AKIDIMDS0001");  // cached
  // 6 minutes before expiry: still good. 4 minutes before: inside the refresh window.
  clock.Set(first->expires_unix_ns - int64_t{6} * 60 * 1000000000);
  EXPECT_EQ(chain.Get()->credentials.access_key_id, "AKIDIMDS0001");
  clock.Set(first->expires_unix_ns - int64_t{4} * 60 * 1000000000);
  EXPECT_EQ(chain.Get()->credentials.access_key_id, "AKIDIMDS0002");
  EXPECT_EQ(*chain.Region(), "ap-southeast-2");
  EXPECT_EQ(*chain.InstanceId(), "i-0collector0000001");
}

TEST(CredentialChain, ImdsCredentialsSignARealCallWithTheirSessionToken) {
  LocalEndpoint imds(TRIPLINE_IMDS_ENDPOINT_SCRIPT,
                     {"--fixed-key", "AKIDROLE00000001", "--fixed-secret", "role-secret",
                      "--fixed-token", "role-session-token"});
  ASSERT_TRUE(imds.running());
  tripline::testing::TempDir dir;
  Write(dir.Sub("seed.json"), R"({"instances": [{"instance_id": "i-0123456789abcdef0",
    "vpc_id": "vpc-1", "interfaces": []}], "security_groups": []})");
  LocalEndpoint ec2(
      TRIPLINE_EC2_ENDPOINT_SCRIPT,
      {"--region", "us-east-1", "--access-key", "AKIDROLE00000001", "--secret-key", "role-secret",
       "--session-token", "role-session-token", "--seed", dir.Sub("seed.json")});
  ASSERT_TRUE(ec2.running());
  CredentialChain::Options o = Isolated(dir);
  o.imds_endpoint = imds.url();
  CredentialChain chain(o);
  ClientOptions options;
  options.region = "us-east-1";
  options.endpoint = ec2.url();
  options.credential_source = chain.AsSource();
  auto client = Ec2Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  CallInfo info;
  auto inst = (*client)->DescribeInstance("i-0123456789abcdef0", &info);
  EXPECT_TRUE(inst.ok()) << inst.status();
}

TEST(AwsParsing, FlatJsonAndTimes) {
  auto j = ParseFlatJsonObject(R"( {"A": "x\"y\u00e9", "N": 3, "B": true} )");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["A"], "x\"y\xc3\xa9");
  EXPECT_EQ((*j)["N"], "3");
  for (const char* bad : {"", "[]", "{\"a\":}", "{\"a\":\"b\"", "{\"a\":\"b\"} x", "{\"a\":{}}"}) {
    EXPECT_FALSE(ParseFlatJsonObject(bad).ok()) << bad;
  }
  EXPECT_EQ(*ParseAwsTime("1970-01-01T00:00:10Z"), int64_t{10} * 1000000000);
  EXPECT_FALSE(ParseAwsTime("tomorrow").ok());
}

}  // namespace
}  // namespace tripline::aws
