// What a log rule's match leads to: the threshold window (`count` matches of one group within
// `within`) and suppression (after an incident opens, the same group opens no other for
// `suppress`, and its matches are linked to that incident). A group is (rule, agent, the values
// of the threshold's group_by fields).
//
// Time is the events' time (the agent's clock when it read the line). The state lives in memory:
// a collector restart starts every window afresh. Memory is bounded: a window keeps at most
// `count` entries and at most kMaxGroups groups are tracked (expired ones go first, then all).
//
// Threads: not thread-safe; the store writer thread owns it.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "collector/rules/rule_set.h"

namespace tripline::collector {

inline constexpr size_t kMaxGroups = 100000;

struct LogRuleOutcome {
  enum class Kind {
    kNothing,  // counted towards the threshold, nothing to record yet
    kOpen,     // open an incident holding `event_ids`
    kLink,     // link the event to `incident_id` (the group is suppressed)
  };
  Kind kind = Kind::kNothing;
  std::vector<int64_t> event_ids;
  int64_t incident_id = 0;
  std::string group;  // "ip=203.0.113.9" (printable), empty without group_by
  int64_t count = 0;  // matches in the window that fired
};

class LogThresholds {
 public:
  // One match of `rule` (a log rule) by stored event `event_id` at `time_ns`.
  LogRuleOutcome Observe(const Rule& rule, const std::string& agent_id, int64_t event_id,
                         int64_t time_ns, const LogMatchFields& fields);
  // The incident opened for an Observe that returned kOpen: later matches of the group within
  // the rule's suppress time link to it.
  void Opened(const Rule& rule, const std::string& agent_id, const std::string& group,
              int64_t incident_id, int64_t time_ns);
  // Forgets everything (for instance when the commit that acted on outcomes failed).
  void Clear() { groups_.clear(); }

  size_t groups() const { return groups_.size(); }

 private:
  struct Group {
    std::deque<std::pair<int64_t, int64_t>> window;  // (time_ns, event_id)
    int64_t suppressed_until_ns = 0;
    int64_t incident_id = 0;
    int64_t last_ns = 0;
  };
  void Trim(int64_t now_ns);

  std::map<std::string, Group> groups_;
};

}  // namespace tripline::collector
