// Detection rules: YAML files of `rules:` lists (see packaging/config/rules), loaded from one file
// or from every *.yaml file of a directory in name order. Every loading error names
// file:line:col: unknown keys, bad severities, bad globs, duplicate ids (across files), kinds this
// version does not match yet. A RuleSet is immutable once loaded; share it between threads as a
// std::shared_ptr<const RuleSet> and swap in a new one to reload.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "collector/rules/path_glob.h"
#include "tripline/v1/event.pb.h"

namespace tripline::collector {

// The response a rule asks for when it matches.
enum class RuleResponse { kIsolate };

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

  bool Isolates() const;
  // True when `event` is a FileEvent whose path (or, for RENAMED, old_path) matches a glob and
  // whose change is among `changes`.
  bool Matches(const tripline::v1::Event& event) const;
};

class RuleSet {
 public:
  RuleSet() = default;
  explicit RuleSet(std::vector<Rule> rules) : rules_(std::move(rules)) {}

  // The rules that match `event`, in load order.
  std::vector<const Rule*> Match(const tripline::v1::Event& event) const;
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
