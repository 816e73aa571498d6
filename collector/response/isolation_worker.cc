#include "collector/response/isolation_worker.h"

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "collector/incidents/incident_recorder.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {
namespace {

constexpr char kDescribeKind[] = "ec2:DescribeInstances";
constexpr char kModifyKind[] = "ec2:ModifyNetworkInterfaceAttribute";

// AWS's error code and message when the answer had them, else the Status's code and message.
void FillError(const absl::Status& status, const aws::CallInfo& info, ActionRecord* row) {
  row->aws_request_id = info.request_id;
  row->error_code = !info.error_code.empty() ? info.error_code
                                             : std::string(absl::StatusCodeToString(status.code()));
  row->error_message =
      !info.error_message.empty() ? info.error_message : std::string(status.message());
}

std::string Groups(const std::vector<std::string>& groups) {
  return groups.empty() ? std::string("(none)") : absl::StrJoin(groups, ",");
}

}  // namespace

IsolationWorker::IsolationWorker(CollectorStore* store, std::unique_ptr<InstanceNetwork> network,
                                 absl::Status network_error, Options options, const Clock& clock)
    : store_(store),
      network_(std::move(network)),
      network_error_(std::move(network_error)),
      options_(std::move(options)),
      clock_(clock) {}

IsolationWorker::~IsolationWorker() { Stop(); }

void IsolationWorker::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stopping_) return;
  wake_ = true;  // resume what a previous run left unfinished
  thread_ = std::thread([this] { Run(); });
}

void IsolationWorker::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_one();
}

void IsolationWorker::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

bool IsolationWorker::Stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

void IsolationWorker::Run() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return wake_ || stopping_; });
      if (stopping_) return;
      wake_ = false;
    }
    if (!ProcessUnfinished()) return;
  }
}

bool IsolationWorker::ProcessUnfinished() {
  absl::StatusOr<std::vector<ActionRecord>> actions = store_->UnfinishedActions(kIsolateActionKind);
  if (!actions.ok()) {
    spdlog::error("response: cannot list unfinished actions: {}", actions.status().ToString());
    return true;
  }
  for (const ActionRecord& action : *actions) {
    if (Stopping()) return false;
    if (!Isolate(action)) return false;
  }
  return true;
}

void IsolationWorker::StoreFailed(const absl::Status& status, const ActionRecord& action) {
  spdlog::error("response: action={} agent={}: recording a step failed, will retry: {}", action.id,
                action.agent_id, status.ToString());
}

