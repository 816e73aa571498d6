#include "platform/aws/ec2_client.h"

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::aws {
namespace {

bool HasControlBytes(std::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

std::string ChildText(const pugi::xml_node& node, const char* name) {
  return node.child(name).text().as_string();
}

// Refuses an empty or control-character argument before anything is sent.
absl::Status Validate(CallInfo* info, const std::string& action,
                      std::initializer_list<std::pair<const char*, const std::string*>> args) {
  for (const auto& [what, value] : args) {
    if (value->empty() || HasControlBytes(*value)) {
      *info = CallInfo();
      info->action = action;
      return FailCall(info, absl::StatusCode::kInvalidArgument, "ClientValidation",
                      absl::StrCat(what, " is empty or has control characters"));
    }
  }
  return absl::OkStatus();
}

absl::Status ExpectReturnTrue(CallInfo* info, const pugi::xml_document& doc) {
  if (info->dry_run) return absl::OkStatus();
  const std::string ret = ChildText(doc.document_element(), "return");
  if (ret != "true") {
    return FailCall(info, absl::StatusCode::kInternal, "MalformedResponse",
                    absl::StrCat("<return> is '", Printable(ret, 32), "', not 'true'"));
  }
  return absl::OkStatus();
}

void AddTags(Params* params, const std::string& prefix,
             const std::map<std::string, std::string>& tags) {
  int n = 1;
  for (const auto& [key, value] : tags) {
    params->emplace_back(absl::StrCat(prefix, n, ".Key"), key);
    params->emplace_back(absl::StrCat(prefix, n, ".Value"), value);
    ++n;
  }
}

absl::StatusOr<std::unique_ptr<QueryConnection>> Connect(ClientOptions options,
                                                         const std::string& service,
                                                         const std::string& version,
                                                         const std::string& signing_region,
                                                         const std::string& default_endpoint) {
  CredentialSource source = options.credential_source;
  if (!source) {
    const Credentials& creds = options.credentials;
    if (creds.access_key_id.empty() || creds.secret_access_key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(absl::AsciiStrToUpper(service),
                                                     " credentials: access key id or secret key "
                                                     "missing"));
    }
    if (HasControlBytes(creds.access_key_id) || HasControlBytes(creds.secret_access_key) ||
        HasControlBytes(creds.session_token)) {
      return absl::InvalidArgumentError(absl::StrCat(
          absl::AsciiStrToUpper(service), " credentials: control characters in a credential"));
    }
    source = [creds]() -> absl::StatusOr<Credentials> { return creds; };
  }
  QueryConnection::Options q;
  q.service = service;
  q.api_version = version;
  q.region = signing_region;
  q.endpoint = options.endpoint.empty() ? default_endpoint : options.endpoint;
  q.credentials = std::move(source);
  q.timeout_ms = options.timeout_ms;
  q.ca_file = options.ca_file;
  q.max_response_bytes = options.max_response_bytes;
  q.max_attempts = options.max_attempts;
  q.retry_base_ms = options.retry_base_ms;
  q.retry_max_ms = options.retry_max_ms;
  return QueryConnection::Create(std::move(q));
}

}  // namespace

absl::StatusOr<Credentials> CredentialsFromEnvironment() {
  auto get = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v == nullptr ? std::string() : std::string(v);
  };
  Credentials creds;
  creds.access_key_id = get("AWS_ACCESS_KEY_ID");
  creds.secret_access_key = get("AWS_SECRET_ACCESS_KEY");
  creds.session_token = get("AWS_SESSION_TOKEN");
  if (creds.access_key_id.empty() || creds.secret_access_key.empty()) {
    return absl::NotFoundError(
        "AWS credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set");
  }
  return creds;
}

