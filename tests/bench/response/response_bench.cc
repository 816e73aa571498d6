// Response latency: 200 incidents, one after another, each from a signed batch published by an
// agent (in process, over real gRPC on loopback) to a collector whose response worker calls the
// local AWS endpoint (tests/fakes/ec2_endpoint.py: real HTTP, SigV4 verified by botocore). For
// each incident: from the batch being sent to the first isolating call
// (ModifyNetworkInterfaceAttribute), to containment (every interface in the isolation group), and
// to the whole recipe done. Printed beside the peer measured in the same run: the one-call
// isolation this project started with (DescribeInstances + one ModifyNetworkInterfaceAttribute
// per interface, straight through the client), against the same endpoint.
//
//   response_bench [--incidents N]
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "absl/strings/str_format.h"
#include "collector/response/ec2_instance_network.h"
#include "platform/runtime/logging.h"
#include "tests/unit/collector/collector_test_env.h"

extern char** environ;

namespace tripline::collector {
namespace {

constexpr char kAccessKey[] = "AKIDBENCH00000000001";
constexpr char kSecretKey[] = "bench-secret";

struct Endpoint {
  pid_t pid = -1;
  std::string address;
  ~Endpoint() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      int st = 0;
      waitpid(pid, &st, 0);
    }
  }
};

bool StartEndpoint(const tripline::testing::TempDir& dir, int instances, Endpoint* ep) {
  std::ofstream seed(dir.Sub("seed.json"));
  seed << R"({"instance_profiles": {"web": {"roles": ["web-role"]}}, "security_groups": [)"
       << R"({"group_id": "sg-0web", "vpc_id": "vpc-0bench", "group_name": "web"},)"
       << R"({"group_id": "sg-0iso", "vpc_id": "vpc-0bench", "group_name": "iso", "egress": []}],)"
       << R"("instances": [)";
  for (int i = 0; i < instances; ++i) {
    seed << absl::StrFormat(
        R"(%s{"instance_id": "i-0bench%05d", "vpc_id": "vpc-0bench",)"
        R"( "iam_instance_profile_arn": "arn:aws:iam::111122223333:instance-profile/web",)"
        R"( "volumes": [{"device_name": "/dev/xvda", "volume_id": "vol-0b%05d"}],)"
        R"( "interfaces": [{"interface_id": "eni-0a%05d", "group_ids": ["sg-0web"]},)"
        R"( {"interface_id": "eni-0b%05d", "device_index": 1, "group_ids": ["sg-0web"]}]})",
        i ? "," : "", i, i, i, i);
  }
  seed << "]}";
  seed.close();
  const std::string ready = dir.Sub("ready");
  std::vector<std::string> args = {"/usr/bin/python3", TRIPLINE_EC2_ENDPOINT_SCRIPT,
                                   "--listen",         "127.0.0.1:0",
                                   "--ready-file",     ready,
                                   "--region",         "us-east-1",
                                   "--access-key",     kAccessKey,
                                   "--secret-key",     kSecretKey,
                                   "--seed",           dir.Sub("seed.json")};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (posix_spawn(&ep->pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return false;
  return testing::WaitFor(
      [&] {
        std::ifstream in(ready);
        return static_cast<bool>(std::getline(in, ep->address)) && !ep->address.empty();
      },
      std::chrono::seconds(30));
}

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

struct Stats {
  std::vector<int64_t> v;
  double P(double q) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : Ms(v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))]);
  }
};

