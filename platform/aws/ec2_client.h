// A client for the parts of the EC2 Query API that response actions use. Every call is an HTTPS
// POST to "/" with a form-encoded body (Action=...&Version=2016-11-15&...), signed with SigV4 by
// libcurl (CURLOPT_AWS_SIGV4 "aws:amz:REGION:ec2", explicit Content-Type so it is signed too,
// X-Amz-Security-Token when the credentials carry a session token). Responses are parsed with
// pugixml. AWS error codes and messages surface unchanged, and every call reports its request id.
// Thread-compatible: one client per thread, or external locking.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tripline::aws {

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;  // never logged
  std::string session_token;      // empty for long-term keys
};

// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optional AWS_SESSION_TOKEN from the environment.
// NotFound when the two required variables are not both set.
absl::StatusOr<Credentials> CredentialsFromEnvironment();

// What one API call did, for the audit trail; filled whether the call succeeded or not.
struct CallInfo {
  std::string action;         // "DescribeInstances"
  int http_status = 0;        // 0 when no HTTP answer came (connection refused, timeout)
  std::string request_id;     // AWS's RequestId / RequestID, when the answer had one
  std::string error_code;     // AWS's error code ("InvalidGroup.NotFound"), or a transport code
  std::string error_message;  // AWS's message, or the transport error
};

struct NetworkInterface {
  std::string interface_id;  // eni-...
  std::string vpc_id;
  std::string subnet_id;
  std::string private_ip;
  int device_index = 0;
  std::vector<std::string> group_ids;  // in the order EC2 lists them
};

struct Instance {
  std::string instance_id;
  std::string state;  // "running", "stopped", ...
  std::string vpc_id;
  std::string iam_instance_profile_arn;
  std::vector<NetworkInterface> interfaces;
  std::map<std::string, std::string> tags;
};

class Ec2Client {
 public:
  struct Options {
    std::string region;    // required, e.g. "eu-west-1"
    std::string endpoint;  // default "https://ec2.<region>.amazonaws.com"; tests point it at loopback
    Credentials credentials;
    long timeout_ms = 10000;  // whole request
    std::string ca_file;      // optional CA bundle for the endpoint's TLS
    // Answers longer than this fail with ResourceExhausted (CallInfo error_code
    // "ResponseTooLarge") instead of being buffered.
    size_t max_response_bytes = 8 << 20;
  };

  // InvalidArgument when region or credentials are missing or the endpoint is not http(s)://.
  static absl::StatusOr<std::unique_ptr<Ec2Client>> Create(Options options);
  ~Ec2Client();
  Ec2Client(const Ec2Client&) = delete;
  Ec2Client& operator=(const Ec2Client&) = delete;

  // DescribeInstances for one instance id. NotFound when EC2 does not know it.
  absl::StatusOr<Instance> DescribeInstance(const std::string& instance_id, CallInfo* info);

  // ModifyNetworkInterfaceAttribute NetworkInterfaceId=eni, SecurityGroupId.N=groups: replaces the
  // interface's groups with exactly `group_ids`.
  absl::Status SetInterfaceSecurityGroups(const std::string& interface_id,
                                          const std::vector<std::string>& group_ids,
                                          CallInfo* info);

  // Errors from both calls: the Status message is "<Action>: <AWS code>: <AWS message>" for an AWS
  // error answer (code chosen by HTTP status: 4xx -> FailedPrecondition/NotFound/PermissionDenied,
  // 5xx and throttling -> Unavailable), or "<Action>: <transport error>" (Unavailable, CallInfo
  // error_code "TransportError", http_status 0). A 2xx answer that is not the action's XML is
  // Internal ("MalformedResponse"); an answer over max_response_bytes is ResourceExhausted
  // ("ResponseTooLarge"); arguments refused before sending are InvalidArgument
  // ("ClientValidation"). Secrets never appear in a Status, a CallInfo or a log line.

 private:
  struct Connection;  // the libcurl handle, reused so connections are kept alive

  explicit Ec2Client(Options options);
  Options options_;
  std::unique_ptr<Connection> connection_;
};

}  // namespace tripline::aws