// --- EC2 ----------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Ec2Client>> Ec2Client::Create(Options options) {
  const std::string region = options.region;
  if (region.empty() || !std::all_of(region.begin(), region.end(), [](char c) {
        return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-';
      })) {
    return absl::InvalidArgumentError(
        absl::StrCat("EC2 region '", Printable(region), "': expected e.g. eu-west-1"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<QueryConnection> c,
                   Connect(std::move(options), "ec2", "2016-11-15", region,
                           absl::StrCat("https://ec2.", region, ".amazonaws.com")));
  return std::unique_ptr<Ec2Client>(new Ec2Client(std::move(c)));
}

Ec2Client::Ec2Client(std::unique_ptr<QueryConnection> connection)
    : connection_(std::move(connection)) {}
Ec2Client::~Ec2Client() = default;

absl::StatusOr<Instance> Ec2Client::DescribeInstance(const std::string& instance_id,
                                                     CallInfo* info) {
  CallInfo local;
  if (info == nullptr) info = &local;
  RETURN_IF_ERROR(Validate(info, "DescribeInstances", {{"instance id", &instance_id}}));
  pugi::xml_document doc;
  RETURN_IF_ERROR(
      connection_->Call("DescribeInstances", {{"InstanceId.1", instance_id}}, false, info, &doc));

  const pugi::xml_node root = doc.document_element();
  for (pugi::xml_node reservation : root.child("reservationSet").children("item")) {
    for (pugi::xml_node item : reservation.child("instancesSet").children("item")) {
      if (ChildText(item, "instanceId") != instance_id) continue;
      Instance inst;
      inst.instance_id = instance_id;
      inst.state = item.child("instanceState").child("name").text().as_string();
      inst.vpc_id = ChildText(item, "vpcId");
      inst.iam_instance_profile_arn =
          item.child("iamInstanceProfile").child("arn").text().as_string();
      for (pugi::xml_node tag : item.child("tagSet").children("item")) {
        inst.tags[ChildText(tag, "key")] = ChildText(tag, "value");
      }
      for (pugi::xml_node bdm : item.child("blockDeviceMapping").children("item")) {
        pugi::xml_node ebs = bdm.child("ebs");
        if (!ebs) continue;
        Volume v;
        v.device_name = ChildText(bdm, "deviceName");
        v.volume_id = ChildText(ebs, "volumeId");
        v.delete_on_termination = ChildText(ebs, "deleteOnTermination") == "true";
        if (v.device_name.empty() || v.volume_id.empty()) {
          return FailCall(info, absl::StatusCode::kInternal, "MalformedResponse",
                          "block device mapping without a device name or volume id");
        }
        inst.volumes.push_back(std::move(v));
      }
      for (pugi::xml_node eni_node : item.child("networkInterfaceSet").children("item")) {
        NetworkInterface eni;
        eni.interface_id = ChildText(eni_node, "networkInterfaceId");
        eni.vpc_id = ChildText(eni_node, "vpcId");
        eni.subnet_id = ChildText(eni_node, "subnetId");
        eni.private_ip = ChildText(eni_node, "privateIpAddress");
        const std::string index =
            eni_node.child("attachment").child("deviceIndex").text().as_string();
        if (eni.interface_id.empty() || !absl::SimpleAtoi(index, &eni.device_index) ||
            eni.device_index < 0) {
          return FailCall(info, absl::StatusCode::kInternal, "MalformedResponse",
                          absl::StrCat("network interface without an id or device index in ",
                                       Printable(instance_id)));
        }
        for (pugi::xml_node group : eni_node.child("groupSet").children("item")) {
          eni.group_ids.push_back(ChildText(group, "groupId"));
        }
        pugi::xml_node assoc = eni_node.child("association");
        eni.public_ip = ChildText(assoc, "publicIp");
        eni.eip_allocation_id = ChildText(assoc, "allocationId");
        eni.eip_association_id = ChildText(assoc, "associationId");
        inst.interfaces.push_back(std::move(eni));
      }
      return inst;
    }
  }
  return FailCall(info, absl::StatusCode::kNotFound, "InstanceNotInResponse",
                  absl::StrCat("instance ", Printable(instance_id), " is not in the answer"));
}

absl::StatusOr<std::string> Ec2Client::DescribeInstanceAttribute(const std::string& instance_id,
                                                                 const std::string& attribute,
                                                                 CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "DescribeInstanceAttribute",
                           {{"instance id", &instance_id}, {"attribute", &attribute}}));
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call("DescribeInstanceAttribute",
                                    {{"InstanceId", instance_id}, {"Attribute", attribute}}, false,
                                    info, &doc));
  pugi::xml_node value = doc.document_element().child(attribute.c_str()).child("value");
  if (!value) {
    return FailCall(info, absl::StatusCode::kInternal, "MalformedResponse",
                    absl::StrCat("no <", attribute, "><value> in the answer"));
  }
  return std::string(value.text().as_string());
}

