// Ec2Client against the real local EC2 endpoint (tests/fakes/ec2_endpoint.py), which checks every
// SigV4 signature with botocore: a passing call proves libcurl signed it the way AWS expects.
#include "platform/aws/ec2_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/local_endpoint.h"
#include "tests/support/temp_dir.h"

namespace tripline::aws {
namespace {

constexpr char kAccessKey[] = "AKIDCLIENTTEST000001";
constexpr char kSecretKey[] = "client-test-secret-key";
constexpr char kInstance[] = "i-0123456789abcdef0";

constexpr char kSeed[] = R"({
  "instances": [{
    "instance_id": "i-0123456789abcdef0",
    "vpc_id": "vpc-1",
    "state": "running",
    "iam_instance_profile_arn": "arn:aws:iam::111122223333:instance-profile/web",
    "tags": {"Name": "web-1", "team": "payments & risk"},
    "interfaces": [
      {"interface_id": "eni-1", "subnet_id": "subnet-1", "private_ip": "10.0.0.5",
       "device_index": 0, "group_ids": ["sg-web", "sg-ssh"]},
      {"interface_id": "eni-2", "subnet_id": "subnet-2", "private_ip": "10.0.1.7",
       "device_index": 1, "group_ids": ["sg-mgmt"]}
    ]
  }],
  "security_groups": [
    {"group_id": "sg-web", "vpc_id": "vpc-1", "group_name": "web"},
    {"group_id": "sg-ssh", "vpc_id": "vpc-1", "group_name": "ssh"},
    {"group_id": "sg-mgmt", "vpc_id": "vpc-1", "group_name": "mgmt"},
    {"group_id": "sg-iso", "vpc_id": "vpc-1", "group_name": "isolation"},
    {"group_id": "sg-other", "vpc_id": "vpc-2", "group_name": "elsewhere"}
  ]
})";

