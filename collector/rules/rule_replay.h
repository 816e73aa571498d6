// Runs rules over stored events without acting: what would have fired, as the live path would
// have it (one open incident per file rule and agent; log thresholds and suppression as in
// ingest). Feed events oldest first. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "collector/rules/log_thresholds.h"
#include "collector/rules/rule_set.h"
#include "tripline/v1/event.pb.h"

namespace tripline::collector {

struct RuleFiring {
  std::string rule_id;
  std::string agent_id;
  int64_t first_time_ns = 0;       // the agent's time of the event that opened it
  std::vector<int64_t> event_ids;  // the events it would hold (opening ones, then linked)
  std::string group;               // log rules with group_by: "ip=203.0.113.9"
};

class RuleReplay {
 public:
  explicit RuleReplay(const RuleSet* rules) : rules_(rules) {}

  void Feed(const std::string& agent_id, int64_t event_id, const tripline::v1::Event& event);
  const std::vector<RuleFiring>& firings() const { return firings_; }
  int64_t matches() const { return matches_; }

 private:
  const RuleSet* rules_;
  LogThresholds thresholds_;
  std::map<std::pair<std::string, std::string>, size_t> open_file_;  // (rule, agent) -> firing
  std::vector<RuleFiring> firings_;
  int64_t matches_ = 0;
};

}  // namespace tripline::collector