absl::StatusOr<IamProfileAssociation> Ec2Client::DescribeIamProfileAssociation(
    const std::string& instance_id, CallInfo* info) {
  RETURN_IF_ERROR(
      Validate(info, "DescribeIamInstanceProfileAssociations", {{"instance id", &instance_id}}));
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call("DescribeIamInstanceProfileAssociations",
                                    {{"Filter.1.Name", "instance-id"},
                                     {"Filter.1.Value.1", instance_id},
                                     {"Filter.2.Name", "state"},
                                     {"Filter.2.Value.1", "associated"}},
                                    false, info, &doc));
  IamProfileAssociation out;
  for (pugi::xml_node item :
       doc.document_element().child("iamInstanceProfileAssociationSet").children("item")) {
    if (ChildText(item, "instanceId") != instance_id) continue;
    out.association_id = ChildText(item, "associationId");
    out.profile_arn = item.child("iamInstanceProfile").child("arn").text().as_string();
  }
  return out;
}

absl::StatusOr<std::string> Ec2Client::FindSecurityGroup(const std::string& vpc_id,
                                                         const std::string& group_name,
                                                         CallInfo* info) {
  RETURN_IF_ERROR(
      Validate(info, "DescribeSecurityGroups", {{"vpc id", &vpc_id}, {"group name", &group_name}}));
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call("DescribeSecurityGroups",
                                    {{"Filter.1.Name", "vpc-id"},
                                     {"Filter.1.Value.1", vpc_id},
                                     {"Filter.2.Name", "group-name"},
                                     {"Filter.2.Value.1", group_name}},
                                    false, info, &doc));
  for (pugi::xml_node item : doc.document_element().child("securityGroupInfo").children("item")) {
    if (ChildText(item, "groupName") == group_name && ChildText(item, "vpcId") == vpc_id) {
      return ChildText(item, "groupId");
    }
  }
  return std::string();
}

absl::StatusOr<std::string> Ec2Client::CreateSecurityGroup(
    const std::string& vpc_id, const std::string& group_name, const std::string& description,
    const std::map<std::string, std::string>& tags, bool dry_run, CallInfo* info) {
  RETURN_IF_ERROR(
      Validate(info, "CreateSecurityGroup",
               {{"vpc id", &vpc_id}, {"group name", &group_name}, {"description", &description}}));
  Params params = {{"VpcId", vpc_id},
                   {"GroupName", group_name},
                   {"GroupDescription", description},
                   {"TagSpecification.1.ResourceType", "security-group"}};
  AddTags(&params, "TagSpecification.1.Tag.", tags);
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call("CreateSecurityGroup", params, dry_run, info, &doc));
  if (info->dry_run) return std::string();
  std::string id = ChildText(doc.document_element(), "groupId");
  if (!id.starts_with("sg-")) {
    return FailCall(info, absl::StatusCode::kInternal, "MalformedResponse",
                    "CreateSecurityGroup answer without a groupId");
  }
  return id;
}

