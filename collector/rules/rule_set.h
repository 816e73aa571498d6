// Detection rules: YAML files of `rules:` lists (see packaging/config/rules), loaded from one file
// or from every *.yaml file of a directory in name order. Every loading error names
// file:line:col: unknown keys, bad severities, bad globs, duplicate ids (across files), kinds this
// version does not match yet. A RuleSet is immutable once loaded; share it between threads as a
// std::shared_ptr<const RuleSet> and swap in a new one to reload.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "collector/cloudtrail/cloud_event.h"
#include "collector/rules/cidr.h"
#include "collector/rules/path_glob.h"
#include "re2/re2.h"
#include "tripline/v1/event.pb.h"

namespace tripline::collector {

// The response a rule asks for when it matches.
// kStop (StopInstances) is for kind cloud only: it stops the instances a RunInstances launched.
enum class RuleResponse { kIsolate, kStop };

// kAgent: an absence rule, evaluated on the agents' last-seen times by the AbsenceMonitor, never
// on events. kCloud: CloudTrail events (collector/cloudtrail).
enum class RuleKind { kFile, kLog, kAgent, kCloud };

// The fields a cloud match yields (for threshold group_by and incident summaries).
inline constexpr const char* kCloudFields[] = {"event_name",    "event_source",  "region",
                                               "principal_arn", "access_key_id", "source_ip",
                                               "user_agent"};

// Named values a log match yields: the agent's parsed fields, then the regex's named captures
// (a capture replaces a parsed field of the same name), plus "source" and "path".
using LogMatchFields = std::vector<std::pair<std::string, std::string>>;

// A `where:` condition on one field of a log match.
struct FieldCondition {
  enum class Op { kEquals, kNotEquals, kIn, kNotIn, kMatches, kNotMatches };
  std::string field;
  Op op = Op::kEquals;
  std::vector<std::string> values;  // kEquals/kNotEquals: one; kIn/kNotIn: several
  std::shared_ptr<const RE2> regex;  // kMatches/kNotMatches (partial match)
  // A missing field satisfies only the negative operators.
  bool Holds(const LogMatchFields& fields) const;
  // For a field with several values (a JSON path through arrays): a positive operator holds when
  // one value satisfies it, a negative one when no value hits (so no value at all satisfies it).
  bool HoldsForValues(const std::vector<std::string>& values) const;
};

// `threshold: {count, within, group_by}`: the rule fires when `count` matches with the same
// group_by values arrive within `within`.
struct RuleThreshold {
  int64_t count = 1;
  int64_t within_ns = 0;
  std::vector<std::string> group_by;
};

struct Rule {
  std::string id;        // [a-z0-9._-]+, unique
  std::string title;
  std::string severity;  // low | medium | high | critical
  std::string where;     // file:line:col of the rule, for messages
  std::vector<PathGlob> paths;  // empty: any path
  // Bit (1 << FileEvent::Change) per change matched.
  unsigned changes = 0;
  std::vector<RuleResponse> responses;
  // How its response runs: auto | approve | dry-run; empty: the collector's response.mode.
  std::string response_mode;

  RuleKind kind = RuleKind::kFile;
  // kind: log
  std::vector<std::string> sources;  // LogEvent.source names; empty: any
  std::string field;                 // the parsed field the regex runs on; empty: the line
  std::shared_ptr<const RE2> regex;  // null: every line (of the sources and paths)
  std::vector<FieldCondition> conditions;  // match.where
  std::optional<RuleThreshold> threshold;
  // How long the same group (rule, agent, group_by values) opens no new incident after one was
  // opened; its further matches are linked to that incident. Log and cloud rules; default: the
  // threshold's window, else 5 minutes.
  int64_t suppress_ns = 0;

  // kind agent: the agents (globs on the agent id; empty: all) and how long one may send nothing,
  // not even a heartbeat, before the rule fires.
  std::vector<PathGlob> agents;
  int64_t absence_ns = 0;

  // kind: cloud (CloudTrail events). Empty lists match anything; `where` conditions (above) name
  // JSON paths into the raw record.
  std::vector<std::string> event_names;    // exact eventName
  std::vector<std::string> event_sources;  // exact eventSource
  std::vector<std::string> principals;        // ARN globs (fnmatch: * and ? cross '/' and ':')
  std::vector<std::string> principals_allow;  // ARN globs that never match
  std::vector<Cidr> source_ips;               // sourceIPAddress inside one of them
  std::vector<Cidr> source_ips_not;           // sourceIPAddress inside none of them
  std::vector<std::string> regions;
  std::vector<std::string> regions_not;

  bool Isolates() const;
  bool Stops() const;
  // kind cloud: true when `event` passes every list and condition; `*fields` gets kCloudFields.
  bool MatchesCloud(const CloudEvent& event, LogMatchFields* fields) const;
  // kind agent: true when `agent_id` is one of `agents`.
  bool CoversAgent(std::string_view agent_id) const;
  // kind log: true when `event` is a LogEvent of one of `sources` and `paths`, the regex matches
  // (the line, or `field`) and every condition holds; `*fields` gets the match's fields.
  bool MatchesLog(const tripline::v1::Event& event, LogMatchFields* fields) const;
  // True when `event` is a FileEvent whose path (or, for RENAMED, old_path) matches a glob and
  // whose change is among `changes`.
  bool Matches(const tripline::v1::Event& event) const;
};

class RuleSet {
 public:
  RuleSet() = default;
  explicit RuleSet(std::vector<Rule> rules) : rules_(std::move(rules)) {}

  // The file rules that match `event`, in load order.
  std::vector<const Rule*> Match(const tripline::v1::Event& event) const;
  // The log rules that match `event`, with each match's fields, in load order.
  std::vector<std::pair<const Rule*, LogMatchFields>> MatchLog(
      const tripline::v1::Event& event) const;
  // The cloud rules that match `event`, with each match's fields, in load order.
  std::vector<std::pair<const Rule*, LogMatchFields>> MatchCloud(const CloudEvent& event) const;
  const std::vector<Rule>& rules() const { return rules_; }
  bool AnyIsolates() const;
  // The rule with this id, or null.
  const Rule* Find(std::string_view id) const;

 private:
  std::vector<Rule> rules_;
};

// Loads `path`: a rules file, or a directory whose *.yaml files load in name order. NotFound when
// the path does not exist; InvalidArgument "file:line:col: key: reason" for a bad rule.
absl::StatusOr<RuleSet> LoadRules(const std::string& path);

// Parses one rules document; `name` stands for the file in messages.
absl::StatusOr<RuleSet> ParseRules(std::string_view text, const std::string& name);

}  // namespace tripline::collector
