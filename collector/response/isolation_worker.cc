#include "collector/response/isolation_worker.h"

#include <algorithm>
#include <functional>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "collector/incidents/incident_recorder.h"
#include "collector/response/recorded_instance.h"
#include "platform/runtime/clock.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {
namespace {

constexpr int64_t kHourNs = int64_t{3600} * 1000000000;

std::string Groups(const std::vector<std::string>& groups) {
  return groups.empty() ? std::string("(none)") : absl::StrJoin(groups, ",");
}

// What isolation by security groups cannot cut; goes onto every contained incident.
constexpr char kNotCut[] =
    "not cut by security groups: ICMP and other flows still tracked, and flows through an NLB, "
    "GWLB, NAT gateway or Transit Gateway; only a subnet network ACL cuts those (an operator's "
    "decision)";

}  // namespace

// One action carried out: its steps by key, the store writes around each AWS call.
class IsolationWorker::Run {
 public:
  Run(IsolationWorker* w, ActionRecord action) : w_(w), action_(std::move(action)) {}

  // False when stopping interrupted the action (it stays running and resumes on the next start).
  bool Execute();

 private:
  using Call = std::function<absl::StatusOr<std::string>(aws::CallInfo*, std::string* detail)>;

  bool dry_run() const { return action_.mode == "dry-run"; }
  bool Stopping() { return w_->Stopping(); }

  // Runs the step `key` unless it is already done; returns its result. A failure of the call is
  // recorded on the step and returned; a store failure sets aborted_.
  absl::StatusOr<std::string> Step(const std::string& key, const std::string& kind,
                                   const std::string& target, const std::string& detail,
                                   const Call& call);
  bool Write(const std::function<absl::Status(CollectorStore::Writer&)>& fn);
  void Finish(bool ok, const std::string& code, const std::string& message,
              const std::string& timeline, const std::string& agent_state);
  void Note(const std::string& line);

  bool Isolate();
  bool Release();
  bool StopOrDisassociate();
  // True when the action may go on; false when it waits for approval or was refused.
  bool Guard();

  IsolationWorker* const w_;
  InstanceNetwork& net() { return *w_->network_; }
  ActionRecord action_;
  std::map<std::string, ActionRecord> steps_;  // by step_key
  bool aborted_ = false;                       // a store write failed: stop, retry later
  std::string first_error_code_, first_error_message_, first_error_line_;
};

bool IsolationWorker::Run::Write(const std::function<absl::Status(CollectorStore::Writer&)>& fn) {
  absl::StatusOr<CollectorStore::Writer> w = w_->store_->BeginWrite();
  absl::Status st = w.status();
  if (st.ok()) st = fn(*w);
  if (st.ok()) st = w->Commit();
  if (!st.ok()) {
    spdlog::error("response: action={} target={}: recording failed, will retry: {}", action_.id,
                  Printable(action_.target), st.ToString());
    aborted_ = true;
  }
  return st.ok();
}

void IsolationWorker::Run::Note(const std::string& line) {
  if (action_.incident_id <= 0) return;
  const int64_t now = w_->clock_.NowUnixNanos();
  Write([&](CollectorStore::Writer& w) {
    return w.AppendIncidentSummary(action_.incident_id, line, now);
  });
}

absl::StatusOr<std::string> IsolationWorker::Run::Step(const std::string& key,
                                                       const std::string& kind,
                                                       const std::string& target,
                                                       const std::string& detail,
                                                       const Call& call) {
  if (aborted_) return absl::AbortedError("store failed");
  auto found = steps_.find(key);
  if (found != steps_.end() && found->second.status == "done") return found->second.result;
  // Stopping: no new call; the callers see Stopping() and leave the action running.
  if (Stopping()) return absl::CancelledError("the collector is stopping");

  ActionRecord step;
  const int64_t now = w_->clock_.NowUnixNanos();
  if (found != steps_.end()) {
    step = found->second;  // left running (or failed) by an earlier run: run it again
  } else {
    step.incident_id = action_.incident_id;
    step.parent_id = action_.id;
    step.agent_id = action_.agent_id;
    step.kind = kind;
    step.target = target;
    step.step_key = key;
    step.actor = action_.actor;
    step.mode = action_.mode;
    step.created_ns = now;
  }
  step.status = "running";
  step.detail = detail;
  step.error_code.clear();
  step.error_message.clear();
  step.updated_ns = now;
  if (!Write([&](CollectorStore::Writer& w) -> absl::Status {
        if (step.id != 0) return w.UpdateAction(step);
        ASSIGN_OR_RETURN(step.id, w.InsertAction(step));
        return absl::OkStatus();
      })) {
    return absl::AbortedError("store failed");
  }
  steps_[key] = step;

  aws::CallInfo info;
  std::string new_detail = detail;
  absl::StatusOr<std::string> result = call(&info, &new_detail);
  step.aws_request_id = info.request_id;
  step.detail = new_detail;
  if (info.dry_run) step.detail = absl::StrCat("dry-run (DryRunOperation): ", new_detail);
  if (info.attempts > 1) absl::StrAppend(&step.detail, " [", info.attempts, " attempts]");
  if (result.ok()) {
    step.status = "done";
    step.result = *result;
  } else {
    step.status = "failed";
    step.error_code = !info.error_code.empty()
                          ? info.error_code
                          : std::string(absl::StatusCodeToString(result.status().code()));
    step.error_message =
        !info.error_message.empty() ? info.error_message : std::string(result.status().message());
    if (first_error_code_.empty()) {
      first_error_code_ = step.error_code;
      first_error_message_ = step.error_message;
      first_error_line_ = absl::StrFormat("%s %s failed: %s: %s", kind, target, step.error_code,
                                          step.error_message);
    }
  }
  step.updated_ns = w_->clock_.NowUnixNanos();
  if (!Write([&](CollectorStore::Writer& w) { return w.UpdateAction(step); })) {
    return absl::AbortedError("store failed");
  }
  steps_[key] = step;
  return result;
}