absl::Status Ec2Client::AuthorizeIngressFromAnywhere(const std::string& group_id, bool dry_run,
                                                     CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "AuthorizeSecurityGroupIngress", {{"group id", &group_id}}));
  pugi::xml_document doc;
  absl::Status st = connection_->Call("AuthorizeSecurityGroupIngress",
                                      {{"GroupId", group_id},
                                       {"IpPermissions.1.IpProtocol", "-1"},
                                       {"IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"},
                                       {"IpPermissions.1.Ipv6Ranges.1.CidrIpv6", "::/0"}},
                                      dry_run, info, &doc);
  if (!st.ok() && info->error_code == "InvalidPermission.Duplicate") return absl::OkStatus();
  RETURN_IF_ERROR(st);
  return ExpectReturnTrue(info, doc);
}

absl::Status Ec2Client::RevokeDefaultEgress(const std::string& group_id, bool dry_run,
                                            CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "RevokeSecurityGroupEgress", {{"group id", &group_id}}));
  pugi::xml_document doc;
  absl::Status st = connection_->Call("RevokeSecurityGroupEgress",
                                      {{"GroupId", group_id},
                                       {"IpPermissions.1.IpProtocol", "-1"},
                                       {"IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"}},
                                      dry_run, info, &doc);
  if (!st.ok() && info->error_code == "InvalidPermission.NotFound") return absl::OkStatus();
  RETURN_IF_ERROR(st);
  return ExpectReturnTrue(info, doc);
}

absl::Status Ec2Client::SetInterfaceSecurityGroups(const std::string& interface_id,
                                                   const std::vector<std::string>& group_ids,
                                                   CallInfo* info, bool dry_run) {
  CallInfo local;
  if (info == nullptr) info = &local;
  const std::string action = "ModifyNetworkInterfaceAttribute";
  if (interface_id.empty() || group_ids.empty()) {
    *info = CallInfo();
    info->action = action;
    return FailCall(info, absl::StatusCode::kInvalidArgument, "ClientValidation",
                    "an interface id and at least one security group are required");
  }
  Params params = {{"NetworkInterfaceId", interface_id}};
  for (size_t i = 0; i < group_ids.size(); ++i) {
    params.emplace_back(absl::StrCat("SecurityGroupId.", i + 1), group_ids[i]);
  }
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call(action, params, dry_run, info, &doc));
  return ExpectReturnTrue(info, doc);
}

absl::Status Ec2Client::ModifyInstanceAttribute(const std::string& instance_id,
                                                const InstanceAttributeChange& change, bool dry_run,
                                                CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "ModifyInstanceAttribute",
                           {{"instance id", &instance_id}, {"value", &change.value}}));
  Params params = {{"InstanceId", instance_id}};
  switch (change.kind) {
    case InstanceAttributeChange::Kind::kDisableApiTermination:
      params.emplace_back("DisableApiTermination.Value", change.value);
      break;
    case InstanceAttributeChange::Kind::kShutdownBehavior:
      params.emplace_back("InstanceInitiatedShutdownBehavior.Value", change.value);
      break;
    case InstanceAttributeChange::Kind::kVolumeDeleteOnTermination:
      RETURN_IF_ERROR(
          Validate(info, "ModifyInstanceAttribute", {{"device name", &change.device_name}}));
      params.emplace_back("BlockDeviceMapping.1.DeviceName", change.device_name);
      params.emplace_back("BlockDeviceMapping.1.Ebs.DeleteOnTermination", change.value);
      break;
  }
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call("ModifyInstanceAttribute", params, dry_run, info, &doc));
  return ExpectReturnTrue(info, doc);
}

absl::Status Ec2Client::CreateTags(const std::string& resource_id,
                                   const std::map<std::string, std::string>& tags, bool dry_run,
                                   CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "CreateTags", {{"resource id", &resource_id}}));
  Params params = {{"ResourceId.1", resource_id}};
  AddTags(&params, "Tag.", tags);
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call("CreateTags", params, dry_run, info, &doc));
  return ExpectReturnTrue(info, doc);
}

