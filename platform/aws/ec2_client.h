// Clients for the parts of the AWS Query APIs that response actions use: EC2, IAM and Auto
// Scaling. Each is a QueryConnection (SigV4 by libcurl, POST to "/" with a form body, retries on
// throttling and 5xx) plus the parsing of the answers' XML with pugixml. AWS error codes and
// messages surface unchanged and every call reports its request id in CallInfo. Calls that change
// something take `dry_run` (EC2 only; DryRunOperation counts as success).
// Thread-compatible: one client per thread, or external locking.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "platform/aws/query_connection.h"

namespace tripline::aws {

// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optional AWS_SESSION_TOKEN from the environment.
// NotFound when the two required variables are not both set.
absl::StatusOr<Credentials> CredentialsFromEnvironment();

struct NetworkInterface {
  std::string interface_id;  // eni-...
  std::string vpc_id;
  std::string subnet_id;
  std::string private_ip;
  int device_index = 0;
  std::vector<std::string> group_ids;  // in the order EC2 lists them
  std::string public_ip;               // an associated public / Elastic IP, if any
  std::string eip_allocation_id;       // set when public_ip is an Elastic IP
  std::string eip_association_id;
};

struct Volume {
  std::string device_name;  // "/dev/xvda"
  std::string volume_id;
  bool delete_on_termination = false;
};

struct Instance {
  std::string instance_id;
  std::string state;  // "running", "stopped", ...
  std::string vpc_id;
  std::string iam_instance_profile_arn;
  std::vector<NetworkInterface> interfaces;
  std::vector<Volume> volumes;
  std::map<std::string, std::string> tags;
};

struct IamProfileAssociation {
  std::string association_id;  // iip-assoc-...
  std::string profile_arn;
};

// One attribute for ModifyInstanceAttribute (EC2 takes one per call).
struct InstanceAttributeChange {
  enum class Kind { kDisableApiTermination, kShutdownBehavior, kVolumeDeleteOnTermination };
  Kind kind = Kind::kDisableApiTermination;
  std::string value;        // "true"/"false", "stop"/"terminate"
  std::string device_name;  // kVolumeDeleteOnTermination only
};

struct ClientOptions {
  std::string region;       // required, e.g. "eu-west-1"
  std::string endpoint;     // default the service's regional endpoint; tests point it at loopback
  Credentials credentials;  // used when credential_source is not set
  CredentialSource credential_source;  // asked before every request when set
  long timeout_ms = 10000;             // per HTTP request
  std::string ca_file;                 // optional CA bundle for the endpoint's TLS
  // Answers longer than this fail with ResourceExhausted ("ResponseTooLarge").
  size_t max_response_bytes = 8 << 20;
  int max_attempts = 4;  // throttling and 5xx are retried up to this many requests in all
  long retry_base_ms = 100;
  long retry_max_ms = 5000;
};

class Ec2Client {
 public:
  using Options = ClientOptions;

  // InvalidArgument when region or credentials are missing or the endpoint is not http(s)://.
  static absl::StatusOr<std::unique_ptr<Ec2Client>> Create(Options options);
  ~Ec2Client();
  Ec2Client(const Ec2Client&) = delete;
  Ec2Client& operator=(const Ec2Client&) = delete;

  // DescribeInstances for one instance id. NotFound when EC2 does not know it.
  absl::StatusOr<Instance> DescribeInstance(const std::string& instance_id, CallInfo* info);

  // DescribeInstanceAttribute: the value of `attribute` ("disableApiTermination",
  // "instanceInitiatedShutdownBehavior").
  absl::StatusOr<std::string> DescribeInstanceAttribute(const std::string& instance_id,
                                                        const std::string& attribute,
                                                        CallInfo* info);

  // DescribeIamInstanceProfileAssociations for the instance: the associated profile, or an empty
  // association id when none is associated.
  absl::StatusOr<IamProfileAssociation> DescribeIamProfileAssociation(
      const std::string& instance_id, CallInfo* info);

  // DescribeSecurityGroups by vpc-id and group-name: the group id, or "" when there is none.
  absl::StatusOr<std::string> FindSecurityGroup(const std::string& vpc_id,
                                                const std::string& group_name, CallInfo* info);

  // CreateSecurityGroup tagged at creation; returns the new group id. A group of that name
  // already in the VPC is FailedPrecondition with error_code "InvalidGroup.Duplicate".
  absl::StatusOr<std::string> CreateSecurityGroup(const std::string& vpc_id,
                                                  const std::string& group_name,
                                                  const std::string& description,
                                                  const std::map<std::string, std::string>& tags,
                                                  bool dry_run, CallInfo* info);

  // AuthorizeSecurityGroupIngress of all traffic from 0.0.0.0/0 and ::/0. A rule already there
  // (InvalidPermission.Duplicate) counts as done.
  absl::Status AuthorizeIngressFromAnywhere(const std::string& group_id, bool dry_run,
                                            CallInfo* info);