void IsolationWorker::Run::Finish(bool ok, const std::string& code, const std::string& message,
                                  const std::string& timeline, const std::string& agent_state) {
  const int64_t now = w_->clock_.NowUnixNanos();
  // A failure may mean a group went away: look the groups up again next time.
  if (!ok) w_->ready_groups_.clear();
  action_.status = ok ? "done" : "failed";
  action_.error_code = code;
  action_.error_message = message;
  action_.updated_ns = now;
  Write([&](CollectorStore::Writer& w) -> absl::Status {
    RETURN_IF_ERROR(w.UpdateAction(action_));
    if (!agent_state.empty() && !dry_run()) {
      RETURN_IF_ERROR(w.SetIsolationState(action_.agent_id, agent_state == "-" ? "" : agent_state));
    }
    if (action_.incident_id > 0 && !timeline.empty()) {
      RETURN_IF_ERROR(w.AppendIncidentSummary(action_.incident_id, timeline, now));
    }
    return absl::OkStatus();
  });
  if (w_->options_.on_outcome && !aborted_) {
    std::string outcome;
    if (action_.kind == kIsolateActionKind) {
      outcome = ok ? "isolated" : "isolation failed";
    } else if (action_.kind == kReleaseActionKind) {
      outcome = ok ? "released" : "release failed";
    } else if (action_.kind == kStopActionKind) {
      outcome = ok ? "stopped" : "stop failed";
    } else {
      outcome = ok ? "Elastic IPs disassociated" : "Elastic IP disassociation failed";
    }
    if (code == "NeverIsolate") outcome = "isolation refused (never-isolate)";
    if (dry_run()) outcome = absl::StrCat("dry-run: ", outcome);
    w_->options_.on_outcome(action_, outcome);
  }
  if (ok) {
    spdlog::info("response: {} done action={} incident={} target={}", action_.kind, action_.id,
                 action_.incident_id, Printable(action_.target));
  } else {
    spdlog::error("response: {} failed action={} incident={} target={}: {}: {}", action_.kind,
                  action_.id, action_.incident_id, Printable(action_.target), code,
                  Printable(message));
  }
}

bool IsolationWorker::Run::Guard() {
  const Options& o = w_->options_;
  const std::string& id = action_.target;
  // The same guardrails hold for the stops the collector starts on its own (CloudTrail rules).
  const std::string what = action_.kind == kStopActionKind ? "stop" : "isolation";
  const char* const what_plural =
      action_.kind == kStopActionKind ? "automatic stops" : "automatic isolations";
  if (o.never_isolate_ids.count(id) > 0) {
    Finish(false, "NeverIsolate", absl::StrCat(id, " is on the never-isolate list"),
           absl::StrFormat("%s refused: %s is on the never-isolate list", what, id), "");
    return false;
  }
  if (action_.mode == "approve") {
    action_.status = "approval";
    action_.updated_ns = w_->clock_.NowUnixNanos();
    Write([&](CollectorStore::Writer& w) -> absl::Status {
      RETURN_IF_ERROR(w.UpdateAction(action_));
      if (action_.incident_id > 0) {
        RETURN_IF_ERROR(w.AppendIncidentSummary(
            action_.incident_id,
            absl::StrFormat("%s of %s waits for approval (triplinectl incident approve %d)",
                            what, id, action_.incident_id),
            action_.updated_ns));
      }
      return absl::OkStatus();
    });
    if (!aborted_ && o.on_outcome) o.on_outcome(action_, "waiting for approval");
    return false;
  }
  if (o.max_auto_per_hour > 0 && action_.actor == "collector" && action_.mode == "auto" &&
      action_.status == "pending") {
    const int64_t now = w_->clock_.NowUnixNanos();
    absl::StatusOr<int64_t> recent =
        w_->store_->CountAutomaticActionsSince(action_.kind, now - kHourNs);
    if (!recent.ok()) {
      aborted_ = true;
      return false;
    }
    if (*recent >= o.max_auto_per_hour) {
      action_.mode = "approve";
      action_.status = "approval";
      action_.updated_ns = now;
      Write([&](CollectorStore::Writer& w) -> absl::Status {
        RETURN_IF_ERROR(w.UpdateAction(action_));
        if (action_.incident_id > 0) {
          RETURN_IF_ERROR(w.AppendIncidentSummary(
              action_.incident_id,
              absl::StrFormat("%s of %s waits for approval: %d %s in the last hour reached "
                              "the cap (triplinectl incident approve %d)",
                              what, id, *recent, what_plural, action_.incident_id),
              now));
        }
        return absl::OkStatus();
      });
      if (!aborted_ && o.on_outcome) o.on_outcome(action_, "waiting for approval (hourly cap)");
      return false;
    }
  }
  return true;
}

bool IsolationWorker::Run::Execute() {
  absl::StatusOr<std::vector<ActionRecord>> steps = w_->store_->Steps(action_.id);
  if (!steps.ok()) {
    spdlog::error("response: action={}: cannot read its steps: {}", action_.id,
                  steps.status().ToString());
    return true;
  }
  for (ActionRecord& s : *steps) {
    if (!s.step_key.empty()) steps_[s.step_key] = std::move(s);
  }
  if (action_.mode.empty()) {
    // An operator's own request is its approval; response.mode dry-run still holds for it.
    action_.mode = action_.actor != "collector" && w_->options_.default_mode == "approve"
                       ? "auto"
                       : w_->options_.default_mode;
  }
  const bool automatic_stop = action_.kind == kStopActionKind && action_.actor == "collector";
  if ((action_.kind == kIsolateActionKind || automatic_stop) && !Guard()) return true;
  if (aborted_) return true;

  action_.status = "running";
  action_.updated_ns = w_->clock_.NowUnixNanos();
  if (!Write([&](CollectorStore::Writer& w) -> absl::Status {
        RETURN_IF_ERROR(w.UpdateAction(action_));
        if (action_.kind == kIsolateActionKind && !dry_run()) {
          RETURN_IF_ERROR(w.SetIsolationState(action_.agent_id, "isolating"));
        }
        return absl::OkStatus();
      })) {
    return true;
  }
  if (w_->network_ == nullptr) {
    Finish(false, "NoCredentials", std::string(w_->network_error_.message()),
           absl::StrFormat("%s failed: AWS is not usable: %s", action_.kind,
                           w_->network_error_.message()),
           action_.kind == kIsolateActionKind ? "failed" : "");
    return true;
  }
  spdlog::info("response: {} action={} incident={} target={} mode={}", action_.kind, action_.id,
               action_.incident_id, Printable(action_.target), action_.mode);
  if (action_.kind == kIsolateActionKind) return Isolate();
  if (action_.kind == kReleaseActionKind) return Release();
  return StopOrDisassociate();
}