absl::Status Ec2Client::DisassociateIamInstanceProfile(const std::string& association_id,
                                                       bool dry_run, CallInfo* info) {
  RETURN_IF_ERROR(
      Validate(info, "DisassociateIamInstanceProfile", {{"association id", &association_id}}));
  pugi::xml_document doc;
  return connection_->Call("DisassociateIamInstanceProfile", {{"AssociationId", association_id}},
                           dry_run, info, &doc);
}

absl::Status Ec2Client::AssociateIamInstanceProfile(const std::string& instance_id,
                                                    const std::string& profile_arn, bool dry_run,
                                                    CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "AssociateIamInstanceProfile",
                           {{"instance id", &instance_id}, {"profile arn", &profile_arn}}));
  pugi::xml_document doc;
  return connection_->Call("AssociateIamInstanceProfile",
                           {{"InstanceId", instance_id}, {"IamInstanceProfile.Arn", profile_arn}},
                           dry_run, info, &doc);
}

absl::StatusOr<std::vector<std::string>> Ec2Client::CreateSnapshots(
    const std::string& instance_id, const std::string& description,
    const std::map<std::string, std::string>& tags, bool dry_run, CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "CreateSnapshots", {{"instance id", &instance_id}}));
  Params params = {{"InstanceSpecification.InstanceId", instance_id},
                   {"Description", description},
                   {"CopyTagsFromSource", "volume"},
                   {"TagSpecification.1.ResourceType", "snapshot"}};
  AddTags(&params, "TagSpecification.1.Tag.", tags);
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call("CreateSnapshots", params, dry_run, info, &doc));
  std::vector<std::string> ids;
  for (pugi::xml_node item : doc.document_element().child("snapshotSet").children("item")) {
    ids.push_back(ChildText(item, "snapshotId"));
  }
  return ids;
}

absl::Status Ec2Client::StopInstance(const std::string& instance_id, bool dry_run, CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "StopInstances", {{"instance id", &instance_id}}));
  pugi::xml_document doc;
  return connection_->Call("StopInstances", {{"InstanceId.1", instance_id}}, dry_run, info, &doc);
}

absl::Status Ec2Client::DisassociateAddress(const std::string& association_id, bool dry_run,
                                            CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "DisassociateAddress", {{"association id", &association_id}}));
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call("DisassociateAddress", {{"AssociationId", association_id}},
                                    dry_run, info, &doc));
  return ExpectReturnTrue(info, doc);
}

absl::StatusOr<std::string> Ec2Client::AssociateAddress(const std::string& allocation_id,
                                                        const std::string& interface_id,
                                                        const std::string& private_ip, bool dry_run,
                                                        CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "AssociateAddress",
                           {{"allocation id", &allocation_id}, {"interface id", &interface_id}}));
  Params params = {{"AllocationId", allocation_id}, {"NetworkInterfaceId", interface_id}};
  if (!private_ip.empty()) params.emplace_back("PrivateIpAddress", private_ip);
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call("AssociateAddress", params, dry_run, info, &doc));
  return ChildText(doc.document_element(), "associationId");
}

absl::StatusOr<std::vector<std::string>> Ec2Client::FindSnapshots(const std::string& key,
                                                                  const std::string& value,
                                                                  CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "DescribeSnapshots", {{"tag key", &key}, {"tag value", &value}}));
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call("DescribeSnapshots",
                                    {{"Owner.1", "self"},
                                     {"Filter.1.Name", absl::StrCat("tag:", key)},
                                     {"Filter.1.Value.1", value}},
                                    false, info, &doc));
  std::vector<std::string> ids;
  for (pugi::xml_node item : doc.document_element().child("snapshotSet").children("item")) {
    ids.push_back(ChildText(item, "snapshotId"));
  }
  return ids;
}

// --- IAM ----------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<IamClient>> IamClient::Create(Options options) {
  ASSIGN_OR_RETURN(
      std::unique_ptr<QueryConnection> c,
      Connect(std::move(options), "iam", "2010-05-08", "us-east-1", "https://iam.amazonaws.com"));
  return std::unique_ptr<IamClient>(new IamClient(std::move(c)));
}
IamClient::IamClient(std::unique_ptr<QueryConnection> connection)
    : connection_(std::move(connection)) {}
