// The real InstanceNetwork: aws::Ec2Client, aws::IamClient and aws::AutoScalingClient behind the
// response worker's small interface. Used only on the response worker's thread (the clients are
// thread-compatible).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "collector/config/collector_config.h"
#include "collector/response/isolation_worker.h"

namespace tripline::collector {

// An AWS-backed InstanceNetwork for `aws` settings, with credentials from the environment.
// NotFound when the AWS credential variables are not set; InvalidArgument for bad settings.
absl::StatusOr<std::unique_ptr<InstanceNetwork>> MakeEc2InstanceNetwork(const AwsConfig& aws);

}  // namespace tripline::collector