#define STEP_OR_FAIL(lhs, expr)                                                     \
  auto TRIPLINE_CONCAT_(step_, __LINE__) = (expr);                                  \
  if (aborted_) return true;                                                        \
  if (Stopping()) return false;                                                     \
  if (!TRIPLINE_CONCAT_(step_, __LINE__).ok()) {                                    \
    Finish(false, first_error_code_, first_error_message_,                          \
           absl::StrCat(action_.kind, " failed: ", first_error_line_), fail_state); \
    return true;                                                                    \
  }                                                                                 \
  lhs = *std::move(TRIPLINE_CONCAT_(step_, __LINE__))

// A step whose failure is recorded but does not stop the action (evidence, after containment).
#define STEP_OR_CONTINUE(expr)    \
  do {                            \
    (void)(expr);                 \
    if (aborted_) return true;    \
    if (Stopping()) return false; \
  } while (0)

bool IsolationWorker::Run::Isolate() {
  const std::string fail_state = "failed";
  const std::string& id = action_.target;
  const bool dry = dry_run();
  const Options& o = w_->options_;

  // 1. Record what will change: the way back and evidence.
  std::string recorded;
  STEP_OR_FAIL(
      recorded,
      Step("describe", "ec2:DescribeInstances", id, "",
           [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
             ASSIGN_OR_RETURN(aws::Instance inst, net().DescribeInstance(id, info));
             std::vector<std::string> parts;
             for (const aws::NetworkInterface& e : inst.interfaces) {
               parts.push_back(absl::StrFormat("%s: %s", e.interface_id, Groups(e.group_ids)));
             }
             for (const aws::Volume& v : inst.volumes) {
               parts.push_back(absl::StrFormat("%s %s DeleteOnTermination=%s", v.device_name,
                                               v.volume_id,
                                               v.delete_on_termination ? "true" : "false"));
             }
             if (!inst.iam_instance_profile_arn.empty()) {
               parts.push_back("profile " + inst.iam_instance_profile_arn);
             }
             for (const aws::NetworkInterface& e : inst.interfaces) {
               if (!e.public_ip.empty()) {
                 parts.push_back(absl::StrFormat(
                     "%s public ip %s%s", e.interface_id, e.public_ip,
                     e.eip_allocation_id.empty() ? ""
                                                 : " (Elastic IP " + e.eip_allocation_id + ")"));
               }
             }
             for (const auto& [k, v] : inst.tags) {
               parts.push_back(absl::StrFormat("tag %s=%s", k, v));
             }
             *detail = absl::StrJoin(parts, "; ");
             return EncodeInstance(inst);
           }));
  absl::StatusOr<aws::Instance> decoded = DecodeInstance(recorded);
  if (!decoded.ok()) {
    Finish(false, "BadRecord", std::string(decoded.status().message()),
           absl::StrCat("isolation failed: ", decoded.status().message()), fail_state);
    return true;
  }
  const aws::Instance inst = *std::move(decoded);
  for (const auto& [key, value] : o.never_isolate_tags) {
    auto t = inst.tags.find(key);
    if (t != inst.tags.end() && (value.empty() || t->second == value)) {
      Finish(false, "NeverIsolate",
             absl::StrFormat("%s carries the never-isolate tag %s=%s", id, key, t->second),
             absl::StrFormat("isolation refused: %s carries the never-isolate tag %s=%s", id, key,
                             t->second),
             "-");
      return true;
    }
  }
  if (inst.interfaces.empty()) {
    Finish(false, "NoInterfaces", "the instance has no network interfaces to isolate",
           absl::StrFormat("isolation failed: %s has no network interfaces", id), fail_state);
    return true;
  }

  // 2. The two groups of every VPC the interfaces are in.
  std::map<std::string, std::string> untrack, isolation;  // vpc -> group id
  std::set<std::string> vpcs;
  for (const aws::NetworkInterface& e : inst.interfaces) {
    vpcs.insert(e.vpc_id.empty() ? inst.vpc_id : e.vpc_id);
  }
  const std::map<std::string, std::string> group_tags = {{"tripline:managed", "true"}};
  auto ensure_group = [&](const std::string& role, const std::string& vpc, const std::string& name,
                          const std::string& description) -> std::optional<std::string> {
    std::string gid;
    auto found =
        Step(absl::StrCat("sg-find:", role, ":", vpc), "ec2:DescribeSecurityGroups", vpc, name,
             [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
               ASSIGN_OR_RETURN(std::string g, net().FindSecurityGroup(vpc, name, info));
               *detail = absl::StrCat(name, " in ", vpc, ": ", g.empty() ? std::string("none") : g);
               return g;
             });
    if (!found.ok() || Stopping()) return std::nullopt;  // the caller tells which
    gid = *found;
    if (gid.empty()) {
      std::map<std::string, std::string> tags = group_tags;
      tags["tripline:role"] = role;
      auto created =
          Step(absl::StrCat("sg-create:", role, ":", vpc), "ec2:CreateSecurityGroup", vpc, name,
               [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
                 absl::StatusOr<std::string> g =
                     net().CreateSecurityGroup(vpc, name, description, tags, dry, info);
                 if (!g.ok() && info->error_code == "InvalidGroup.Duplicate") {
                   // Created by a call whose answer was lost: find it.
                   g = net().FindSecurityGroup(vpc, name, info);
                   if (g.ok() && g->empty())
                     g = absl::NotFoundError("group vanished after Duplicate");
                 }
                 if (!g.ok()) return g.status();
                 if (info->dry_run) *g = absl::StrCat("sg-dryrun-", role);
                 *detail = absl::StrCat(name, " in ", vpc, ": ", *g);
                 return *g;
               });
      if (!created.ok()) return std::nullopt;
      gid = *created;
    }
    return gid;
  };
  for (const std::string& vpc : vpcs) {
    // Groups this process already found ready in this VPC: no lookups before containment. (A
    // resumed action keeps to what its own steps recorded.)
    auto ready = w_->ready_groups_.find(vpc);
    if (!dry && ready != w_->ready_groups_.end() &&
        steps_.count(absl::StrCat("sg-find:untrack:", vpc)) == 0) {
      untrack[vpc] = ready->second.first;
      isolation[vpc] = ready->second.second;
      continue;
    }
    std::optional<std::string> u = ensure_group("untrack", vpc, o.untrack_group_name,
                                                "Tripline: allows all, so flows become untracked");
    if (aborted_) return true;
    if (Stopping()) return false;
    if (!u) {
      Finish(false, first_error_code_, first_error_message_,
             absl::StrCat("isolation failed: ", first_error_line_), fail_state);
      return true;
    }
    untrack[vpc] = *u;
    std::string ignored;
    STEP_OR_FAIL(ignored,
                 Step(absl::StrCat("sg-ingress:untrack:", vpc), "ec2:AuthorizeSecurityGroupIngress",
                      *u, "all traffic from 0.0.0.0/0 and ::/0",
                      [&](aws::CallInfo* info, std::string*) -> absl::StatusOr<std::string> {
                        RETURN_IF_ERROR(net().AuthorizeIngressFromAnywhere(*u, dry, info));
                        return std::string();
                      }));
    if (!o.isolation_security_group.empty() && vpc == inst.vpc_id) {
      isolation[vpc] = o.isolation_security_group;
      if (!dry) w_->ready_groups_[vpc] = {untrack[vpc], isolation[vpc]};
      continue;
    }
    std::optional<std::string> iso = ensure_group("isolation", vpc, o.isolation_group_name,
                                                  "Tripline: isolation, no traffic in or out");
    if (aborted_) return true;
    if (Stopping()) return false;
    if (!iso) {
      Finish(false, first_error_code_, first_error_message_,
             absl::StrCat("isolation failed: ", first_error_line_), fail_state);
      return true;
    }
    isolation[vpc] = *iso;
    STEP_OR_FAIL(ignored,
                 Step(absl::StrCat("sg-egress:isolation:", vpc), "ec2:RevokeSecurityGroupEgress",
                      *iso, "default egress (all traffic to 0.0.0.0/0)",
                      [&](aws::CallInfo* info, std::string*) -> absl::StatusOr<std::string> {
                        RETURN_IF_ERROR(net().RevokeDefaultEgress(*iso, dry, info));
                        return std::string();
                      }));
    if (!dry) w_->ready_groups_[vpc] = {untrack[vpc], isolation[vpc]};
  }

  // 3. Every interface: the untrack group first (its flows become untracked), then the
  // isolation group, which drops them. Containment first: one interface failing does not stop
  // the others.
  size_t isolated = 0;
  for (const aws::NetworkInterface& e : inst.interfaces) {
    const std::string vpc = e.vpc_id.empty() ? inst.vpc_id : e.vpc_id;
    bool ok = true;
    for (const auto& [phase, group] : {std::pair<std::string, std::string>{"untrack", untrack[vpc]},
                                       {"isolate", isolation[vpc]}}) {
      auto r = Step(
          absl::StrCat("eni-", phase, ":", e.interface_id), "ec2:ModifyNetworkInterfaceAttribute",
          e.interface_id,
          absl::StrFormat("%s: %s -> %s", e.interface_id,
                          phase == "untrack" ? Groups(e.group_ids) : untrack[vpc], group),
          [&](aws::CallInfo* info, std::string*) -> absl::StatusOr<std::string> {
            RETURN_IF_ERROR(net().SetInterfaceSecurityGroups(e.interface_id, {group}, dry, info));
            return group;
          });
      if (aborted_) return true;
      if (Stopping()) return false;
      if (!r.ok()) {
        ok = false;
        break;
      }
    }
    if (ok) ++isolated;
  }
  if (isolated != inst.interfaces.size()) {
    Finish(false, first_error_code_, first_error_message_,
           absl::StrFormat("isolation failed: %s (%d of %d interfaces isolated)", first_error_line_,
                           isolated, inst.interfaces.size()),
           fail_state);
    return true;
  }
  if (!dry) {
    const int64_t now = w_->clock_.NowUnixNanos();
    std::vector<std::string> eips;
    for (const aws::NetworkInterface& e : inst.interfaces) {
      if (!e.public_ip.empty()) eips.push_back(absl::StrCat(e.public_ip, " on ", e.interface_id));
    }
    std::string line = absl::StrFormat(
        "contained: %d interface(s) of %s moved through the untrack group to the isolation group; "
        "%s",
        isolated, id, kNotCut);
    if (!eips.empty()) {
      absl::StrAppend(&line, "; public addresses still associated: ", absl::StrJoin(eips, ", "),
                      " (Elastic IP disassociation is a separate action)");
    }
    if (!Write([&](CollectorStore::Writer& w) -> absl::Status {
          RETURN_IF_ERROR(w.SetIsolationState(action_.agent_id, "isolated"));
          if (action_.incident_id > 0) {
            RETURN_IF_ERROR(w.AppendIncidentSummary(action_.incident_id, line, now));
            RETURN_IF_ERROR(w.SetIncidentStatus(action_.incident_id, "contained", now));
          }
          return absl::OkStatus();
        })) {
      return true;
    }
  }

  // 4. Record what evidence protection and credential revocation will change (release restores
  // it), now that the instance is contained.
  for (const char* attribute : {"disableApiTermination", "instanceInitiatedShutdownBehavior"}) {
    std::string value;
    STEP_OR_FAIL(
        value,
        Step(absl::StrCat("attr:", attribute), "ec2:DescribeInstanceAttribute", id, attribute,
             [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
               ASSIGN_OR_RETURN(std::string v,
                                net().DescribeInstanceAttribute(id, attribute, info));
               *detail = absl::StrCat(attribute, "=", v);
               return v;
             }));
  }
  aws::IamProfileAssociation association;
  if (!inst.iam_instance_profile_arn.empty()) {
    std::string assoc;
    STEP_OR_FAIL(assoc,
                 Step("iam-association", "ec2:DescribeIamInstanceProfileAssociations", id, "",
                      [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
                        ASSIGN_OR_RETURN(aws::IamProfileAssociation a,
                                         net().DescribeIamProfileAssociation(id, info));
                        *detail = a.association_id.empty()
                                      ? std::string("no profile associated")
                                      : absl::StrCat(a.association_id, " ", a.profile_arn);
                        return absl::StrCat(a.association_id, "\t", a.profile_arn);
                      }));
    std::vector<std::string> f = absl::StrSplit(assoc, absl::MaxSplits('\t', 1));
    association.association_id = f[0];
    if (f.size() > 1) association.profile_arn = f[1];
  }
  std::string asg;
  STEP_OR_FAIL(asg,
               Step("asg", "autoscaling:DescribeAutoScalingInstances", id, "",
                    [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
                      ASSIGN_OR_RETURN(aws::AutoScalingClient::Membership m,
                                       net().DescribeAutoScaling(id, info));
                      *detail = m.group_name.empty()
                                    ? std::string("not in an Auto Scaling group")
                                    : absl::StrCat(m.group_name, " ", m.lifecycle_state);
                      return absl::StrCat(m.group_name, "\t", m.lifecycle_state);
                    }));
  const std::vector<std::string> asg_fields = absl::StrSplit(asg, absl::MaxSplits('\t', 1));

  // 5. Protect the evidence, one attribute per call.
  using Kind = aws::InstanceAttributeChange::Kind;
  auto modify = [&](const std::string& key, const aws::InstanceAttributeChange& change,
                    const std::string& detail) {
    return Step(key, "ec2:ModifyInstanceAttribute", id, detail,
                [&](aws::CallInfo* info, std::string*) -> absl::StatusOr<std::string> {
                  RETURN_IF_ERROR(net().ModifyInstanceAttribute(id, change, dry, info));
                  return std::string();
                });
  };
  STEP_OR_CONTINUE(modify("protect:termination", {Kind::kDisableApiTermination, "true", ""},
                          "DisableApiTermination=true"));
  STEP_OR_CONTINUE(modify("protect:shutdown", {Kind::kShutdownBehavior, "stop", ""},
                          "InstanceInitiatedShutdownBehavior=stop"));
  for (const aws::Volume& v : inst.volumes) {
    if (!v.delete_on_termination) continue;
    STEP_OR_CONTINUE(
        modify(absl::StrCat("protect:volume:", v.device_name),
               {Kind::kVolumeDeleteOnTermination, "false", v.device_name},
               absl::StrFormat("%s (%s) DeleteOnTermination=false", v.device_name, v.volume_id)));
  }
  if (!asg_fields[0].empty() && asg_fields.size() > 1 && asg_fields[1] == "InService") {
    STEP_OR_CONTINUE(
        Step("asg-standby", "autoscaling:EnterStandby", id,
             absl::StrCat(asg_fields[0], ": Standby, desired capacity decremented"),
             [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
               if (dry) {
                 *detail = "not sent: Auto Scaling has no DryRun";
                 return std::string();
               }
               absl::Status st = net().EnterStandby(asg_fields[0], id, info);
               if (!st.ok() && info->error_code == "ValidationError") {
                 // Put in Standby by a call whose answer was lost?
                 absl::StatusOr<aws::AutoScalingClient::Membership> m =
                     net().DescribeAutoScaling(id, info);
                 if (m.ok() && m->lifecycle_state == "Standby") return asg_fields[0];
               }
               RETURN_IF_ERROR(st);
               return asg_fields[0];
             }));
  }
  const std::string incident_tag =
      action_.incident_id > 0 ? absl::StrCat(action_.incident_id) : std::string("none");
  STEP_OR_CONTINUE(
      Step("tags", "ec2:CreateTags", id, "",
           [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
             std::map<std::string, std::string> tags = {
                 {"tripline:incident", incident_tag},
                 {"tripline:isolated-at", Rfc3339Utc(action_.created_ns)},
                 {"tripline:action", absl::StrCat(action_.id)}};
             std::vector<std::string> shown;
             for (const auto& [k, v] : tags) shown.push_back(k + "=" + v);
             *detail = absl::StrJoin(shown, " ");
             RETURN_IF_ERROR(net().CreateTags(id, tags, dry, info));
             return std::string();
           }));

  // 6. Credentials: the profile goes, and sessions already issued to its role stop working.
  if (!association.association_id.empty()) {
    const std::string profile = InstanceProfileName(association.profile_arn);
    auto roles = Step("iam-roles", "iam:GetInstanceProfile", profile, profile,
                      [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
                        ASSIGN_OR_RETURN(std::vector<std::string> r,
                                         net().InstanceProfileRoles(profile, info));
                        *detail = absl::StrCat(profile, ": roles ", Groups(r));
                        return absl::StrJoin(r, ",");
                      });
    if (aborted_) return true;
    if (Stopping()) return false;
    STEP_OR_CONTINUE(
        Step("iam-disassociate", "ec2:DisassociateIamInstanceProfile", association.association_id,
             absl::StrCat(association.association_id, " ", association.profile_arn),
             [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
               absl::Status st =
                   net().DisassociateIamInstanceProfile(association.association_id, dry, info);
               if (!st.ok() && info->error_code == "InvalidAssociationID.NotFound") {
                 // Disassociated by a call whose answer was lost?
                 absl::StatusOr<aws::IamProfileAssociation> now =
                     net().DescribeIamProfileAssociation(id, info);
                 if (now.ok() && now->association_id.empty()) {
                   *detail += " (already disassociated)";
                   return association.profile_arn;
                 }
               }
               RETURN_IF_ERROR(st);
               return association.profile_arn;
             }));
    if (roles.ok() && !roles->empty()) {
      for (absl::string_view role_view : absl::StrSplit(*roles, ',')) {
        const std::string role(role_view);
        const std::string key = absl::StrCat("iam-revoke:", role);
        // The cut-off is when this step first started, so a resumed run writes the same policy.
        auto prior = steps_.find(key);
        const int64_t cutoff =
            prior != steps_.end() ? prior->second.created_ns : w_->clock_.NowUnixNanos();
        const std::string policy_name =
            absl::StrCat("tripline-revoke-sessions-incident-", incident_tag);
        const std::string policy = absl::StrFormat(
            R"({"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*",)"
            R"("Resource":"*","Condition":{"DateLessThan":{"aws:TokenIssueTime":"%s"}}}]})",
            Rfc3339Utc(cutoff));
        STEP_OR_CONTINUE(
            Step(key, "iam:PutRolePolicy", role,
                 absl::StrFormat("%s: %s denies sessions issued before %s", role, policy_name,
                                 Rfc3339Utc(cutoff)),
                 [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
                   if (dry) {
                     *detail = absl::StrCat("not sent: IAM has no DryRun; ", *detail);
                     return std::string();
                   }
                   RETURN_IF_ERROR(net().PutRolePolicy(role, policy_name, policy, info));
                   return policy_name;
                 }));
      }
    }
  }

  // 7. Snapshots of every volume, tagged with the incident.
  if (!inst.volumes.empty()) {
    // CreateSnapshots has no idempotency token: a run after a crash during this call first looks
    // for the snapshots it may have started (tagged with this action).
    const bool rerun = steps_.count("snapshots") > 0;
    const std::string action_tag = absl::StrCat(action_.id);
    STEP_OR_CONTINUE(
        Step("snapshots", "ec2:CreateSnapshots", id, "",
             [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
               if (rerun && !dry) {
                 ASSIGN_OR_RETURN(std::vector<std::string> found,
                                  net().FindSnapshots("tripline:action", action_tag, info));
                 if (!found.empty()) {
                   *detail = absl::StrCat("started before the restart: ", Groups(found));
                   return absl::StrJoin(found, ",");
                 }
               }
               ASSIGN_OR_RETURN(
                   std::vector<std::string> ids,
                   net().CreateSnapshots(
                       id, absl::StrCat("Tripline evidence, incident ", incident_tag),
                       {{"tripline:incident", incident_tag}, {"tripline:action", action_tag}}, dry,
                       info));
               *detail = absl::StrCat(inst.volumes.size(), " volume(s): ", Groups(ids));
               return absl::StrJoin(ids, ",");
             }));
  }

  if (first_error_code_.empty()) {
    Finish(true, "", "",
           dry ? absl::StrFormat("dry-run: isolation of %s would succeed; nothing was changed", id)
               : absl::StrFormat("isolation of %s complete: evidence protected, credentials "
                                 "revoked, snapshots started",
                                 id),
           "");
  } else {
    Finish(false, first_error_code_, first_error_message_,
           absl::StrFormat("isolation of %s contained, but a later step failed: %s", id,
                           first_error_line_),
           "");
  }
  return true;
}