size_t CountOf(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

// The endpoint as a child process (tests/support/local_endpoint.h), seeded from kSeed, with its
// call log in its temp dir.
class FakeEc2 {
 public:
  explicit FakeEc2(std::vector<std::string> extra_args = {})
      : endpoint_(TRIPLINE_EC2_ENDPOINT_SCRIPT, Args(seed_dir_, std::move(extra_args))) {}

  bool running() const { return endpoint_.running(); }
  std::string endpoint() const { return endpoint_.url(); }
  std::string Calls() const { return endpoint_.Admin("/_tripline/calls"); }
  std::string Inject(const std::string& json) const {
    return endpoint_.Admin("/_tripline/inject", &json);
  }

 private:
  // Writes the seed first: the endpoint reads it when it starts.
  static std::vector<std::string> Args(const testing::TempDir& dir,
                                       std::vector<std::string> extra) {
    const std::string seed = dir.Sub("seed.json");
    std::ofstream(seed) << kSeed;
    std::vector<std::string> args = {
        "--region", "us-east-1", "--access-key", kAccessKey,   "--secret-key",
        kSecretKey, "--seed",    seed,           "--log-file", dir.Sub("calls.jsonl")};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  testing::TempDir seed_dir_;  // before endpoint_: built first
  testing::LocalEndpoint endpoint_;
};

Ec2Client::Options OptionsFor(const std::string& endpoint) {
  Ec2Client::Options options;
  options.region = "us-east-1";
  options.endpoint = endpoint;
  options.credentials.access_key_id = kAccessKey;
  options.credentials.secret_access_key = kSecretKey;
  options.timeout_ms = 10000;
  return options;
}

std::unique_ptr<Ec2Client> MakeClient(const Ec2Client::Options& options) {
  auto client = Ec2Client::Create(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

std::vector<std::string> GroupsOf(Ec2Client& client, const std::string& eni) {
  CallInfo info;
  auto inst = client.DescribeInstance(kInstance, &info);
  if (!inst.ok()) return {"describe failed: " + inst.status().ToString()};
  for (const auto& i : inst->interfaces) {
    if (i.interface_id == eni) return i.group_ids;
  }
  return {"no such interface"};
}

TEST(Ec2Client, DescribeInstanceParsesInterfacesGroupsTagsAndProfile) {
  FakeEc2 fake;
  ASSERT_TRUE(fake.running());
  auto client = MakeClient(OptionsFor(fake.endpoint()));
  ASSERT_NE(client, nullptr);
  CallInfo info;
  auto inst = client->DescribeInstance(kInstance, &info);
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_EQ(info.action, "DescribeInstances");
  EXPECT_EQ(info.http_status, 200);
  EXPECT_EQ(info.request_id.size(), 36u) << info.request_id;
  EXPECT_EQ(info.error_code, "");
  EXPECT_EQ(inst->instance_id, kInstance);
  EXPECT_EQ(inst->state, "running");
  EXPECT_EQ(inst->vpc_id, "vpc-1");
  EXPECT_EQ(inst->iam_instance_profile_arn, "arn:aws:iam::111122223333:instance-profile/web");
  EXPECT_EQ(inst->tags,
            (std::map<std::string, std::string>{{"Name", "web-1"}, {"team", "payments & risk"}}));
  ASSERT_EQ(inst->interfaces.size(), 2u);
  const NetworkInterface& a = inst->interfaces[0];
  EXPECT_EQ(a.interface_id, "eni-1");
  EXPECT_EQ(a.vpc_id, "vpc-1");
  EXPECT_EQ(a.subnet_id, "subnet-1");
  EXPECT_EQ(a.private_ip, "10.0.0.5");
  EXPECT_EQ(a.device_index, 0);
  EXPECT_EQ(a.group_ids, (std::vector<std::string>{"sg-web", "sg-ssh"}));
  const NetworkInterface& b = inst->interfaces[1];
  EXPECT_EQ(b.interface_id, "eni-2");
  EXPECT_EQ(b.subnet_id, "subnet-2");
  EXPECT_EQ(b.private_ip, "10.0.1.7");
  EXPECT_EQ(b.device_index, 1);
  EXPECT_EQ(b.group_ids, (std::vector<std::string>{"sg-mgmt"}));
  // The endpoint verified our SigV4 signature with botocore.
  const std::string calls = fake.Calls();
  EXPECT_EQ(CountOf(calls, "\"signature_ok\": true"), 1u) << calls;
}

TEST(Ec2Client, SetInterfaceSecurityGroupsReplacesTheInterfacesGroups) {
  FakeEc2 fake;
  ASSERT_TRUE(fake.running());
  auto client = MakeClient(OptionsFor(fake.endpoint()));
  ASSERT_NE(client, nullptr);
  CallInfo info;
  absl::Status st = client->SetInterfaceSecurityGroups("eni-1", {"sg-iso", "sg-web"}, &info);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(info.action, "ModifyNetworkInterfaceAttribute");
  EXPECT_EQ(info.http_status, 200);
  EXPECT_FALSE(info.request_id.empty());
  EXPECT_EQ(GroupsOf(*client, "eni-1"), (std::vector<std::string>{"sg-iso", "sg-web"}));
  EXPECT_EQ(GroupsOf(*client, "eni-2"), (std::vector<std::string>{"sg-mgmt"}));
  // A second call on the same client reuses the handle and is signed afresh.
  ASSERT_TRUE(client->SetInterfaceSecurityGroups("eni-1", {"sg-iso"}, &info).ok());
  EXPECT_EQ(GroupsOf(*client, "eni-1"), (std::vector<std::string>{"sg-iso"}));
  const std::string calls = fake.Calls();
  EXPECT_EQ(CountOf(calls, "\"signature_ok\": true"), 5u) << calls;
  EXPECT_EQ(CountOf(calls, "\"signature_ok\": false"), 0u) << calls;
}

TEST(Ec2Client, WrongSecretFailsTheSignatureCheck) {
  FakeEc2 fake;
  ASSERT_TRUE(fake.running());
  Ec2Client::Options options = OptionsFor(fake.endpoint());
  options.credentials.secret_access_key = "not-the-secret";
  auto wrong = MakeClient(options);
  ASSERT_NE(wrong, nullptr);
  CallInfo info;
  absl::Status st = wrong->SetInterfaceSecurityGroups("eni-1", {"sg-iso"}, &info);
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_EQ(info.error_code, "SignatureDoesNotMatch");
  EXPECT_EQ(info.http_status, 401);
  EXPECT_FALSE(info.request_id.empty());
  EXPECT_NE(info.error_message.find("signature"), std::string::npos) << info.error_message;
  EXPECT_EQ(st.message().find("not-the-secret"), std::string::npos);
  EXPECT_EQ(st.message().find("ModifyNetworkInterfaceAttribute: SignatureDoesNotMatch: "), 0u)
      << st;
  auto right = MakeClient(OptionsFor(fake.endpoint()));
  ASSERT_NE(right, nullptr);
  EXPECT_EQ(GroupsOf(*right, "eni-1"), (std::vector<std::string>{"sg-web", "sg-ssh"}));
}

TEST(Ec2Client, SessionTokenIsSentAndSigned) {
  FakeEc2 fake({"--session-token", "FQoGZXIvYXdzEXAMPLE/token+with=chars"});
  ASSERT_TRUE(fake.running());
  Ec2Client::Options options = OptionsFor(fake.endpoint());
  options.credentials.session_token = "FQoGZXIvYXdzEXAMPLE/token+with=chars";
  auto client = MakeClient(options);
  ASSERT_NE(client, nullptr);
  CallInfo info;
  auto inst = client->DescribeInstance(kInstance, &info);
  ASSERT_TRUE(inst.ok()) << inst.status();
  const std::string calls = fake.Calls();
  EXPECT_EQ(CountOf(calls, "\"security_token_signed\": true"), 1u) << calls;

  // The endpoint requires the token: the same keys without it are refused.
  auto without = MakeClient(OptionsFor(fake.endpoint()));
  ASSERT_NE(without, nullptr);
  auto refused = without->DescribeInstance(kInstance, &info);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(info.error_code, "AuthFailure");
  EXPECT_EQ(info.http_status, 401);
}

TEST(Ec2Client, UnknownInstanceIsNotFoundWithAwsCode) {
  FakeEc2 fake;
  ASSERT_TRUE(fake.running());
  auto client = MakeClient(OptionsFor(fake.endpoint()));
  ASSERT_NE(client, nullptr);
  CallInfo info;
  auto inst = client->DescribeInstance("i-00000000000000bad", &info);
  EXPECT_EQ(inst.status().code(), absl::StatusCode::kNotFound) << inst.status();
  EXPECT_EQ(info.error_code, "InvalidInstanceID.NotFound");
  EXPECT_EQ(info.error_message, "The instance ID 'i-00000000000000bad' does not exist");
  EXPECT_EQ(info.http_status, 400);
  EXPECT_EQ(info.request_id.size(), 36u);
  EXPECT_EQ(inst.status().message(),
            "DescribeInstances: InvalidInstanceID.NotFound: The instance ID "
            "'i-00000000000000bad' does not exist");
}

TEST(Ec2Client, GroupsOutsideTheInterfacesVpcOrUnknownAreRefused) {
  FakeEc2 fake;
  ASSERT_TRUE(fake.running());
  auto client = MakeClient(OptionsFor(fake.endpoint()));
  ASSERT_NE(client, nullptr);
  CallInfo info;
  absl::Status st = client->SetInterfaceSecurityGroups("eni-1", {"sg-other"}, &info);
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_EQ(info.error_code, "InvalidGroup.NotFound");
  EXPECT_NE(info.error_message.find("different networks"), std::string::npos);
  // Reserved and non-ASCII bytes survive the form encoding and the signature intact.
  const std::string odd = "sg-a b&c=d/+%\xc3\xa9";
  st = client->SetInterfaceSecurityGroups("eni-1", {"sg-web", odd}, &info);
  EXPECT_EQ(info.error_code, "InvalidGroup.NotFound") << st;
  EXPECT_EQ(info.error_message, "The security group '" + odd + "' does not exist");
  st = client->SetInterfaceSecurityGroups("eni-9", {"sg-web"}, &info);
  EXPECT_EQ(info.error_code, "InvalidNetworkInterfaceID.NotFound") << st;
  EXPECT_EQ(GroupsOf(*client, "eni-1"), (std::vector<std::string>{"sg-web", "sg-ssh"}));
}

TEST(Ec2Client, InjectedThrottlingSurfacesCodeAndRequestId) {
  FakeEc2 fake;
  ASSERT_TRUE(fake.running());
  ASSERT_NE(fake.Inject(R"({"action":"ModifyNetworkInterfaceAttribute",)"
                        R"("code":"RequestLimitExceeded","http_status":503,"count":1})"),
            "");
  Ec2Client::Options options = OptionsFor(fake.endpoint());
  options.max_attempts = 1;  // no retries: the first answer is the result
  auto client = MakeClient(options);
  ASSERT_NE(client, nullptr);
  CallInfo info;
  absl::Status st = client->SetInterfaceSecurityGroups("eni-1", {"sg-iso"}, &info);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_EQ(info.error_code, "RequestLimitExceeded");
  EXPECT_EQ(info.error_message, "Request limit exceeded.");
  EXPECT_EQ(info.http_status, 503);
  EXPECT_EQ(info.request_id.size(), 36u);
  EXPECT_NE(fake.Calls().find(info.request_id), std::string::npos);
  EXPECT_EQ(GroupsOf(*client, "eni-1"), (std::vector<std::string>{"sg-web", "sg-ssh"}));
  // Only `count` calls fail: the retry goes through.
  st = client->SetInterfaceSecurityGroups("eni-1", {"sg-iso"}, &info);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(info.error_code, "");
}

TEST(Ec2Client, OversizedAnswerIsRefused) {
  FakeEc2 fake;
  ASSERT_TRUE(fake.running());
  Ec2Client::Options options = OptionsFor(fake.endpoint());
  options.max_response_bytes = 256;  // the DescribeInstances answer is a few KiB
  auto client = MakeClient(options);
  ASSERT_NE(client, nullptr);
  CallInfo info;
  auto inst = client->DescribeInstance(kInstance, &info);
  EXPECT_EQ(inst.status().code(), absl::StatusCode::kResourceExhausted) << inst.status();
  EXPECT_EQ(info.error_code, "ResponseTooLarge");
  EXPECT_NE(inst.status().message().find("256"), std::string::npos);
}

TEST(Ec2Client, UnreachableEndpointIsUnavailableTransportError) {
  // A loopback port that was free a moment ago and has no listener.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  auto client = MakeClient(OptionsFor("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port))));
  ASSERT_NE(client, nullptr);
  CallInfo info;
  auto inst = client->DescribeInstance(kInstance, &info);
  EXPECT_EQ(inst.status().code(), absl::StatusCode::kUnavailable) << inst.status();
  EXPECT_EQ(info.error_code, "TransportError");
  EXPECT_EQ(info.http_status, 0);
  EXPECT_FALSE(info.error_message.empty());
  EXPECT_EQ(info.action, "DescribeInstances");
}

TEST(Ec2Client, EmptyGroupListIsRefusedBeforeSending) {
  auto client = MakeClient(OptionsFor("http://127.0.0.1:1"));
  ASSERT_NE(client, nullptr);
  CallInfo info;
  absl::Status st = client->SetInterfaceSecurityGroups("eni-1", {}, &info);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(info.action, "ModifyNetworkInterfaceAttribute");
  EXPECT_EQ(info.error_code, "ClientValidation");
  EXPECT_EQ(info.http_status, 0);
}

TEST(Ec2Client, CreateRejectsIncompleteOrUnsafeOptions) {
  Ec2Client::Options good = OptionsFor("http://127.0.0.1:1");
  EXPECT_TRUE(Ec2Client::Create(good).ok());
  auto expect_invalid = [](Ec2Client::Options o, const char* what) {
    auto c = Ec2Client::Create(std::move(o));
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << what;
  };
  Ec2Client::Options o = good;
  o.region = "";
  expect_invalid(o, "no region");
  o = good;
  o.region = "us-east-1:s3";
  expect_invalid(o, "region with a colon");
  o = good;
  o.credentials.secret_access_key = "";
  expect_invalid(o, "no secret");
  o = good;
  o.credentials.session_token = "tok\r\nX-Injected: 1";
  expect_invalid(o, "header injection through the token");
  o = good;
  o.endpoint = "ftp://127.0.0.1";
  expect_invalid(o, "ftp endpoint");
  o = good;
  o.endpoint = "http://127.0.0.1:1/some/path";
  expect_invalid(o, "endpoint with a path");
  o = good;
  o.endpoint = "";
  EXPECT_TRUE(Ec2Client::Create(o).ok()) << "the default endpoint is the region's";
}

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    if (old != nullptr) old_ = old;
    had_ = old != nullptr;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(Ec2Client, CredentialsFromEnvironmentNeedsBothKeys) {
  {
    ScopedEnv id("AWS_ACCESS_KEY_ID", "AKIDENV");
    ScopedEnv secret("AWS_SECRET_ACCESS_KEY", "env-secret");
    ScopedEnv token("AWS_SESSION_TOKEN", "env-token");
    auto creds = CredentialsFromEnvironment();
    ASSERT_TRUE(creds.ok()) << creds.status();
    EXPECT_EQ(creds->access_key_id, "AKIDENV");
    EXPECT_EQ(creds->secret_access_key, "env-secret");
    EXPECT_EQ(creds->session_token, "env-token");
  }
  ScopedEnv id("AWS_ACCESS_KEY_ID", "AKIDENV");
  ScopedEnv secret("AWS_SECRET_ACCESS_KEY", nullptr);
  auto creds = CredentialsFromEnvironment();
  EXPECT_EQ(creds.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tripline::aws

namespace tripline::aws {
namespace {

TEST(Ec2Client, ThrottlingAndServerErrorsAreRetriedUntilTheyPass) {
  FakeEc2 fake;
  ASSERT_TRUE(fake.running());
  ASSERT_NE(fake.Inject(R"({"action":"ModifyNetworkInterfaceAttribute",)"
                        R"("code":"RequestLimitExceeded","http_status":503,"count":2})"),
            "");
  ASSERT_NE(fake.Inject(R"({"action":"DescribeInstances","code":"InternalError",)"
                        R"("http_status":500,"count":1})"),
            "");
  Ec2Client::Options options = OptionsFor(fake.endpoint());
  options.retry_base_ms = 5;
  auto client = MakeClient(options);
  ASSERT_NE(client, nullptr);
  CallInfo info;
  absl::Status st = client->SetInterfaceSecurityGroups("eni-1", {"sg-iso"}, &info);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(info.attempts, 3);
  EXPECT_EQ(info.error_code, "");
  EXPECT_EQ(CountOf(fake.Calls(), "RequestLimitExceeded"), 2u);
  auto inst = client->DescribeInstance(kInstance, &info);
  EXPECT_TRUE(inst.ok()) << inst.status();
  EXPECT_EQ(info.attempts, 2);
}

TEST(Ec2Client, ClientErrorsAreNeverRetried) {
  FakeEc2 fake;
  ASSERT_TRUE(fake.running());
  ASSERT_NE(fake.Inject(R"({"action":"ModifyNetworkInterfaceAttribute",)"
                        R"("code":"UnauthorizedOperation","http_status":403,"count":1})"),
            "");
  Ec2Client::Options options = OptionsFor(fake.endpoint());
  options.retry_base_ms = 5;
  auto client = MakeClient(options);
  ASSERT_NE(client, nullptr);
  CallInfo info;
  absl::Status st = client->SetInterfaceSecurityGroups("eni-1", {"sg-iso"}, &info);
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_EQ(info.error_code, "UnauthorizedOperation");
  EXPECT_EQ(info.attempts, 1);
  EXPECT_EQ(CountOf(fake.Calls(), "\"action\": \"ModifyNetworkInterfaceAttribute\""), 1u);
}

TEST(Ec2Client, DryRunOperationIsSuccessAndChangesNothing) {
  FakeEc2 fake;
  ASSERT_TRUE(fake.running());
  auto client = MakeClient(OptionsFor(fake.endpoint()));
  ASSERT_NE(client, nullptr);
  CallInfo info;
  absl::Status st = client->SetInterfaceSecurityGroups("eni-1", {"sg-iso"}, &info, true);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_TRUE(info.dry_run);
  EXPECT_EQ(info.http_status, 412);
  EXPECT_EQ(GroupsOf(*client, "eni-1"), (std::vector<std::string>{"sg-web", "sg-ssh"}));
}

TEST(Ec2Client, IamAndAutoScalingCallsAreSignedForTheirServices) {
  FakeEc2 fake;
  ASSERT_TRUE(fake.running());
  ClientOptions options = OptionsFor(fake.endpoint());
  options.region = "eu-west-1";  // IAM is signed for us-east-1 whatever the region
  auto iam = IamClient::Create(options);
  ASSERT_TRUE(iam.ok()) << iam.status();
  CallInfo info;
  auto roles = (*iam)->InstanceProfileRoles("nope", &info);
  // The endpoint runs in us-east-1 only: a refused signature would say SignatureDoesNotMatch.
  EXPECT_EQ(info.error_code, "NoSuchEntity") << roles.status();
  EXPECT_EQ(roles.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(info.request_id.size(), 36u);
  options.region = "us-east-1";
  auto as = AutoScalingClient::Create(options);
  ASSERT_TRUE(as.ok());
  auto m = (*as)->DescribeMembership(kInstance, &info);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->group_name, "");
  EXPECT_EQ(info.request_id.size(), 36u);
}

}  // namespace
}  // namespace tripline::aws
