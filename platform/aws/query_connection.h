// One AWS API endpoint speaking the Query protocol (EC2, IAM, Auto Scaling: every call is a POST
// to "/" with a form-encoded body Action=...&Version=...&...) or the JSON 1.1 protocol (CloudTrail:
// a POST of a JSON document naming its operation in X-Amz-Target), signed with SigV4 by libcurl
// (CURLOPT_AWS_SIGV4 "aws:amz:REGION:SERVICE", explicit Content-Type so it is signed too,
// X-Amz-Security-Token when the credentials carry a session token). Answers are parsed with
// pugixml; AWS error codes and messages surface unchanged, and every call reports its request id.
//
// Throttling (RequestLimitExceeded, Throttling, ...) and 5xx answers are retried with full-jitter
// exponential backoff up to Options::max_attempts; client errors (4xx) never are. With DryRun
// asked for on an EC2 call, DryRunOperation counts as success (CallInfo::dry_run).
// Thread-compatible: one connection per thread, or external locking.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pugixml.hpp"

namespace tripline::aws {

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;  // never logged
  std::string session_token;      // empty for long-term keys
};

// Where credentials come from for each call; lets a provider refresh them before they expire.
using CredentialSource = std::function<absl::StatusOr<Credentials>()>;

// What one API call did, for the audit trail; filled whether the call succeeded or not.
struct CallInfo {
  std::string action;         // "DescribeInstances"
  int http_status = 0;        // 0 when no HTTP answer came (connection refused, timeout)
  std::string request_id;     // AWS's RequestId / RequestID, when the answer had one
  std::string error_code;     // AWS's error code ("InvalidGroup.NotFound"), or a transport code
  std::string error_message;  // AWS's message, or the transport error
  int attempts = 0;           // HTTP requests made (more than 1 after throttling or 5xx)
  bool dry_run = false;       // the call was sent with DryRun=true and AWS said it would succeed
};

using Params = std::vector<std::pair<std::string, std::string>>;

class QueryConnection {
 public:
  struct Options {
    std::string service;      // "ec2", "iam", "autoscaling": the SigV4 scope
    std::string api_version;  // "2016-11-15", ...
    std::string region;       // the SigV4 region (IAM: us-east-1)
    std::string endpoint;     // scheme://host[:port]
    CredentialSource credentials;
    long timeout_ms = 10000;  // per HTTP request
    std::string ca_file;      // optional CA bundle for the endpoint's TLS
    size_t max_response_bytes = 8 << 20;
    int max_attempts = 4;      // 1: no retries
    long retry_base_ms = 100;  // backoff before attempt n: random in [0, base * 2^(n-1)]
    long retry_max_ms = 5000;  // cap of one backoff
  };

  // InvalidArgument for a bad region, endpoint or option.
  static absl::StatusOr<std::unique_ptr<QueryConnection>> Create(Options options);
  ~QueryConnection();
  QueryConnection(const QueryConnection&) = delete;
  QueryConnection& operator=(const QueryConnection&) = delete;

  // Sends `action` with `params`; on success `doc` holds the parsed <Action>Response. With
  // `dry_run`, DryRun=true is added and a DryRunOperation answer is success with info->dry_run.
  // Errors: "<Action>: <AWS code>: <AWS message>" (4xx -> FailedPrecondition / NotFound /
  // PermissionDenied, throttling and 5xx -> Unavailable after the last attempt), transport
  // errors Unavailable ("TransportError"), a 2xx that is not the action's XML Internal
  // ("MalformedResponse"), an answer over max_response_bytes ResourceExhausted
  // ("ResponseTooLarge"), credentials that cannot be had Unauthenticated ("NoCredentials").
  absl::Status Call(const std::string& action, Params params, bool dry_run, CallInfo* info,
                    pugi::xml_document* doc);

  // The JSON 1.1 protocol: POSTs `body` (a JSON document) with X-Amz-Target `target`
  // ("com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"); on success
  // `response` holds the answer's JSON text, unparsed. Errors come from the answer's "__type" and
  // "message" and are classified and retried as Call's.
  absl::Status CallJson(const std::string& target, const std::string& body, CallInfo* info,
                        std::string* response);

  const Options& options() const { return options_; }

 private:
  struct Curl;
  explicit QueryConnection(Options options);
  // One signed POST: credentials, headers, transport errors and the response size cap. Fills
  // info->http_status and `response` with the body of any HTTP answer.
  absl::Status Send(const std::string& action, const std::vector<std::string>& headers,
                    const std::string& body, CallInfo* info, std::string* response);
  absl::Status CallJsonOnce(const std::string& target, const std::string& body, CallInfo* info,
                            std::string* response);
  void WaitBeforeRetry(const std::string& action, int attempt, const CallInfo& info);
  absl::Status CallOnce(const std::string& action, const std::string& body, CallInfo* info,
                        pugi::xml_document* doc);

  Options options_;
  std::unique_ptr<Curl> curl_;
};

// Fills `info` with a failure and returns the matching Status ("<action>: <code>: <message>").
absl::Status FailCall(CallInfo* info, absl::StatusCode code, std::string error_code,
                      std::string message);

// True for AWS codes that mean "slow down" or "try again" (retried).
bool IsRetryableAwsError(int http_status, const std::string& code);

}  // namespace tripline::aws
