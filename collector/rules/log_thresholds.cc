#include "collector/rules/log_thresholds.h"

#include "absl/strings/str_format.h"
#include "platform/runtime/logging.h"

namespace tripline::collector {
namespace {

std::string GroupOf(const Rule& rule, const LogMatchFields& fields) {
  std::string out;
  if (!rule.threshold) return out;
  for (const std::string& name : rule.threshold->group_by) {
    const std::string* value = nullptr;
    for (const auto& [k, v] : fields) {
      if (k == name) value = &v;
    }
    if (!out.empty()) out += " ";
    out += absl::StrFormat("%s=%s", name, value ? Printable(*value, 128) : "(none)");
  }
  return out;
}

std::string KeyOf(const Rule& rule, const std::string& agent_id, const std::string& group) {
  // Lengths first, so no choice of values can make two groups collide.
  return absl::StrFormat("%d:%s%d:%s%s", rule.id.size(), rule.id, agent_id.size(), agent_id,
                         group);
}

}  // namespace

void LogThresholds::Trim(int64_t now_ns) {
  if (groups_.size() < kMaxGroups) return;
  for (auto it = groups_.begin(); it != groups_.end();) {
    const bool idle = it->second.suppressed_until_ns <= now_ns &&
                      (it->second.window.empty() || it->second.last_ns < now_ns - 3600e9);
    it = idle ? groups_.erase(it) : std::next(it);
  }
  if (groups_.size() >= kMaxGroups) {
    spdlog::warn("rules: {} log rule groups tracked; forgetting every window", groups_.size());
    groups_.clear();
  }
}

LogRuleOutcome LogThresholds::Observe(const Rule& rule, const std::string& agent_id,
                                      int64_t event_id, int64_t time_ns,
                                      const LogMatchFields& fields) {
  LogRuleOutcome out;
  out.group = GroupOf(rule, fields);
  Trim(time_ns);
  Group& g = groups_[KeyOf(rule, agent_id, out.group)];
  g.last_ns = std::max(g.last_ns, time_ns);
  if (time_ns < g.suppressed_until_ns && g.incident_id != 0) {
    out.kind = LogRuleOutcome::Kind::kLink;
    out.incident_id = g.incident_id;
    return out;
  }
  const int64_t count = rule.threshold ? rule.threshold->count : 1;
  const int64_t within = rule.threshold ? rule.threshold->within_ns : 0;
  g.window.emplace_back(time_ns, event_id);
  while (!g.window.empty() && g.window.front().first <= time_ns - within && within > 0) {
    g.window.pop_front();
  }
  while (static_cast<int64_t>(g.window.size()) > count) g.window.pop_front();
  if (static_cast<int64_t>(g.window.size()) < count) return out;
  out.kind = LogRuleOutcome::Kind::kOpen;
  out.count = static_cast<int64_t>(g.window.size());
  for (const auto& [t, id] : g.window) out.event_ids.push_back(id);
  g.window.clear();
  return out;
}

void LogThresholds::Opened(const Rule& rule, const std::string& agent_id,
                           const std::string& group, int64_t incident_id, int64_t time_ns) {
  Group& g = groups_[KeyOf(rule, agent_id, group)];
  g.incident_id = incident_id;
  g.suppressed_until_ns = time_ns + rule.suppress_ns;
}

}  // namespace tripline::collector