int Run(int incidents) {
  tripline::testing::TempDir dir;
  Endpoint ep;
  if (!StartEndpoint(dir, incidents, &ep)) {
    std::cerr << "response_bench: the local AWS endpoint did not start\n";
    return 1;
  }
  setenv("AWS_ACCESS_KEY_ID", kAccessKey, 1);
  setenv("AWS_SECRET_ACCESS_KEY", kSecretKey, 1);
  unsetenv("AWS_SESSION_TOKEN");
  setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
  spdlog::set_level(spdlog::level::warn);

  // The peer: the one-call isolation, straight through the client.
  Stats peer;
  {
    aws::ClientOptions o;
    o.region = "us-east-1";
    o.endpoint = "http://" + ep.address;
    o.credentials = {kAccessKey, kSecretKey, ""};
    auto client = aws::Ec2Client::Create(o);
    if (!client.ok()) return 1;
    for (int i = 0; i < incidents; ++i) {
      const int64_t t0 = SystemClock().NowUnixNanos();
      aws::CallInfo info;
      auto inst = (*client)->DescribeInstance(absl::StrFormat("i-0bench%05d", i), &info);
      if (!inst.ok()) return 1;
      (void)(*client)->SetInterfaceSecurityGroups(inst->interfaces[0].interface_id, {"sg-0iso"},
                                                  &info);
      peer.v.push_back(SystemClock().NowUnixNanos() - t0);
      for (const aws::NetworkInterface& e : inst->interfaces) {  // put it back for the recipe
        (void)(*client)->SetInterfaceSecurityGroups(e.interface_id, e.group_ids, &info);
      }
    }
  }

  testing::TestCollector c(testing::kEtcRule, nullptr);
  AwsConfig aws;
  aws.region = "us-east-1";
  aws.endpoint = aws.iam_endpoint = aws.autoscaling_endpoint = "http://" + ep.address;
  c.Configure([](CollectorConfig& config) { config.response.max_auto_isolations_per_hour = 0; });
  auto response = MakeAwsResponse(aws);
  if (!response.ok()) {
    std::cerr << "response_bench: " << response.status() << "\n";
    return 1;
  }
  c.StartWithNetwork(std::move(response->network));

  Stats first, contained, complete;
  for (int i = 0; i < incidents; ++i) {
    const std::string id = absl::StrFormat("i-0bench%05d", i);
    testing::TestAgent agent(id, c.channel());
    if (!agent.Enroll().ok()) return 1;
    const int64_t t0 = SystemClock().NowUnixNanos();
    auto out = agent.Publish({agent.NextBatch({testing::TestAgent::FileEvent("/etc/passwd")})}, 1);
    if (!out.status.ok()) return 1;
    ActionRecord parent;
    if (!testing::WaitFor(
            [&] {
              const std::vector<ActionRecord> all = *c.store()->ListActions(0, 100000);
              for (const ActionRecord& a : all) {
                if (a.parent_id == 0 && a.target == id &&
                    (a.status == "done" || a.status == "failed")) {
                  parent = a;
                  return true;
                }
              }
              return false;
            },
            std::chrono::seconds(60)) ||
        parent.status != "done") {
      std::cerr << "response_bench: isolation of " << id << " did not finish done\n";
      return 1;
    }
    int64_t first_call = 0, last_isolate = 0;
    const std::vector<ActionRecord> steps = *c.store()->Steps(parent.id);
    for (const ActionRecord& s : steps) {
      if (s.kind != "ec2:ModifyNetworkInterfaceAttribute") continue;
      if (first_call == 0) first_call = s.created_ns;
      if (s.step_key.rfind("eni-isolate:", 0) == 0)
        last_isolate = std::max(last_isolate, s.updated_ns);
    }
    first.v.push_back(first_call - t0);
    contained.v.push_back(last_isolate - t0);
    complete.v.push_back(parent.updated_ns - t0);
  }
  c.Stop();

  std::printf("response latency over %d incidents (local AWS endpoint, SigV4 verified)\n",
              incidents);
  std::printf("%-52s %9s %9s\n", "", "p50 ms", "p99 ms");
  std::printf("%-52s %9.1f %9.1f\n", "event -> first isolating call (recipe)", first.P(0.5),
              first.P(0.99));
  std::printf("%-52s %9.1f %9.1f\n", "event -> contained (all interfaces isolated)",
              contained.P(0.5), contained.P(0.99));
  std::printf("%-52s %9.1f %9.1f\n", "event -> recipe complete (evidence, IAM, snapshots)",
              complete.P(0.5), complete.P(0.99));
  std::printf("%-52s %9.1f %9.1f\n", "peer: Describe + 1 Modify via the client alone", peer.P(0.5),
              peer.P(0.99));
  std::printf("%-52s %9s %9.1f\n", "target: first isolating call", "", 250.0);
  return 0;
}

}  // namespace
}  // namespace tripline::collector

int main(int argc, char** argv) {
  int incidents = 200;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--incidents") incidents = std::atoi(argv[i + 1]);
  }
  if (incidents < 1 || incidents > 100000) {
    std::cerr << "usage: response_bench [--incidents N]\n";
    return 2;
  }
  return tripline::collector::Run(incidents);
}
