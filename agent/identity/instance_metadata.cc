#include "agent/identity/instance_metadata.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "platform/net/plain_http.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::agent {
namespace {

constexpr size_t kMaxAnswer = 16 << 10;

using Answer = PlainHttpAnswer;

class Imds {
 public:
  Imds(const ImdsOptions& options, PlainHttpEndpoint endpoint)
      : options_(options), endpoint_(std::move(endpoint)) {}

  // One GET with the session token, retried; a 401 (token expired or revoked) fetches a new one.
  absl::StatusOr<std::string> Get(const std::string& path) {
    bool renewed = false;
    absl::Status last;
    for (int attempt = 1; attempt <= std::max(1, options_.attempts); ++attempt) {
      if (attempt > 1) absl::SleepFor(options_.retry_delay);
      if (token_.empty()) {
        absl::Status st = FetchToken();
        if (!st.ok()) {
          last = st;
          if (st.code() != absl::StatusCode::kUnavailable) return st;
          continue;
        }
      }
      absl::StatusOr<Answer> a = Http("GET", path, "X-aws-ec2-metadata-token: " + token_);
      if (!a.ok()) {
        last = a.status();
        if (a.status().code() != absl::StatusCode::kUnavailable) return a.status();
        continue;
      }
      if (a->status == 200) return std::move(a->body);
      if (a->status == 401 && !renewed) {
        renewed = true;
        token_.clear();
        --attempt;  // a fresh token does not use up an attempt
        continue;
      }
      last = absl::Status(
          a->status >= 500 ? absl::StatusCode::kUnavailable : absl::StatusCode::kFailedPrecondition,
          absl::StrFormat("IMDS GET %s: HTTP %d", path, a->status));
      if (a->status < 500) return last;
    }
    return absl::UnavailableError(absl::StrFormat("IMDS at %s: %s (after %d attempts)",
                                                  Printable(options_.endpoint), last.message(),
                                                  std::max(1, options_.attempts)));
  }

 private:
  absl::Status FetchToken() {
    ASSIGN_OR_RETURN(Answer a, Http("PUT", "/latest/api/token",
                                    "X-aws-ec2-metadata-token-ttl-seconds: 21600"));
    if (a.status != 200 || a.body.empty() || a.body.size() > 1024 ||
        a.body.find_first_of("\r\n") != std::string::npos) {
      return absl::Status(
          a.status >= 500 ? absl::StatusCode::kUnavailable : absl::StatusCode::kFailedPrecondition,
          absl::StrFormat("IMDSv2 token (PUT /latest/api/token): HTTP %d", a.status));
    }
    token_ = std::move(a.body);
    return absl::OkStatus();
  }

  absl::StatusOr<Answer> Http(const std::string& method, const std::string& path,
                              const std::string& header) {
    PlainHttpRequest r;
    r.method = method;
    r.path = path;
    r.headers = {header};
    r.timeout = options_.timeout;
    r.max_body = kMaxAnswer;
    return PlainHttpCall(endpoint_, r);
  }

  const ImdsOptions& options_;
  const PlainHttpEndpoint endpoint_;
  std::string token_;  // secret for its lifetime; never logged
};

bool IsInstanceId(const std::string& s) {
  if (s.size() < 3 || s.size() > 64 || s.rfind("i-", 0) != 0) return false;
  return s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-", 2) == std::string::npos;
}

bool IsRegion(const std::string& s) {
  return !s.empty() && s.size() <= 32 &&
         s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos;
}

bool IsBase64Text(const std::string& s) {
  return s.find_first_not_of(
             "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n") ==
         std::string::npos;
}

}  // namespace

absl::StatusOr<InstanceMetadata> ReadInstanceMetadata(const ImdsOptions& options) {
  absl::StatusOr<PlainHttpEndpoint> endpoint = ParsePlainHttpEndpoint(options.endpoint);
  if (!endpoint.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("imds.endpoint %s", endpoint.status().message()));
  }
  Imds imds(options, *std::move(endpoint));
  InstanceMetadata m;
  ASSIGN_OR_RETURN(m.instance_id, imds.Get("/latest/meta-data/instance-id"));
  if (!IsInstanceId(m.instance_id)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "IMDS instance-id '%s' is not an EC2 instance id", Printable(m.instance_id, 64)));
  }
  ASSIGN_OR_RETURN(m.region, imds.Get("/latest/meta-data/placement/region"));
  if (!IsRegion(m.region)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("IMDS placement/region '%s' is not a region", Printable(m.region, 64)));
  }
  ASSIGN_OR_RETURN(m.document, imds.Get("/latest/dynamic/instance-identity/document"));
  if (m.document.empty()) {
    return absl::FailedPreconditionError("IMDS instance identity document is empty");
  }
  ASSIGN_OR_RETURN(m.signature, imds.Get(kIdentitySignaturePath));
  if (m.signature.empty() || !IsBase64Text(m.signature)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("IMDS %s is not base64 text", kIdentitySignaturePath));
  }
  return m;
}

}  // namespace tripline::agent
