#include "collector/rules/rule_replay.h"

namespace tripline::collector {

void RuleReplay::Feed(const std::string& agent_id, int64_t event_id,
                      const tripline::v1::Event& event) {
  const int64_t t = event.time_unix_ns();
  for (const Rule* rule : rules_->Match(event)) {
    ++matches_;
    auto key = std::make_pair(rule->id, agent_id);
    auto it = open_file_.find(key);
    if (it != open_file_.end()) {
      firings_[it->second].event_ids.push_back(event_id);
      continue;
    }
    open_file_[key] = firings_.size();
    firings_.push_back(RuleFiring{rule->id, agent_id, t, {event_id}, ""});
  }
  for (auto& [rule, fields] : rules_->MatchLog(event)) {
    ++matches_;
    LogRuleOutcome o = thresholds_.Observe(*rule, agent_id, event_id, t, fields);
    if (o.kind == LogRuleOutcome::Kind::kOpen) {
      // Replay incident ids are 1-based indexes into firings_.
      firings_.push_back(RuleFiring{rule->id, agent_id, t, o.event_ids, o.group});
      thresholds_.Opened(*rule, agent_id, o.group, static_cast<int64_t>(firings_.size()), t);
    } else if (o.kind == LogRuleOutcome::Kind::kLink && o.incident_id > 0 &&
               static_cast<size_t>(o.incident_id) <= firings_.size()) {
      firings_[o.incident_id - 1].event_ids.push_back(event_id);
    }
  }
}

}  // namespace tripline::collector