bool IsolationWorker::Run::Release() {
  const std::string fail_state;
  const std::string& id = action_.target;
  const bool dry = dry_run();
  // The first isolation since the last release: it recorded the instance as it was before any
  // isolation (a later one, e.g. from a second incident, saw the isolation groups).
  absl::StatusOr<std::vector<ActionRecord>> isolations =
      w_->store_->TopLevelActions(kIsolateActionKind, id);
  absl::StatusOr<std::vector<ActionRecord>> releases =
      w_->store_->TopLevelActions(kReleaseActionKind, id);
  if (!isolations.ok() || !releases.ok()) {
    aborted_ = true;
    return true;
  }
  int64_t last_release = 0;
  for (const ActionRecord& r : *releases) {
    if (r.id != action_.id && r.status == "done" && r.mode != "dry-run") last_release = r.id;
  }
  std::map<std::string, ActionRecord> recorded;
  int64_t isolation_id = 0;
  for (auto it = isolations->begin(); it != isolations->end() && isolation_id == 0; ++it) {
    if (it->mode == "dry-run" || it->id < last_release) continue;
    absl::StatusOr<std::vector<ActionRecord>> steps = w_->store_->Steps(it->id);
    if (!steps.ok()) {
      aborted_ = true;
      return true;
    }
    for (ActionRecord& s : *steps) {
      if (s.step_key == "describe" && s.status == "done") isolation_id = it->id;
    }
    if (isolation_id != 0) {
      for (ActionRecord& s : *steps) recorded[s.step_key] = std::move(s);
    }
  }
  if (isolation_id == 0) {
    Finish(false, "NothingToRelease",
           absl::StrCat("no isolation of ", id, " recorded the instance"),
           absl::StrCat("release failed: no isolation of ", id, " recorded the instance"), "");
    return true;
  }
  absl::StatusOr<aws::Instance> decoded = DecodeInstance(recorded["describe"].result);
  if (!decoded.ok()) {
    Finish(false, "BadRecord", std::string(decoded.status().message()),
           absl::StrCat("release failed: ", decoded.status().message()), "");
    return true;
  }
  const aws::Instance inst = *std::move(decoded);
  auto done = [&](const std::string& key) {
    auto it = recorded.find(key);
    return it != recorded.end() && it->second.status == "done" && it->second.mode != "dry-run";
  };

  for (const aws::NetworkInterface& e : inst.interfaces) {
    if (!done("eni-untrack:" + e.interface_id)) continue;  // never changed
    STEP_OR_CONTINUE(Step(absl::StrCat("restore-eni:", e.interface_id),
                          "ec2:ModifyNetworkInterfaceAttribute", e.interface_id,
                          absl::StrFormat("%s: -> %s (as recorded by action %d)", e.interface_id,
                                          Groups(e.group_ids), isolation_id),
                          [&](aws::CallInfo* info, std::string*) -> absl::StatusOr<std::string> {
                            RETURN_IF_ERROR(net().SetInterfaceSecurityGroups(
                                e.interface_id, e.group_ids, dry, info));
                            return std::string();
                          }));
  }
  // Elastic IPs a separate action took away since this isolation.
  absl::StatusOr<std::vector<ActionRecord>> eip_actions =
      w_->store_->TopLevelActions(kDisassociateEipsActionKind, id);
  if (!eip_actions.ok()) {
    aborted_ = true;
    return true;
  }
  for (const ActionRecord& a : *eip_actions) {
    if (a.id < isolation_id || a.id < last_release || a.mode == "dry-run") continue;
    absl::StatusOr<std::vector<ActionRecord>> eip_steps = w_->store_->Steps(a.id);
    if (!eip_steps.ok()) {
      aborted_ = true;
      return true;
    }
    for (const ActionRecord& st : *eip_steps) {
      if (st.status != "done" || st.step_key.rfind("eip-disassociate:", 0) != 0) continue;
      const std::vector<std::string> f = absl::StrSplit(st.result, '\t');
      if (f.size() != 3) continue;
      STEP_OR_CONTINUE(Step(absl::StrCat("restore-eip:", f[0]), "ec2:AssociateAddress", f[1],
                            absl::StrFormat("%s -> %s %s", f[0], f[1], f[2]),
                            [&](aws::CallInfo* info, std::string*) -> absl::StatusOr<std::string> {
                              return net().AssociateAddress(f[0], f[1], f[2], dry, info);
                            }));
    }
  }
  if (done("iam-disassociate")) {
    const std::string arn = recorded["iam-disassociate"].result;
    STEP_OR_CONTINUE(Step("restore-profile", "ec2:AssociateIamInstanceProfile", id, arn,
                          [&](aws::CallInfo* info, std::string*) -> absl::StatusOr<std::string> {
                            absl::Status st = net().AssociateIamInstanceProfile(id, arn, dry, info);
                            // Associated again by a call whose answer was lost.
                            if (!st.ok() && info->error_code == "IncorrectState") {
                              absl::StatusOr<aws::IamProfileAssociation> a =
                                  net().DescribeIamProfileAssociation(id, info);
                              if (a.ok() && a->profile_arn == arn) return std::string();
                            }
                            RETURN_IF_ERROR(st);
                            return std::string();
                          }));
  }
  if (done("protect:shutdown") && done("attr:instanceInitiatedShutdownBehavior")) {
    const std::string before = recorded["attr:instanceInitiatedShutdownBehavior"].result;
    STEP_OR_CONTINUE(Step(
        "restore-shutdown", "ec2:ModifyInstanceAttribute", id,
        "InstanceInitiatedShutdownBehavior=" + before,
        [&](aws::CallInfo* info, std::string*) -> absl::StatusOr<std::string> {
          RETURN_IF_ERROR(net().ModifyInstanceAttribute(
              id, {aws::InstanceAttributeChange::Kind::kShutdownBehavior, before, ""}, dry, info));
          return std::string();
        }));
  }
  if (done("asg-standby") && !recorded["asg-standby"].result.empty()) {
    const std::string group = recorded["asg-standby"].result;
    STEP_OR_CONTINUE(
        Step("asg-exit-standby", "autoscaling:ExitStandby", id, group,
             [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
               if (dry) {
                 *detail = "not sent: Auto Scaling has no DryRun";
                 return std::string();
               }
               absl::Status st = net().ExitStandby(group, id, info);
               if (!st.ok() && info->error_code == "ValidationError") {
                 absl::StatusOr<aws::AutoScalingClient::Membership> m =
                     net().DescribeAutoScaling(id, info);
                 if (m.ok() && m->lifecycle_state == "InService") return std::string();
               }
               RETURN_IF_ERROR(st);
               return std::string();
             }));
  }
  STEP_OR_CONTINUE(
      Step("tags", "ec2:CreateTags", id, "",
           [&](aws::CallInfo* info, std::string* detail) -> absl::StatusOr<std::string> {
             std::map<std::string, std::string> tags = {
                 {"tripline:released-at", Rfc3339Utc(action_.created_ns)},
                 {"tripline:release-action", absl::StrCat(action_.id)}};
             std::vector<std::string> shown;
             for (const auto& [k, v] : tags) shown.push_back(k + "=" + v);
             *detail = absl::StrJoin(shown, " ");
             RETURN_IF_ERROR(net().CreateTags(id, tags, dry, info));
             return std::string();
           }));
  if (first_error_code_.empty()) {
    Finish(true, "", "",
           dry ? absl::StrFormat("dry-run: release of %s would succeed; nothing was changed", id)
               : absl::StrFormat("released %s: interfaces, profile and shutdown behaviour "
                                 "restored as recorded by action %d (termination protection and "
                                 "DeleteOnTermination=false stay, for the evidence)",
                                 id, isolation_id),
           dry ? "" : "-");
  } else {
    Finish(false, first_error_code_, first_error_message_,
           absl::StrCat("release failed: ", first_error_line_), "");
  }
  return true;
}