  // RevokeSecurityGroupEgress of the default allow-all rule (all traffic to 0.0.0.0/0). A rule
  // already gone (InvalidPermission.NotFound) counts as done.
  absl::Status RevokeDefaultEgress(const std::string& group_id, bool dry_run, CallInfo* info);

  // ModifyNetworkInterfaceAttribute NetworkInterfaceId=eni, SecurityGroupId.N=groups: replaces the
  // interface's groups with exactly `group_ids`.
  absl::Status SetInterfaceSecurityGroups(const std::string& interface_id,
                                          const std::vector<std::string>& group_ids, CallInfo* info,
                                          bool dry_run = false);

  // ModifyInstanceAttribute with one attribute.
  absl::Status ModifyInstanceAttribute(const std::string& instance_id,
                                       const InstanceAttributeChange& change, bool dry_run,
                                       CallInfo* info);

  // CreateTags on one resource.
  absl::Status CreateTags(const std::string& resource_id,
                          const std::map<std::string, std::string>& tags, bool dry_run,
                          CallInfo* info);

  absl::Status DisassociateIamInstanceProfile(const std::string& association_id, bool dry_run,
                                              CallInfo* info);
  absl::Status AssociateIamInstanceProfile(const std::string& instance_id,
                                           const std::string& profile_arn, bool dry_run,
                                           CallInfo* info);

  // CreateSnapshots of every EBS volume of the instance, tagged; returns the snapshot ids.
  absl::StatusOr<std::vector<std::string>> CreateSnapshots(
      const std::string& instance_id, const std::string& description,
      const std::map<std::string, std::string>& tags, bool dry_run, CallInfo* info);

  // StopInstances of one instance.
  absl::Status StopInstance(const std::string& instance_id, bool dry_run, CallInfo* info);
  // DisassociateAddress of an Elastic IP association (eipassoc-...).
  absl::Status DisassociateAddress(const std::string& association_id, bool dry_run, CallInfo* info);
  // AssociateAddress of an Elastic IP allocation to an interface's private address; returns the
  // new association id.
  absl::StatusOr<std::string> AssociateAddress(const std::string& allocation_id,
                                               const std::string& interface_id,
                                               const std::string& private_ip, bool dry_run,
                                               CallInfo* info);

  // DescribeSnapshots of this account with tag `key`=`value`: their ids.
  absl::StatusOr<std::vector<std::string>> FindSnapshots(const std::string& key,
                                                         const std::string& value, CallInfo* info);

  // Errors: see QueryConnection::Call; arguments refused before sending are InvalidArgument
  // ("ClientValidation"). Secrets never appear in a Status, a CallInfo or a log line.

 private:
  explicit Ec2Client(std::unique_ptr<QueryConnection> connection);
  std::unique_ptr<QueryConnection> connection_;
};

// IAM (global; SigV4 region us-east-1, endpoint https://iam.amazonaws.com).
class IamClient {
 public:
  using Options = ClientOptions;  // region is ignored: IAM is signed for us-east-1
  static absl::StatusOr<std::unique_ptr<IamClient>> Create(Options options);
  ~IamClient();

  // GetInstanceProfile: the names of the profile's roles.
  absl::StatusOr<std::vector<std::string>> InstanceProfileRoles(const std::string& profile_name,
                                                                CallInfo* info);
  // PutRolePolicy: an inline policy (created or replaced).
  absl::Status PutRolePolicy(const std::string& role_name, const std::string& policy_name,
                             const std::string& policy_document, CallInfo* info);

 private:
  explicit IamClient(std::unique_ptr<QueryConnection> connection);
  std::unique_ptr<QueryConnection> connection_;
};

// Auto Scaling.
class AutoScalingClient {
 public:
  using Options = ClientOptions;
  static absl::StatusOr<std::unique_ptr<AutoScalingClient>> Create(Options options);
  ~AutoScalingClient();

  // DescribeAutoScalingInstances: the group the instance belongs to and its lifecycle state,
  // or empty strings when it is in none.
  struct Membership {
    std::string group_name;
    std::string lifecycle_state;  // "InService", "Standby", ...
  };
  absl::StatusOr<Membership> DescribeMembership(const std::string& instance_id, CallInfo* info);
  // EnterStandby (desired capacity decremented, so no replacement is launched) / ExitStandby.
  absl::Status EnterStandby(const std::string& group_name, const std::string& instance_id,
                            CallInfo* info);
  absl::Status ExitStandby(const std::string& group_name, const std::string& instance_id,
                           CallInfo* info);

 private:
  explicit AutoScalingClient(std::unique_ptr<QueryConnection> connection);
  std::unique_ptr<QueryConnection> connection_;
};

}  // namespace tripline::aws
