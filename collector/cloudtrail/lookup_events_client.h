// The real LookupEventsSource: CloudTrail's LookupEvents over the JSON 1.1 protocol
// (X-Amz-Target com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents), signed with
// SigV4 by the shared AWS connection (aws::QueryConnection::CallJson) with the collector's
// credential chain; ThrottlingException and 5xx are retried there with jittered backoff.
// Thread-compatible: one per poller thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "collector/cloudtrail/cloudtrail_poller.h"
#include "collector/config/collector_config.h"
#include "platform/aws/query_connection.h"

namespace tripline::collector {

inline constexpr char kLookupEventsTarget[] =
    "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents";

class LookupEventsClient : public LookupEventsSource {
 public:
  explicit LookupEventsClient(std::unique_ptr<aws::QueryConnection> connection)
      : connection_(std::move(connection)) {}
  absl::StatusOr<std::string> LookupEvents(int64_t start_ns, int64_t end_ns,
                                           const std::string& next_token,
                                           int max_results) override;

 private:
  std::unique_ptr<aws::QueryConnection> connection_;
};

// The JSON body of one LookupEvents request (StartTime/EndTime in epoch seconds).
std::string LookupEventsRequestBody(int64_t start_ns, int64_t end_ns,
                                    const std::string& next_token, int max_results);

// A LookupEventsClient for `region`: `cloudtrail.endpoint` when set, else
// https://cloudtrail.REGION.amazonaws.com; credentials from the chain (environment, shared files,
// container, IMDS role). NotFound when no source has credentials.
absl::StatusOr<std::unique_ptr<LookupEventsSource>> MakeLookupEventsClient(
    const AwsConfig& aws, const CloudTrailConfig& cloudtrail, const std::string& region);

}  // namespace tripline::collector
