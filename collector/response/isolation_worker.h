// The response worker: carries out "isolate" and "release" actions, one at a time, on its own
// thread. An action is a top-level row; each AWS call it makes is a step row under it with a
// stable step_key, written running before the call and done | failed after it with AWS's request
// id (and error code and message). A step already done is never run again: what it learned is in
// its `result`, so a collector killed at any point resumes the action where it stopped, repeating
// at most the one call that was in flight (every call is idempotent or made so: groups are found
// by name before they are created, duplicate rules and gone rules count as done).
//
// Isolation, in this order (containment first, then evidence):
//   ec2:DescribeInstances    record every interface, its groups, volumes, profile, EIPs, tags
//   per VPC: the untrack group (all in from 0.0.0.0/0 and ::/0) and the isolation group (default
//   egress revoked), found by name or created, tagged (once per VPC and process)
//   per interface: ModifyNetworkInterfaceAttribute to the untrack group, then the isolation group
//   -> incident "contained", agent "isolated"
//   ec2:DescribeInstanceAttribute x2, ec2:DescribeIamInstanceProfileAssociations,
//   autoscaling:DescribeAutoScalingInstances   record what the next steps change
//   ModifyInstanceAttribute: DisableApiTermination, InstanceInitiatedShutdownBehavior=stop,
//   DeleteOnTermination=false per volume; autoscaling:EnterStandby; CreateTags
//   iam:GetInstanceProfile, ec2:DisassociateIamInstanceProfile, iam:PutRolePolicy (deny all for
//   sessions issued before now); ec2:CreateSnapshots tagged with the incident
// Release restores each interface's recorded groups, the profile, the shutdown behaviour, takes
// the instance out of Standby, and tags the release.
//
// Guardrails: mode auto | approve | dry-run (dry-run sends DryRun=true and changes nothing;
// IAM and Auto Scaling have no DryRun, so those writes are not sent); never-isolate instance ids
// and tags; at most `max_auto_per_hour` automatic isolations per hour, after which actions wait
// in status "approval" for an operator.
//
// The AWS calls go through InstanceNetwork, a small interface the real clients are adapted to
// (collector/response/ec2_instance_network.h) and tests fake. Stop() lets the current call finish.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "collector/incidents/incident_recorder.h"
#include "collector/store/collector_store.h"
#include "platform/aws/ec2_client.h"
#include "platform/runtime/clock.h"