bool IsolationWorker::Isolate(const ActionRecord& action_in) {
  ActionRecord action = action_in;
  const std::string& instance_id = action.target;
  spdlog::info("response: isolate action={} incident={} instance={}", action.id,
               action.incident_id, instance_id);

  // Mark the action running, and close out steps a previous run left in the middle of a call.
  absl::StatusOr<std::vector<ActionRecord>> leftovers = store_->RunningSteps(action.id);
  if (!leftovers.ok()) {
    StoreFailed(leftovers.status(), action);
    return true;
  }
  {
    absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
    absl::Status st = w.status();
    const int64_t now = clock_.NowUnixNanos();
    if (st.ok()) {
      action.status = "running";
      action.updated_ns = now;
      st = w->UpdateAction(action);
    }
    for (ActionRecord step : *leftovers) {
      if (!st.ok()) break;
      step.status = "failed";
      step.error_code = "Interrupted";
      step.error_message = "the collector stopped during this call; the isolation was run again";
      step.updated_ns = now;
      st = w->UpdateAction(step);
    }
    if (st.ok()) st = w->SetIsolationState(action.agent_id, "isolating");
    if (st.ok()) st = w->Commit();
    if (!st.ok()) {
      StoreFailed(st, action);
      return true;
    }
  }

  // Records the end of the whole action: parent row, agent state, incident status and timeline.
  auto finish = [&](bool ok, const std::string& code, const std::string& message,
                    const std::string& timeline) {
    absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
    absl::Status st = w.status();
    const int64_t now = clock_.NowUnixNanos();
    action.status = ok ? "done" : "failed";
    action.error_code = code;
    action.error_message = message;
    action.updated_ns = now;
    if (st.ok()) st = w->UpdateAction(action);
    if (st.ok()) st = w->SetIsolationState(action.agent_id, ok ? "isolated" : "failed");
    if (st.ok() && action.incident_id > 0) {
      st = w->AppendIncidentSummary(action.incident_id, timeline, now);
      if (st.ok() && ok) st = w->SetIncidentStatus(action.incident_id, "contained", now);
    }
    if (st.ok()) st = w->Commit();
    if (!st.ok()) StoreFailed(st, action);
    if (ok) {
      spdlog::info("response: isolated instance={} action={} incident={}", instance_id, action.id,
                   action.incident_id);
    } else {
      spdlog::error("response: isolation failed instance={} action={} incident={}: {}: {}",
                    instance_id, action.id, action.incident_id, code, message);
    }
  };

  if (network_ == nullptr) {
    finish(false, "NoCredentials", std::string(network_error_.message()),
           absl::StrFormat("isolation failed: EC2 is not usable: %s", network_error_.message()));
    return true;
  }
  if (options_.isolation_security_group.empty()) {
    finish(false, "NoIsolationGroup", "aws.isolation_security_group is not configured",
           "isolation failed: aws.isolation_security_group is not configured");
    return true;
  }

  // Writes a step row as running before its call; returns its id (0 when the store failed).
  auto begin_step = [&](const std::string& kind, const std::string& target,
                        const std::string& detail) -> ActionRecord {
    ActionRecord step;
    step.incident_id = action.incident_id;
    step.parent_id = action.id;
    step.agent_id = action.agent_id;
    step.kind = kind;
    step.target = target;
    step.status = "running";
    step.detail = detail;
    step.actor = "collector";
    step.created_ns = step.updated_ns = clock_.NowUnixNanos();
    absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
    absl::Status st = w.status();
    if (st.ok()) {
      absl::StatusOr<int64_t> id = w->InsertAction(step);
      st = id.status();
      if (st.ok()) step.id = *id;
    }
    if (st.ok()) st = w->Commit();
    if (!st.ok()) {
      StoreFailed(st, action);
      step.id = 0;
    }
    return step;
  };
  auto end_step = [&](ActionRecord& step) {
    step.updated_ns = clock_.NowUnixNanos();
    absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
    absl::Status st = w.status();
    if (st.ok()) st = w->UpdateAction(step);
    if (st.ok()) st = w->Commit();
    if (!st.ok()) StoreFailed(st, action);
    return st.ok();
  };

  // 1. DescribeInstances: the interfaces and their groups (evidence and the way back).
  ActionRecord describe = begin_step(kDescribeKind, instance_id, "");
  if (describe.id == 0) return true;
  aws::CallInfo info;
  absl::StatusOr<aws::Instance> instance = network_->DescribeInstance(instance_id, &info);
  if (!instance.ok()) {
    describe.status = "failed";
    FillError(instance.status(), info, &describe);
    if (!end_step(describe)) return true;
    finish(false, describe.error_code, describe.error_message,
           absl::StrFormat("isolation failed: %s %s: %s: %s", kDescribeKind, instance_id,
                           describe.error_code, describe.error_message));
    return true;
  }
  std::vector<std::string> listing;
  for (const aws::NetworkInterface& eni : instance->interfaces) {
    listing.push_back(absl::StrFormat("%s: %s", eni.interface_id, Groups(eni.group_ids)));
  }
  describe.status = "done";
  describe.aws_request_id = info.request_id;
  describe.detail = listing.empty() ? std::string("no network interfaces")
                                    : absl::StrJoin(listing, "; ");
  if (!end_step(describe)) return true;
  if (Stopping()) return false;
  if (instance->interfaces.empty()) {
    finish(false, "NoInterfaces", "the instance has no network interfaces to isolate",
           absl::StrFormat("isolation failed: %s has no network interfaces", instance_id));
    return true;
  }

  // 2. Every interface into the isolation group alone. Containment first: a failure on one
  // interface does not stop the others.
  const std::vector<std::string> isolation = {options_.isolation_security_group};
  std::string first_code, first_message, first_line;
  size_t isolated = 0;
  for (const aws::NetworkInterface& eni : instance->interfaces) {
    ActionRecord step = begin_step(
        kModifyKind, eni.interface_id,
        absl::StrFormat("%s: %s -> %s", eni.interface_id, Groups(eni.group_ids),
                        options_.isolation_security_group));
    if (step.id == 0) return true;
    aws::CallInfo call;
    absl::Status st = network_->SetInterfaceSecurityGroups(eni.interface_id, isolation, &call);
    if (st.ok()) {
      step.status = "done";
      step.aws_request_id = call.request_id;
      ++isolated;
    } else {
      step.status = "failed";
      FillError(st, call, &step);
      if (first_code.empty()) {
        first_code = step.error_code;
        first_message = step.error_message;
        first_line = absl::StrFormat("isolation failed: %s %s: %s: %s", kModifyKind,
                                     eni.interface_id, step.error_code, step.error_message);
      }
    }
    if (!end_step(step)) return true;
    if (Stopping()) return false;
  }
  if (isolated == instance->interfaces.size()) {
    finish(true, "", "",
           absl::StrFormat("contained: %d interface(s) of %s moved to %s", isolated, instance_id,
                           options_.isolation_security_group));
  } else {
    finish(false, first_code, first_message,
           absl::StrFormat("%s (%d of %d interfaces isolated)", first_line, isolated,
                           instance->interfaces.size()));
  }
  return true;
}

}  // namespace tripline::collector
