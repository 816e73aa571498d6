// The instance as DescribeInstances showed it before isolation, kept as text in the describe
// step's `result` so a resumed isolation and a later release work from exactly what was recorded,
// never from a second look (which would see the isolation groups). One field per line, fields
// tab-separated and C-escaped, so tags and names with any bytes survive.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "platform/aws/ec2_client.h"

namespace tripline::collector {

std::string EncodeInstance(const aws::Instance& instance);
// InvalidArgument naming the line when `text` is not what EncodeInstance writes.
absl::StatusOr<aws::Instance> DecodeInstance(const std::string& text);

// The profile name of an instance-profile ARN ("arn:aws:iam::1:instance-profile/path/web" ->
// "web"); empty when `arn` is not one.
std::string InstanceProfileName(const std::string& arn);

}  // namespace tripline::collector
