#include "collector/incidents/absence_monitor.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_format.h"
#include "collector/incidents/incident_recorder.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {

AbsenceMonitor::AbsenceMonitor(CollectorStore* store, Options options, const Clock& clock)
    : store_(store),
      options_(std::move(options)),
      clock_(clock),
      started_ns_(clock.NowUnixNanos()) {}

AbsenceMonitor::~AbsenceMonitor() { Stop(); }

void AbsenceMonitor::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Run(); });
}

void AbsenceMonitor::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void AbsenceMonitor::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    lock.unlock();
    if (absl::Status st = CheckOnce(); !st.ok()) {
      spdlog::error("absence: check failed (retried in {}): {}",
                    absl::FormatDuration(options_.tick), st.ToString());
    }
    lock.lock();
    cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.tick), [this] { return stopping_; });
  }
}

absl::Status AbsenceMonitor::CheckOnce() {
  std::shared_ptr<const RuleSet> rules = options_.rules ? options_.rules() : nullptr;
  std::vector<const Rule*> absence;
  if (rules) {
    for (const Rule& r : rules->rules()) {
      if (r.kind == RuleKind::kAgent) absence.push_back(&r);
    }
  }
  ASSIGN_OR_RETURN(std::vector<AbsenceEpisode> episodes, store_->ListAbsenceEpisodes());
  if (absence.empty() && episodes.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::vector<AgentRecord> agents, store_->ListAgents());
  std::map<std::string, const AgentRecord*> by_id;
  for (const AgentRecord& a : agents) by_id[a.agent_id] = &a;
  std::map<std::pair<std::string, std::string>, const AbsenceEpisode*> open;
  for (const AbsenceEpisode& e : episodes) open[{e.rule_id, e.agent_id}] = &e;

  const int64_t now = clock_.NowUnixNanos();
  // Episodes that are over: the agent was heard again (or is gone, or the rule is).
  std::vector<std::pair<const AbsenceEpisode*, std::string>> ended;
  for (const AbsenceEpisode& e : episodes) {
    auto agent = by_id.find(e.agent_id);
    const Rule* rule = rules ? rules->Find(e.rule_id) : nullptr;
    if (agent == by_id.end()) {
      ended.emplace_back(&e, "the agent is no longer enrolled");
    } else if (agent->second->last_seen_ns > e.silent_since_ns) {
      const AgentRecord& a = *agent->second;
      ended.emplace_back(
          &e, absl::StrFormat(
                  "agent %s reporting again at %s, after %ds of silence", Printable(a.agent_id),
                  Rfc3339Utc(a.last_seen_ns),
                  (a.last_seen_ns - std::max(e.silent_since_ns, a.enrolled_ns)) / 1000000000));
    } else if (rule == nullptr || rule->kind != RuleKind::kAgent) {
      ended.emplace_back(&e, absl::StrFormat("rule %s no longer watches for silence", e.rule_id));
    }
  }
  // Silences that begin: (rule, agent) without an episode, quiet for longer than the rule allows.
  std::vector<std::pair<const Rule*, const AgentRecord*>> begun;
  for (const Rule* r : absence) {
    for (const AgentRecord& a : agents) {
      if (!r->CoversAgent(a.agent_id) || open.count({r->id, a.agent_id}) != 0) continue;
      if (a.isolation_state == "isolating" || a.isolation_state == "isolated") continue;
      const int64_t since = std::max({a.last_seen_ns, a.enrolled_ns, started_ns_});
      if (now - since > r->absence_ns) begun.emplace_back(r, &a);
    }
  }
  if (ended.empty() && begun.empty()) return absl::OkStatus();

  std::vector<int64_t> opened;
  bool actions_queued = false;
  {
    ASSIGN_OR_RETURN(CollectorStore::Writer w, store_->BeginWrite());
    for (const auto& [e, line] : ended) {
      RETURN_IF_ERROR(w.AppendIncidentSummary(e->incident_id, line, now));
      RETURN_IF_ERROR(w.DeleteAbsenceEpisode(e->rule_id, e->agent_id));
    }
    for (const auto& [r, a] : begun) {
      ASSIGN_OR_RETURN(RecordOutcome outcome, RecordAbsence(w, *r, a->agent_id, a->last_seen_ns,
                                                            options_.auto_respond, now));
      RETURN_IF_ERROR(w.PutAbsenceEpisode(
          AbsenceEpisode{r->id, a->agent_id, a->last_seen_ns, outcome.incident_id}));
      if (outcome.opened) opened.push_back(outcome.incident_id);
      actions_queued = actions_queued || outcome.isolation_queued;
    }
    RETURN_IF_ERROR(w.Commit());
  }
  for (const auto& [e, line] : ended) {
    spdlog::info("absence: incident={} rule={} agent={}: {}", e->incident_id, e->rule_id,
                 Printable(e->agent_id), line);
  }
  for (const auto& [r, a] : begun) {
    spdlog::warn("absence: rule={} agent={} silent since {}", r->id, Printable(a->agent_id),
                 a->last_seen_ns > 0 ? Rfc3339Utc(a->last_seen_ns) : std::string("enrollment"));
  }
  if (options_.on_opened) {
    for (int64_t id : opened) {
      ASSIGN_OR_RETURN(std::optional<IncidentRecord> incident, store_->GetIncident(id));
      if (incident) options_.on_opened(*incident);
    }
  }
  if (actions_queued && options_.on_actions_queued) options_.on_actions_queued();
  return absl::OkStatus();
}

}  // namespace tripline::collector