IamClient::~IamClient() = default;

absl::StatusOr<std::vector<std::string>> IamClient::InstanceProfileRoles(
    const std::string& profile_name, CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "GetInstanceProfile", {{"profile name", &profile_name}}));
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call("GetInstanceProfile", {{"InstanceProfileName", profile_name}},
                                    false, info, &doc));
  std::vector<std::string> roles;
  for (pugi::xml_node member : doc.document_element()
                                   .child("GetInstanceProfileResult")
                                   .child("InstanceProfile")
                                   .child("Roles")
                                   .children("member")) {
    roles.push_back(ChildText(member, "RoleName"));
  }
  return roles;
}

absl::Status IamClient::PutRolePolicy(const std::string& role_name, const std::string& policy_name,
                                      const std::string& policy_document, CallInfo* info) {
  RETURN_IF_ERROR(
      Validate(info, "PutRolePolicy", {{"role name", &role_name}, {"policy name", &policy_name}}));
  pugi::xml_document doc;
  return connection_->Call(
      "PutRolePolicy",
      {{"RoleName", role_name}, {"PolicyName", policy_name}, {"PolicyDocument", policy_document}},
      false, info, &doc);
}

// --- Auto Scaling -------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<AutoScalingClient>> AutoScalingClient::Create(Options options) {
  const std::string region = options.region;
  ASSIGN_OR_RETURN(std::unique_ptr<QueryConnection> c,
                   Connect(std::move(options), "autoscaling", "2011-01-01", region,
                           absl::StrCat("https://autoscaling.", region, ".amazonaws.com")));
  return std::unique_ptr<AutoScalingClient>(new AutoScalingClient(std::move(c)));
}
AutoScalingClient::AutoScalingClient(std::unique_ptr<QueryConnection> connection)
    : connection_(std::move(connection)) {}
AutoScalingClient::~AutoScalingClient() = default;

absl::StatusOr<AutoScalingClient::Membership> AutoScalingClient::DescribeMembership(
    const std::string& instance_id, CallInfo* info) {
  RETURN_IF_ERROR(Validate(info, "DescribeAutoScalingInstances", {{"instance id", &instance_id}}));
  pugi::xml_document doc;
  RETURN_IF_ERROR(connection_->Call("DescribeAutoScalingInstances",
                                    {{"InstanceIds.member.1", instance_id}}, false, info, &doc));
  Membership m;
  for (pugi::xml_node member : doc.document_element()
                                   .child("DescribeAutoScalingInstancesResult")
                                   .child("AutoScalingInstances")
                                   .children("member")) {
    if (ChildText(member, "InstanceId") != instance_id) continue;
    m.group_name = ChildText(member, "AutoScalingGroupName");
    m.lifecycle_state = ChildText(member, "LifecycleState");
  }
  return m;
}

absl::Status AutoScalingClient::EnterStandby(const std::string& group_name,
                                             const std::string& instance_id, CallInfo* info) {
  RETURN_IF_ERROR(
      Validate(info, "EnterStandby", {{"group name", &group_name}, {"instance id", &instance_id}}));
  pugi::xml_document doc;
  return connection_->Call("EnterStandby",
                           {{"AutoScalingGroupName", group_name},
                            {"InstanceIds.member.1", instance_id},
                            {"ShouldDecrementDesiredCapacity", "true"}},
                           false, info, &doc);
}

absl::Status AutoScalingClient::ExitStandby(const std::string& group_name,
                                            const std::string& instance_id, CallInfo* info) {
  RETURN_IF_ERROR(
      Validate(info, "ExitStandby", {{"group name", &group_name}, {"instance id", &instance_id}}));
  pugi::xml_document doc;
  return connection_->Call(
      "ExitStandby", {{"AutoScalingGroupName", group_name}, {"InstanceIds.member.1", instance_id}},
      false, info, &doc);
}

}  // namespace tripline::aws
