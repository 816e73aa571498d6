#include "collector/response/ec2_instance_network.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "platform/aws/credentials.h"
#include "platform/aws/ec2_client.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {
namespace {

class AwsInstanceNetwork : public InstanceNetwork {
 public:
  AwsInstanceNetwork(std::unique_ptr<aws::Ec2Client> ec2, std::unique_ptr<aws::IamClient> iam,
                     std::unique_ptr<aws::AutoScalingClient> autoscaling)
      : ec2_(std::move(ec2)), iam_(std::move(iam)), autoscaling_(std::move(autoscaling)) {}

  absl::StatusOr<aws::Instance> DescribeInstance(const std::string& id,
                                                 aws::CallInfo* info) override {
    return ec2_->DescribeInstance(id, info);
  }
  absl::StatusOr<std::string> DescribeInstanceAttribute(const std::string& id,
                                                        const std::string& attribute,
                                                        aws::CallInfo* info) override {
    return ec2_->DescribeInstanceAttribute(id, attribute, info);
  }
  absl::StatusOr<aws::IamProfileAssociation> DescribeIamProfileAssociation(
      const std::string& id, aws::CallInfo* info) override {
    return ec2_->DescribeIamProfileAssociation(id, info);
  }
  absl::StatusOr<aws::AutoScalingClient::Membership> DescribeAutoScaling(
      const std::string& id, aws::CallInfo* info) override {
    return autoscaling_->DescribeMembership(id, info);
  }
  absl::StatusOr<std::string> FindSecurityGroup(const std::string& vpc, const std::string& name,
                                                aws::CallInfo* info) override {
    return ec2_->FindSecurityGroup(vpc, name, info);
  }
  absl::StatusOr<std::string> CreateSecurityGroup(const std::string& vpc, const std::string& name,
                                                  const std::string& description,
                                                  const std::map<std::string, std::string>& tags,
                                                  bool dry_run, aws::CallInfo* info) override {
    return ec2_->CreateSecurityGroup(vpc, name, description, tags, dry_run, info);
  }
  absl::Status AuthorizeIngressFromAnywhere(const std::string& group, bool dry_run,
                                            aws::CallInfo* info) override {
    return ec2_->AuthorizeIngressFromAnywhere(group, dry_run, info);
  }
  absl::Status RevokeDefaultEgress(const std::string& group, bool dry_run,
                                   aws::CallInfo* info) override {
    return ec2_->RevokeDefaultEgress(group, dry_run, info);
  }
  absl::Status SetInterfaceSecurityGroups(const std::string& eni,
                                          const std::vector<std::string>& groups, bool dry_run,
                                          aws::CallInfo* info) override {
    return ec2_->SetInterfaceSecurityGroups(eni, groups, info, dry_run);
  }
  absl::Status ModifyInstanceAttribute(const std::string& id,
                                       const aws::InstanceAttributeChange& change, bool dry_run,
                                       aws::CallInfo* info) override {
    return ec2_->ModifyInstanceAttribute(id, change, dry_run, info);
  }
  absl::Status CreateTags(const std::string& resource,
                          const std::map<std::string, std::string>& tags, bool dry_run,
                          aws::CallInfo* info) override {
    return ec2_->CreateTags(resource, tags, dry_run, info);
  }
  absl::Status DisassociateIamInstanceProfile(const std::string& association, bool dry_run,
                                              aws::CallInfo* info) override {
    return ec2_->DisassociateIamInstanceProfile(association, dry_run, info);
  }
  absl::Status AssociateIamInstanceProfile(const std::string& id, const std::string& arn,
                                           bool dry_run, aws::CallInfo* info) override {
    return ec2_->AssociateIamInstanceProfile(id, arn, dry_run, info);
  }
  absl::StatusOr<std::vector<std::string>> CreateSnapshots(
      const std::string& id, const std::string& description,
      const std::map<std::string, std::string>& tags, bool dry_run, aws::CallInfo* info) override {
    return ec2_->CreateSnapshots(id, description, tags, dry_run, info);
  }
  absl::Status StopInstance(const std::string& id, bool dry_run, aws::CallInfo* info) override {
    return ec2_->StopInstance(id, dry_run, info);
  }
  absl::Status DisassociateAddress(const std::string& association, bool dry_run,
                                   aws::CallInfo* info) override {
    return ec2_->DisassociateAddress(association, dry_run, info);
  }
  absl::StatusOr<std::string> AssociateAddress(const std::string& allocation,
                                               const std::string& eni, const std::string& ip,
                                               bool dry_run, aws::CallInfo* info) override {
    return ec2_->AssociateAddress(allocation, eni, ip, dry_run, info);
  }
  absl::StatusOr<std::vector<std::string>> FindSnapshots(const std::string& key,
                                                         const std::string& value,
                                                         aws::CallInfo* info) override {
    return ec2_->FindSnapshots(key, value, info);
  }
  absl::StatusOr<std::vector<std::string>> InstanceProfileRoles(const std::string& profile,
                                                                aws::CallInfo* info) override {
    return iam_->InstanceProfileRoles(profile, info);
  }
  absl::Status PutRolePolicy(const std::string& role, const std::string& name,
                             const std::string& document, aws::CallInfo* info) override {
    return iam_->PutRolePolicy(role, name, document, info);
  }
  absl::Status EnterStandby(const std::string& group, const std::string& id,
                            aws::CallInfo* info) override {
    return autoscaling_->EnterStandby(group, id, info);
  }
  absl::Status ExitStandby(const std::string& group, const std::string& id,
                           aws::CallInfo* info) override {
    return autoscaling_->ExitStandby(group, id, info);
  }