bool IsolationWorker::Run::StopOrDisassociate() {
  const std::string fail_state;
  const std::string& id = action_.target;
  const bool dry = dry_run();
  if (w_->options_.never_isolate_ids.count(id) > 0) {
    Finish(false, "NeverIsolate", absl::StrCat(id, " is on the never-isolate list"),
           absl::StrFormat("%s refused: %s is on the never-isolate list", action_.kind, id), "");
    return true;
  }
  if (action_.kind == kStopActionKind && action_.actor == "collector" &&
      !w_->options_.never_isolate_tags.empty()) {
    // A stop the collector started on its own honours the never-isolate tags, so it looks at
    // the instance first.
    std::string recorded;
    STEP_OR_FAIL(recorded,
                 Step("describe", "ec2:DescribeInstances", id, "",
                      [&](aws::CallInfo* info, std::string*) -> absl::StatusOr<std::string> {
                        ASSIGN_OR_RETURN(aws::Instance inst, net().DescribeInstance(id, info));
                        return EncodeInstance(inst);
                      }));
    absl::StatusOr<aws::Instance> inst = DecodeInstance(recorded);
    if (!inst.ok()) {
      Finish(false, "BadRecord", std::string(inst.status().message()),
             absl::StrCat("stop failed: ", inst.status().message()), "");
      return true;
    }
    for (const auto& [key, value] : w_->options_.never_isolate_tags) {
      auto t = inst->tags.find(key);
      if (t != inst->tags.end() && (value.empty() || t->second == value)) {
        Finish(false, "NeverIsolate",
               absl::StrFormat("%s carries the never-isolate tag %s=%s", id, key, t->second),
               absl::StrFormat("stop refused: %s carries the never-isolate tag %s=%s", id, key,
                               t->second),
               "");
        return true;
      }
    }
  }
  if (action_.kind == kStopActionKind) {
    std::string ignored;
    STEP_OR_FAIL(
        ignored,
        Step("stop", "ec2:StopInstances", id, "StopInstances (memory is lost; volumes stay)",
             [&](aws::CallInfo* info, std::string*) -> absl::StatusOr<std::string> {
               RETURN_IF_ERROR(net().StopInstance(id, dry, info));
               return std::string();
             }));
    Finish(true, "", "",
           dry ? absl::StrFormat("dry-run: stopping %s would succeed", id)
               : absl::StrFormat("stopped %s (action %d by %s)", id, action_.id,
                                 action_.actor),
           "");
    return true;
  }
  // Elastic IP disassociation: what is associated now, then one call per address.
  std::string recorded;
  STEP_OR_FAIL(recorded,
               Step("describe", "ec2:DescribeInstances", id, "",
                    [&](aws::CallInfo* info, std::string*) -> absl::StatusOr<std::string> {
                      ASSIGN_OR_RETURN(aws::Instance inst, net().DescribeInstance(id, info));
                      return EncodeInstance(inst);
                    }));
  absl::StatusOr<aws::Instance> inst = DecodeInstance(recorded);
  if (!inst.ok()) {
    Finish(false, "BadRecord", std::string(inst.status().message()),
           absl::StrCat("Elastic IP disassociation failed: ", inst.status().message()), "");
    return true;
  }
  std::vector<std::string> gone;
  for (const aws::NetworkInterface& e : inst->interfaces) {
    if (e.eip_allocation_id.empty() || e.eip_association_id.empty()) continue;
    const std::string key = absl::StrCat("eip-disassociate:", e.eip_allocation_id);
    const bool rerun = steps_.count(key) > 0;
    STEP_OR_CONTINUE(
        Step(key, "ec2:DisassociateAddress", e.eip_association_id,
             absl::StrFormat("%s (%s) from %s %s", e.public_ip, e.eip_allocation_id, e.interface_id,
                             e.private_ip),
             [&](aws::CallInfo* info, std::string*) -> absl::StatusOr<std::string> {
               absl::Status st = net().DisassociateAddress(e.eip_association_id, dry, info);
               // Gone by a call whose answer was lost.
               if (!st.ok() && rerun && info->error_code == "InvalidAssociationID.NotFound") {
                 st = absl::OkStatus();
               }
               RETURN_IF_ERROR(st);
               return absl::StrCat(e.eip_allocation_id, "\t", e.interface_id, "\t", e.private_ip);
             }));
    gone.push_back(e.public_ip);
  }
  if (first_error_code_.empty()) {
    Finish(true, "", "",
           gone.empty() ? absl::StrFormat("no Elastic IP associated with %s", id)
           : dry        ? absl::StrFormat("dry-run: disassociating %s would succeed",
                                          absl::StrJoin(gone, ", "))
                        : absl::StrFormat("Elastic IPs %s disassociated from %s (release "
                                                 "associates them again)",
                                          absl::StrJoin(gone, ", "), id),
           "");
  } else {
    Finish(false, first_error_code_, first_error_message_,
           absl::StrCat("Elastic IP disassociation failed: ", first_error_line_), "");
  }
  return true;
}

#undef STEP_OR_FAIL
#undef STEP_OR_CONTINUE

// --- the worker ---------------------------------------------------------------------------------

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
  thread_ = std::thread([this] { Loop(); });
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

void IsolationWorker::Loop() {
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
  std::vector<ActionRecord> all;
  for (const char* kind :
       {kIsolateActionKind, kReleaseActionKind, kStopActionKind, kDisassociateEipsActionKind}) {
    absl::StatusOr<std::vector<ActionRecord>> actions = store_->UnfinishedActions(kind);
    if (!actions.ok()) {
      spdlog::error("response: cannot list unfinished actions: {}", actions.status().ToString());
      return true;
    }
    all.insert(all.end(), actions->begin(), actions->end());
  }
  std::sort(all.begin(), all.end(),
            [](const ActionRecord& a, const ActionRecord& b) { return a.id < b.id; });
  for (const ActionRecord& action : all) {
    if (Stopping()) return false;
    Run run(this, action);
    if (!run.Execute()) return false;
  }
  return true;
}

}  // namespace tripline::collector