namespace tripline::collector {

inline constexpr char kReleaseActionKind[] = "release";
// Separate actions an operator asks for: StopInstances (kStopActionKind, incident_recorder.h;
// cloud rules queue it too), and Elastic IP disassociation (which a release undoes).
inline constexpr char kDisassociateEipsActionKind[] = "disassociate-eips";

// The AWS operations the response needs (EC2, IAM, Auto Scaling). Implementations fill `info`
// whether the call worked or not; `dry_run` calls send DryRun=true and succeed with
// info->dry_run on DryRunOperation.
class InstanceNetwork {
 public:
  virtual ~InstanceNetwork() = default;
  virtual absl::StatusOr<aws::Instance> DescribeInstance(const std::string& instance_id,
                                                         aws::CallInfo* info) = 0;
  virtual absl::StatusOr<std::string> DescribeInstanceAttribute(const std::string& instance_id,
                                                                const std::string& attribute,
                                                                aws::CallInfo* info) = 0;
  virtual absl::StatusOr<aws::IamProfileAssociation> DescribeIamProfileAssociation(
      const std::string& instance_id, aws::CallInfo* info) = 0;
  virtual absl::StatusOr<aws::AutoScalingClient::Membership> DescribeAutoScaling(
      const std::string& instance_id, aws::CallInfo* info) = 0;
  virtual absl::StatusOr<std::string> FindSecurityGroup(const std::string& vpc_id,
                                                        const std::string& group_name,
                                                        aws::CallInfo* info) = 0;
  virtual absl::StatusOr<std::string> CreateSecurityGroup(
      const std::string& vpc_id, const std::string& group_name, const std::string& description,
      const std::map<std::string, std::string>& tags, bool dry_run, aws::CallInfo* info) = 0;
  virtual absl::Status AuthorizeIngressFromAnywhere(const std::string& group_id, bool dry_run,
                                                    aws::CallInfo* info) = 0;
  virtual absl::Status RevokeDefaultEgress(const std::string& group_id, bool dry_run,
                                           aws::CallInfo* info) = 0;
  virtual absl::Status SetInterfaceSecurityGroups(const std::string& interface_id,
                                                  const std::vector<std::string>& group_ids,
                                                  bool dry_run, aws::CallInfo* info) = 0;
  virtual absl::Status ModifyInstanceAttribute(const std::string& instance_id,
                                               const aws::InstanceAttributeChange& change,
                                               bool dry_run, aws::CallInfo* info) = 0;
  virtual absl::Status CreateTags(const std::string& resource_id,
                                  const std::map<std::string, std::string>& tags, bool dry_run,
                                  aws::CallInfo* info) = 0;
  virtual absl::Status DisassociateIamInstanceProfile(const std::string& association_id,
                                                      bool dry_run, aws::CallInfo* info) = 0;
  virtual absl::Status AssociateIamInstanceProfile(const std::string& instance_id,
                                                   const std::string& profile_arn, bool dry_run,
                                                   aws::CallInfo* info) = 0;
  virtual absl::StatusOr<std::vector<std::string>> CreateSnapshots(
      const std::string& instance_id, const std::string& description,
      const std::map<std::string, std::string>& tags, bool dry_run, aws::CallInfo* info) = 0;
  virtual absl::Status StopInstance(const std::string& instance_id, bool dry_run,
                                    aws::CallInfo* info) = 0;
  virtual absl::Status DisassociateAddress(const std::string& association_id, bool dry_run,
                                           aws::CallInfo* info) = 0;
  virtual absl::StatusOr<std::string> AssociateAddress(const std::string& allocation_id,
                                                       const std::string& interface_id,
                                                       const std::string& private_ip,
                                                       bool dry_run, aws::CallInfo* info) = 0;
  virtual absl::StatusOr<std::vector<std::string>> FindSnapshots(const std::string& tag_key,
                                                                 const std::string& tag_value,
                                                                 aws::CallInfo* info) = 0;
  virtual absl::StatusOr<std::vector<std::string>> InstanceProfileRoles(
      const std::string& profile_name, aws::CallInfo* info) = 0;
  virtual absl::Status PutRolePolicy(const std::string& role_name, const std::string& policy_name,
                                     const std::string& policy_document, aws::CallInfo* info) = 0;
  virtual absl::Status EnterStandby(const std::string& group_name, const std::string& instance_id,
                                    aws::CallInfo* info) = 0;
  virtual absl::Status ExitStandby(const std::string& group_name, const std::string& instance_id,
                                   aws::CallInfo* info) = 0;
};

class IsolationWorker {
 public:
  struct Options {
    // Use this group as the isolation group of its VPC instead of finding or creating one.
    std::string isolation_security_group;
    std::string untrack_group_name = "tripline-untrack";
    std::string isolation_group_name = "tripline-isolation";
    std::string default_mode = "auto";  // for actions that name none: auto | approve | dry-run
    std::set<std::string> never_isolate_ids;  // the collector's own instance belongs here
    std::map<std::string, std::string> never_isolate_tags;  // key -> value ("" = any value)
    int max_auto_per_hour = 0;                              // 0: no cap
    // Called on the worker thread when an action ends or starts waiting for approval, with a
    // short outcome ("contained", "isolation failed", "waiting for approval", "released", ...).
    std::function<void(const ActionRecord& action, const std::string& outcome)> on_outcome;
  };

  // `network` may be null when AWS is not usable (no credentials): then every action fails with
  // `network_error` recorded on it. `store` and `clock` outlive the worker.
  IsolationWorker(CollectorStore* store, std::unique_ptr<InstanceNetwork> network,
                  absl::Status network_error, Options options, const Clock& clock);
  ~IsolationWorker();  // Stop()s
  IsolationWorker(const IsolationWorker&) = delete;
  IsolationWorker& operator=(const IsolationWorker&) = delete;

  // Starts the thread, which first resumes unfinished actions.
  void Start();
  // New actions were committed: look for them.
  void Wake();
  // Lets the current AWS call finish, records it, and joins the thread. Idempotent.
  void Stop();
  // True once Stop() was called: no AWS call starts after that.
  bool Stopping();

 private:
  class Run;  // one action being carried out

  void Loop();
  // Runs every pending or running action; false when stopping interrupted it.
  bool ProcessUnfinished();

  // Constant after construction.
  CollectorStore* const store_;
  const std::unique_ptr<InstanceNetwork> network_;  // only used on the worker thread
  const absl::Status network_error_;
  const Options options_;
  const Clock& clock_;

  // VPC -> (untrack group, isolation group) found ready by an earlier isolation of this
  // process, so later ones go straight to containment. Only used on the worker thread.
  std::map<std::string, std::pair<std::string, std::string>> ready_groups_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool wake_ = false;      // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace tripline::collector