 private:
  std::unique_ptr<aws::Ec2Client> ec2_;
  std::unique_ptr<aws::IamClient> iam_;
  std::unique_ptr<aws::AutoScalingClient> autoscaling_;
};

}  // namespace

absl::StatusOr<AwsResponse> MakeAwsResponse(const AwsConfig& aws) {
  auto chain = std::make_shared<aws::CredentialChain>(aws::CredentialChain::Options{});
  // Fail early, with what was tried, when there are no credentials anywhere; a source that is
  // only unavailable now (IMDS busy) is asked again at each call.
  if (absl::StatusOr<aws::TemporaryCredentials> c = chain->Get();
      !c.ok() && (absl::IsNotFound(c.status()) || absl::IsInvalidArgument(c.status()))) {
    return c.status();
  }
  AwsResponse out;
  out.region = aws.region;
  if (out.region.empty()) {
    absl::StatusOr<std::string> region = chain->Region();
    if (!region.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("aws.region is not set and no AWS_REGION, profile region or IMDS says it: ",
                       region.status().message()));
    }
    out.region = *region;
  }
  if (absl::StatusOr<std::string> id = chain->InstanceId(); id.ok()) {
    out.self_instance_id = *id;
  } else {
    spdlog::debug("aws: not on EC2 or IMDS unreachable ({}): no own instance id",
                  std::string(id.status().message()));
  }
  aws::ClientOptions options;
  options.region = out.region;
  options.ca_file = aws.ca_file;
  options.credential_source = [chain]() -> absl::StatusOr<aws::Credentials> {
    ASSIGN_OR_RETURN(aws::TemporaryCredentials t, chain->Get());
    return t.credentials;
  };
  options.max_attempts = aws.max_attempts;
  options.retry_base_ms = aws.retry_base_ms;

  aws::ClientOptions ec2 = options;
  ec2.endpoint = aws.endpoint;
  ASSIGN_OR_RETURN(std::unique_ptr<aws::Ec2Client> ec2_client,
                   aws::Ec2Client::Create(std::move(ec2)));
  aws::ClientOptions iam = options;
  iam.endpoint = aws.iam_endpoint;
  ASSIGN_OR_RETURN(std::unique_ptr<aws::IamClient> iam_client,
                   aws::IamClient::Create(std::move(iam)));
  aws::ClientOptions autoscaling = options;
  autoscaling.endpoint = aws.autoscaling_endpoint;
  ASSIGN_OR_RETURN(std::unique_ptr<aws::AutoScalingClient> autoscaling_client,
                   aws::AutoScalingClient::Create(std::move(autoscaling)));
  out.network = std::make_unique<AwsInstanceNetwork>(std::move(ec2_client), std::move(iam_client),
                                                     std::move(autoscaling_client));
  return out;
}

absl::StatusOr<std::unique_ptr<aws::QueryConnection>> MakeSnsConnection(
    const AwsConfig& aws, const std::string& topic_arn) {
  // arn:aws:sns:REGION:ACCOUNT:NAME
  const std::vector<std::string> parts = absl::StrSplit(topic_arn, ':');
  if (parts.size() != 6 || parts[2] != "sns" || parts[3].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", Printable(topic_arn), "' is not an SNS topic ARN"));
  }
  auto chain = std::make_shared<aws::CredentialChain>(aws::CredentialChain::Options{});
  aws::QueryConnection::Options o;
  o.service = "sns";
  o.api_version = "2010-03-31";
  o.region = parts[3];
  o.endpoint = aws.endpoint.empty() ? absl::StrCat("https://sns.", parts[3], ".amazonaws.com")
                                    : aws.endpoint;
  o.ca_file = aws.ca_file;
  o.max_attempts = aws.max_attempts;
  o.retry_base_ms = aws.retry_base_ms;
  o.credentials = [chain]() -> absl::StatusOr<aws::Credentials> {
    ASSIGN_OR_RETURN(aws::TemporaryCredentials t, chain->Get());
    return t.credentials;
  };
  return aws::QueryConnection::Create(std::move(o));
}

}  // namespace tripline::collector
