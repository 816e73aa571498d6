// The response worker: carries out "isolate" actions, one at a time, on its own thread. Each step
// is an action row written before its call (running) and updated after it (done | failed), with
// AWS's request id, and on failure AWS's error code and message, which also go onto the incident's
// summary:
//   ec2:DescribeInstances               detail: every interface and its current groups
//   ec2:ModifyNetworkInterfaceAttribute  per interface, detail "eni-1: sg-web,sg-ssh -> sg-iso"
// The agent's isolation_state goes isolating -> isolated | failed; the incident becomes
// "contained" when every interface is in the isolation group. At start, actions left pending or
// running are run again (the calls are idempotent). Stop() lets the current call finish.
//
// The EC2 calls go through InstanceNetwork, a small interface the real aws::Ec2Client is adapted
// to (collector/response/ec2_instance_network.h) and tests fake.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "collector/store/collector_store.h"
#include "platform/aws/ec2_client.h"
#include "platform/runtime/clock.h"

namespace tripline::collector {

// The EC2 operations isolation needs. Implementations fill `info` whether the call worked or not.
class InstanceNetwork {
 public:
  virtual ~InstanceNetwork() = default;
  virtual absl::StatusOr<aws::Instance> DescribeInstance(const std::string& instance_id,
                                                         aws::CallInfo* info) = 0;
  virtual absl::Status SetInterfaceSecurityGroups(const std::string& interface_id,
                                                  const std::vector<std::string>& group_ids,
                                                  aws::CallInfo* info) = 0;
};

class IsolationWorker {
 public:
  struct Options {
    std::string isolation_security_group;  // empty: isolation fails with a recorded error
  };

  // `network` may be null when EC2 is not usable (no credentials): then every isolate action
  // fails with `network_error` recorded on it. `store` and `clock` outlive the worker.
  IsolationWorker(CollectorStore* store, std::unique_ptr<InstanceNetwork> network,
                  absl::Status network_error, Options options, const Clock& clock);
  ~IsolationWorker();  // Stop()s
  IsolationWorker(const IsolationWorker&) = delete;
  IsolationWorker& operator=(const IsolationWorker&) = delete;

  // Starts the thread, which first resumes unfinished actions.
  void Start();
  // New actions were committed: look for them.
  void Wake();
  // Lets the current EC2 call finish, records it, and joins the thread. Idempotent.
  void Stop();

 private:
  void Run();
  // Runs every pending or running isolate action; false when stopping interrupted it.
  bool ProcessUnfinished();
  // Carries out one isolate action; false when stopping interrupted it (it stays running).
  bool Isolate(const ActionRecord& action);
  bool Stopping();
  // Logs a store failure during a step; the action stays unfinished and is retried on the next
  // start or wake.
  void StoreFailed(const absl::Status& status, const ActionRecord& action);

  // Constant after construction.
  CollectorStore* const store_;
  const std::unique_ptr<InstanceNetwork> network_;  // only used on the worker thread
  const absl::Status network_error_;
  const Options options_;
  const Clock& clock_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool wake_ = false;      // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace tripline::collector
