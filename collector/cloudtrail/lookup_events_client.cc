#include "collector/cloudtrail/lookup_events_client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "platform/aws/credentials.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {

std::string LookupEventsRequestBody(int64_t start_ns, int64_t end_ns,
                                    const std::string& next_token, int max_results) {
  nlohmann::json body = {{"StartTime", start_ns / 1000000000},
                         {"EndTime", end_ns / 1000000000},
                         {"MaxResults", max_results}};
  if (!next_token.empty()) body["NextToken"] = next_token;
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<std::string> LookupEventsClient::LookupEvents(int64_t start_ns, int64_t end_ns,
                                                             const std::string& next_token,
                                                             int max_results) {
  aws::CallInfo info;
  std::string response;
  absl::Status st =
      connection_->CallJson(kLookupEventsTarget,
                            LookupEventsRequestBody(start_ns, end_ns, next_token, max_results),
                            &info, &response);
  if (!st.ok()) {
    spdlog::warn("cloudtrail: LookupEvents region={} http_status={} error_code={} attempts={}",
                 connection_->options().region, info.http_status, Printable(info.error_code, 128),
                 info.attempts);
    return st;
  }
  return response;
}

absl::StatusOr<std::unique_ptr<LookupEventsSource>> MakeLookupEventsClient(
    const AwsConfig& aws, const CloudTrailConfig& cloudtrail, const std::string& region) {
  auto chain = std::make_shared<aws::CredentialChain>(aws::CredentialChain::Options{});
  if (absl::StatusOr<aws::TemporaryCredentials> c = chain->Get();
      !c.ok() && (absl::IsNotFound(c.status()) || absl::IsInvalidArgument(c.status()))) {
    return c.status();
  }
  aws::QueryConnection::Options o;
  o.service = "cloudtrail";
  o.api_version = "2013-11-01";
  o.region = region;
  o.endpoint = cloudtrail.endpoint.empty()
                   ? absl::StrCat("https://cloudtrail.", region, ".amazonaws.com")
                   : cloudtrail.endpoint;
  o.ca_file = aws.ca_file;
  o.max_attempts = aws.max_attempts;
  o.retry_base_ms = aws.retry_base_ms;
  o.credentials = [chain]() -> absl::StatusOr<aws::Credentials> {
    ASSIGN_OR_RETURN(aws::TemporaryCredentials t, chain->Get());
    return t.credentials;
  };
  ASSIGN_OR_RETURN(std::unique_ptr<aws::QueryConnection> connection,
                   aws::QueryConnection::Create(std::move(o)));
  return std::unique_ptr<LookupEventsSource>(
      std::make_unique<LookupEventsClient>(std::move(connection)));
}

}  // namespace tripline::collector
