#include "collector/response/ec2_instance_network.h"

#include "platform/runtime/status_macros.h"

namespace tripline::collector {
namespace {

class Ec2InstanceNetwork : public InstanceNetwork {
 public:
  explicit Ec2InstanceNetwork(std::unique_ptr<aws::Ec2Client> client)
      : client_(std::move(client)) {}

  absl::StatusOr<aws::Instance> DescribeInstance(const std::string& instance_id,
                                                 aws::CallInfo* info) override {
    return client_->DescribeInstance(instance_id, info);
  }
  absl::Status SetInterfaceSecurityGroups(const std::string& interface_id,
                                          const std::vector<std::string>& group_ids,
                                          aws::CallInfo* info) override {
    return client_->SetInterfaceSecurityGroups(interface_id, group_ids, info);
  }

 private:
  std::unique_ptr<aws::Ec2Client> client_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<InstanceNetwork>> MakeEc2InstanceNetwork(const AwsConfig& aws) {
  ASSIGN_OR_RETURN(aws::Credentials credentials, aws::CredentialsFromEnvironment());
  aws::Ec2Client::Options options;
  options.region = aws.region;
  options.endpoint = aws.endpoint;
  options.ca_file = aws.ca_file;
  options.credentials = std::move(credentials);
  ASSIGN_OR_RETURN(std::unique_ptr<aws::Ec2Client> client,
                   aws::Ec2Client::Create(std::move(options)));
  return std::unique_ptr<InstanceNetwork>(new Ec2InstanceNetwork(std::move(client)));
}

}  // namespace tripline::collector
