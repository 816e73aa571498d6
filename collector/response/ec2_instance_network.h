// The real InstanceNetwork: aws::Ec2Client, aws::IamClient and aws::AutoScalingClient behind the
// response worker's small interface. Used only on the response worker's thread (the clients are
// thread-compatible).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "collector/config/collector_config.h"
#include "collector/response/isolation_worker.h"
#include "platform/aws/query_connection.h"

namespace tripline::collector {

struct AwsResponse {
  std::unique_ptr<InstanceNetwork> network;
  std::string region;
  std::string self_instance_id;  // this host's instance (IMDS); empty off EC2
};

// An AWS-backed InstanceNetwork for `aws` settings. Credentials come from the chain (environment,
// shared files and profile, container endpoint, IMDSv2 role; refreshed before they expire); the
// region from `aws.region`, else the chain. NotFound when no source has credentials;
// InvalidArgument for bad settings or a region nobody names.
absl::StatusOr<AwsResponse> MakeAwsResponse(const AwsConfig& aws);

// A Query connection to SNS for `topic_arn` (its region), with the same credential chain;
// `aws.endpoint`, when set, serves SNS too.
absl::StatusOr<std::unique_ptr<aws::QueryConnection>> MakeSnsConnection(
    const AwsConfig& aws, const std::string& topic_arn);

}  // namespace tripline::collector
