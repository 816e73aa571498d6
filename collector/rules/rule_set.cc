#include "collector/rules/rule_set.h"

#include <fnmatch.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "absl/strings/str_format.h"
#include "platform/config/config_node.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/errno_status.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {
namespace {

using tripline::v1::Event;
using tripline::v1::FileEvent;

constexpr unsigned kAllChanges = (1u << FileEvent::CREATED) | (1u << FileEvent::MODIFIED) |
                                 (1u << FileEvent::DELETED) | (1u << FileEvent::RENAMED) |
                                 (1u << FileEvent::ATTRIB);

bool ValidRuleId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<unsigned> ParseChange(const ConfigNode& node) {
  ASSIGN_OR_RETURN(std::string text, node.AsString());
  if (text == "created") return 1u << FileEvent::CREATED;
  if (text == "modified") return 1u << FileEvent::MODIFIED;
  if (text == "deleted") return 1u << FileEvent::DELETED;
  if (text == "renamed") return 1u << FileEvent::RENAMED;
  if (text == "attrib") return 1u << FileEvent::ATTRIB;
  return node.Error(absl::StrFormat(
      "'%s' is not a change (expected created, modified, deleted, renamed or attrib)", text));
}

// A scalar or a sequence of scalars.
absl::StatusOr<std::vector<ConfigNode>> ScalarOrList(const ConfigNode& node) {
  if (node.IsScalar()) return std::vector<ConfigNode>{node};
  return node.Elements();
}

absl::StatusOr<std::shared_ptr<const RE2>> CompileRegex(const ConfigNode& node) {
  ASSIGN_OR_RETURN(std::string pattern, node.AsString());
  // Bytes, not UTF-8: log lines are attacker-supplied and need not be UTF-8, and an invalid byte
  // must not let a line slip past a rule. Literals (UTF-8 included) match their bytes; `.` and
  // classes see single bytes.
  RE2::Options options(RE2::Latin1);
  options.set_log_errors(false);
  auto re = std::make_shared<const RE2>(pattern, options);
  if (!re->ok()) {
    return node.Error(absl::StrFormat("bad RE2 '%s': %s", pattern, re->error()));
  }
  return re;
}

// where: a list of {field: NAME, <op>: VALUE}, op one of equals, not_equals, in, not_in
// (a list), matches, not_matches (RE2, partial match).
absl::Status ParseWhere(const ConfigNode& where, Rule* rule) {
  ASSIGN_OR_RETURN(std::vector<ConfigNode> conditions, where.Elements());
  for (const ConfigNode& cond : conditions) {
    RETURN_IF_ERROR(cond.ExpectKeys({"field", "equals", "not_equals", "in", "not_in", "matches",
                                     "not_matches"}));
    FieldCondition c;
    ASSIGN_OR_RETURN(c.field, cond.RequiredString("field"));
    int ops = 0;
    for (const char* op_name :
         {"equals", "not_equals", "in", "not_in", "matches", "not_matches"}) {
      std::optional<ConfigNode> value = cond.Child(op_name);
      if (!value) continue;
      ++ops;
      const std::string op = op_name;
      if (op == "equals" || op == "not_equals") {
        c.op = op == "equals" ? FieldCondition::Op::kEquals : FieldCondition::Op::kNotEquals;
        ASSIGN_OR_RETURN(std::string v, value->AsString());
        c.values.push_back(std::move(v));
      } else if (op == "in" || op == "not_in") {
        c.op = op == "in" ? FieldCondition::Op::kIn : FieldCondition::Op::kNotIn;
        ASSIGN_OR_RETURN(std::vector<ConfigNode> elements, ScalarOrList(*value));
        for (const ConfigNode& e : elements) {
          ASSIGN_OR_RETURN(std::string v, e.AsString());
          c.values.push_back(std::move(v));
        }
      } else {
        c.op = op == "matches" ? FieldCondition::Op::kMatches : FieldCondition::Op::kNotMatches;
        ASSIGN_OR_RETURN(c.regex, CompileRegex(*value));
      }
    }
    if (ops != 1) {
      return cond.Error(
          "expected exactly one of equals, not_equals, in, not_in, matches, not_matches");
    }
    rule->conditions.push_back(std::move(c));
  }
  return absl::OkStatus();
}

absl::Status ParseLogMatch(const ConfigNode& match, Rule* rule) {
  if (match.Child("changes")) return match.Child("changes")->Error("changes: only for kind: file");
  if (std::optional<ConfigNode> source = match.Child("source")) {
    ASSIGN_OR_RETURN(std::vector<ConfigNode> elements, ScalarOrList(*source));
    for (const ConfigNode& e : elements) {
      ASSIGN_OR_RETURN(std::string name, e.AsString());
      rule->sources.push_back(std::move(name));
    }
  }
  ASSIGN_OR_RETURN(rule->field, match.String("field", ""));
  if (std::optional<ConfigNode> regex = match.Child("regex")) {
    ASSIGN_OR_RETURN(rule->regex, CompileRegex(*regex));
  }
  if (std::optional<ConfigNode> where = match.Child("where")) {
    RETURN_IF_ERROR(ParseWhere(*where, rule));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> Strings(const ConfigNode& match, const char* key) {
  std::vector<std::string> out;
  std::optional<ConfigNode> node = match.Child(key);
  if (!node) return out;
  ASSIGN_OR_RETURN(std::vector<ConfigNode> elements, ScalarOrList(*node));
  for (const ConfigNode& e : elements) {
    ASSIGN_OR_RETURN(std::string v, e.AsString());
    if (v.empty()) return e.Error(absl::StrFormat("%s: an empty value", key));
    out.push_back(std::move(v));
  }
  return out;
}

absl::StatusOr<std::vector<Cidr>> Cidrs(const ConfigNode& match, const char* key) {
  std::vector<Cidr> out;
  std::optional<ConfigNode> node = match.Child(key);
  if (!node) return out;
  ASSIGN_OR_RETURN(std::vector<ConfigNode> elements, ScalarOrList(*node));
  for (const ConfigNode& e : elements) {
    ASSIGN_OR_RETURN(std::string v, e.AsString());
    absl::StatusOr<Cidr> c = Cidr::Parse(v);
    if (!c.ok()) return e.Error(std::string(c.status().message()));
    out.push_back(*std::move(c));
  }
  return out;
}

absl::Status ParseCloudMatch(const ConfigNode& match, Rule* rule) {
  for (const char* key : {"paths", "changes", "source", "field", "regex"}) {
    if (match.Child(key)) {
      return match.Child(key)->Error(absl::StrFormat("%s: not for kind: cloud", key));
    }
  }
  ASSIGN_OR_RETURN(rule->event_names, Strings(match, "event_names"));
  ASSIGN_OR_RETURN(rule->event_sources, Strings(match, "event_sources"));
  ASSIGN_OR_RETURN(rule->principals, Strings(match, "principals"));
  ASSIGN_OR_RETURN(rule->principals_allow, Strings(match, "principals_allow"));
  ASSIGN_OR_RETURN(rule->regions, Strings(match, "regions"));
  ASSIGN_OR_RETURN(rule->regions_not, Strings(match, "regions_not"));
  ASSIGN_OR_RETURN(rule->source_ips, Cidrs(match, "source_ips"));
  ASSIGN_OR_RETURN(rule->source_ips_not, Cidrs(match, "source_ips_not"));
  if (std::optional<ConfigNode> where = match.Child("where")) {
    RETURN_IF_ERROR(ParseWhere(*where, rule));
    ASSIGN_OR_RETURN(std::vector<ConfigNode> conditions, where->Elements());
    for (size_t i = 0; i < rule->conditions.size(); ++i) {
      if (absl::Status st = ValidateJsonPath(rule->conditions[i].field); !st.ok()) {
        return conditions[i].Child("field")->Error(std::string(st.message()));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ParseThreshold(const ConfigNode& node, Rule* rule) {
  ASSIGN_OR_RETURN(ConfigNode t, node.Required("threshold"));
  RETURN_IF_ERROR(t.ExpectKeys({"count", "within", "group_by"}));
  RuleThreshold threshold;
  ASSIGN_OR_RETURN(threshold.count, t.Int("count", 0, 1, 1000000));
  if (!t.Child("count")) return t.Error("threshold: count is required");
  if (!t.Child("within")) return t.Error("threshold: within is required (e.g. 60s)");
  ASSIGN_OR_RETURN(int64_t within_ms, t.DurationMs("within", 0, 1, int64_t{7} * 24 * 3600 * 1000));
  threshold.within_ns = within_ms * 1000000;
  ASSIGN_OR_RETURN(threshold.group_by, t.StringList("group_by"));
  rule->threshold = std::move(threshold);
  return absl::OkStatus();
}

// kind: agent, an absence rule: `match: {kind: agent, agents: [globs]}` and
// `absence: {silent_for: 5m}`.
absl::Status ParseAbsence(const ConfigNode& node, const ConfigNode& match, Rule* rule) {
  for (const char* key : {"paths", "changes", "source", "field", "regex", "where", "event_names",
                          "event_sources", "principals", "principals_allow", "source_ips",
                          "source_ips_not", "regions", "regions_not"}) {
    if (match.Child(key)) {
      return match.Child(key)->Error(absl::StrFormat(
          "%s: not for kind: agent (its rules fire on silence: match.agents and absence)", key));
    }
  }
  for (const char* key : {"threshold", "suppress"}) {
    if (node.Child(key))
      return node.Child(key)->Error(absl::StrFormat("%s: only for kind: log", key));
  }
  if (std::optional<ConfigNode> agents = match.Child("agents")) {
    ASSIGN_OR_RETURN(std::vector<ConfigNode> elements, ScalarOrList(*agents));
    for (const ConfigNode& e : elements) {
      ASSIGN_OR_RETURN(std::string pattern, e.AsString());
      absl::StatusOr<PathGlob> glob = PathGlob::Compile(pattern);
      if (!glob.ok()) return e.Error(std::string(glob.status().message()));
      rule->agents.push_back(*std::move(glob));
    }
  }
  std::optional<ConfigNode> absence = node.Child("absence");
  if (!absence) {
    return node.Error("kind: agent needs absence: {silent_for: DURATION} (e.g. silent_for: 5m)");
  }
  RETURN_IF_ERROR(absence->ExpectKeys({"silent_for"}));
  if (!absence->Child("silent_for"))
    return absence->Error("absence: silent_for is required (e.g. 5m)");
  // At least 2 s: the collector looks at last-seen times every second.
  ASSIGN_OR_RETURN(int64_t silent_ms,
                   absence->DurationMs("silent_for", 0, 2000, int64_t{30} * 24 * 3600 * 1000));
  rule->absence_ns = silent_ms * 1000000;
  return absl::OkStatus();
}

absl::StatusOr<Rule> ParseRule(const ConfigNode& node) {
  RETURN_IF_ERROR(node.ExpectKeys({"id", "title", "severity", "match", "response", "response_mode",
                                   "threshold", "suppress", "absence"}));
  if (node.IsNull()) return node.Error("expected a rule (id, title, severity, match)");
  Rule rule;
  rule.where = node.Where();
  ASSIGN_OR_RETURN(rule.id, node.RequiredString("id"));
  if (!ValidRuleId(rule.id)) {
    return node.Child("id")->Error(absl::StrFormat(
        "rule id '%s' must be 1-128 characters of a-z, 0-9, '.', '_' and '-'", rule.id));
  }
  ASSIGN_OR_RETURN(rule.title, node.RequiredString("title"));
  RETURN_IF_ERROR(node.Required("severity").status());
  ASSIGN_OR_RETURN(rule.severity,
                   node.Enum("severity", "", {"low", "medium", "high", "critical"}));

  ASSIGN_OR_RETURN(ConfigNode match, node.Required("match"));
  RETURN_IF_ERROR(match.ExpectKeys({"kind", "paths", "changes", "source", "field", "regex",
                                    "where", "agents", "event_names", "event_sources", "principals",
                                    "principals_allow", "source_ips", "source_ips_not", "regions",
                                    "regions_not"}));
  ASSIGN_OR_RETURN(ConfigNode kind_node, match.Required("kind"));
  ASSIGN_OR_RETURN(std::string kind, kind_node.AsString());
  if (kind != "cloud") {
    for (const char* key : {"event_names", "event_sources", "principals", "principals_allow",
                            "source_ips", "source_ips_not", "regions", "regions_not"}) {
      if (match.Child(key)) {
        return match.Child(key)->Error(absl::StrFormat("%s: only for kind: cloud", key));
      }
    }
  }
  if (kind == "log") {
    rule.kind = RuleKind::kLog;
    RETURN_IF_ERROR(ParseLogMatch(match, &rule));
  } else if (kind == "agent") {
    rule.kind = RuleKind::kAgent;
    RETURN_IF_ERROR(ParseAbsence(node, match, &rule));
  } else if (kind == "cloud") {
    rule.kind = RuleKind::kCloud;
    RETURN_IF_ERROR(ParseCloudMatch(match, &rule));
  } else if (kind != "file") {
    return kind_node.Error(
        absl::StrFormat("unknown kind '%s' (expected 'file', 'log', 'agent' or 'cloud')", kind));
  } else {
    for (const char* key : {"source", "field", "regex", "where"}) {
      if (match.Child(key)) return match.Child(key)->Error(absl::StrFormat("%s: only for kind: log", key));
    }
    for (const char* key : {"threshold", "suppress"}) {
      if (node.Child(key)) {
        return node.Child(key)->Error(absl::StrFormat("%s: only for kind: log or cloud", key));
      }
    }
  }
  if (rule.kind != RuleKind::kAgent) {
    if (match.Child("agents")) return match.Child("agents")->Error("agents: only for kind: agent");
    if (node.Child("absence")) return node.Child("absence")->Error("absence: only for kind: agent");
  }
  if (rule.kind == RuleKind::kLog || rule.kind == RuleKind::kCloud) {
    if (node.Child("threshold")) RETURN_IF_ERROR(ParseThreshold(node, &rule));
    if (rule.kind == RuleKind::kCloud && rule.threshold) {
      for (const std::string& g : rule.threshold->group_by) {
        if (std::find(std::begin(kCloudFields), std::end(kCloudFields), g) ==
            std::end(kCloudFields)) {
          return node.Child("threshold")->Error(absl::StrFormat(
              "group_by '%s': a cloud rule groups by event_name, event_source, region, "
              "principal_arn, access_key_id, source_ip or user_agent",
              g));
        }
      }
    }
    const int64_t default_ms =
        rule.threshold ? rule.threshold->within_ns / 1000000 : int64_t{5} * 60 * 1000;
    ASSIGN_OR_RETURN(int64_t suppress_ms,
                     node.DurationMs("suppress", default_ms, 0, int64_t{30} * 24 * 3600 * 1000));
    rule.suppress_ns = suppress_ms * 1000000;
  }
  if (std::optional<ConfigNode> paths = match.Child("paths")) {
    std::vector<ConfigNode> elements;
    if (paths->IsScalar()) {
      elements.push_back(*paths);
    } else {
      ASSIGN_OR_RETURN(elements, paths->Elements());
    }
    for (const ConfigNode& e : elements) {
      ASSIGN_OR_RETURN(std::string pattern, e.AsString());
      absl::StatusOr<PathGlob> glob = PathGlob::Compile(pattern);
      if (!glob.ok()) return e.Error(std::string(glob.status().message()));
      rule.paths.push_back(*std::move(glob));
    }
  }
  if (std::optional<ConfigNode> changes = match.Child("changes")) {
    std::vector<ConfigNode> elements;
    if (changes->IsScalar()) {
      elements.push_back(*changes);
    } else {
      ASSIGN_OR_RETURN(elements, changes->Elements());
    }
    for (const ConfigNode& e : elements) {
      ASSIGN_OR_RETURN(unsigned bit, ParseChange(e));
      rule.changes |= bit;
    }
  }
  if (rule.changes == 0) rule.changes = kAllChanges;

  if (std::optional<ConfigNode> response = node.Child("response")) {
    std::vector<ConfigNode> elements;
    if (response->IsScalar()) {
      elements.push_back(*response);
    } else {
      ASSIGN_OR_RETURN(elements, response->Elements());
    }
    for (const ConfigNode& e : elements) {
      ASSIGN_OR_RETURN(std::string name, e.AsString());
      if (name == "stop" && rule.kind == RuleKind::kCloud) {
        rule.responses.push_back(RuleResponse::kStop);
        continue;
      }
      if (name != "isolate") {
        return e.Error(absl::StrFormat(
            "unknown response '%s' (expected 'isolate'%s)", name,
            rule.kind == RuleKind::kCloud ? " or 'stop'" : "; 'stop' is for kind: cloud"));
      }
      rule.responses.push_back(RuleResponse::kIsolate);
    }
  }
  ASSIGN_OR_RETURN(rule.response_mode,
                   node.Enum("response_mode", "", {"auto", "approve", "dry-run"}));
  return rule;
}

// Appends the rules of one document to `out`, refusing ids already in `seen` (id -> where).
absl::Status ParseInto(std::string_view text, const std::string& name, std::vector<Rule>* out,
                       std::map<std::string, std::string>* seen) {
  ASSIGN_OR_RETURN(ConfigNode root, LoadYamlString(text, name));
  RETURN_IF_ERROR(root.ExpectKeys({"rules"}));
  std::optional<ConfigNode> list = root.Child("rules");
  if (!list) return absl::OkStatus();  // an empty file is an empty rule set
  ASSIGN_OR_RETURN(std::vector<ConfigNode> elements, list->Elements());
  for (const ConfigNode& e : elements) {
    ASSIGN_OR_RETURN(Rule rule, ParseRule(e));
    auto [it, inserted] = seen->emplace(rule.id, rule.where);
    if (!inserted) {
      return e.Child("id")->Error(
          absl::StrFormat("duplicate rule id '%s' (first defined at %s)", rule.id, it->second));
    }
    out->push_back(std::move(rule));
  }
  return absl::OkStatus();
}

}  // namespace

bool Rule::Isolates() const {
  return std::find(responses.begin(), responses.end(), RuleResponse::kIsolate) != responses.end();
}

bool Rule::CoversAgent(std::string_view agent_id) const {
  if (kind != RuleKind::kAgent) return false;
  if (agents.empty()) return true;
  return std::any_of(agents.begin(), agents.end(),
                     [&](const PathGlob& g) { return g.Matches(agent_id); });
}

bool Rule::Stops() const {
  return std::find(responses.begin(), responses.end(), RuleResponse::kStop) != responses.end();
}

namespace {

bool AnyGlob(const std::vector<std::string>& globs, const std::string& text) {
  return std::any_of(globs.begin(), globs.end(), [&](const std::string& g) {
    return ::fnmatch(g.c_str(), text.c_str(), 0) == 0;
  });
}

bool AnyCidr(const std::vector<Cidr>& cidrs, const std::string& ip) {
  return std::any_of(cidrs.begin(), cidrs.end(), [&](const Cidr& c) { return c.Contains(ip); });
}

bool In(const std::vector<std::string>& list, const std::string& s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

}  // namespace

bool Rule::MatchesCloud(const CloudEvent& event, LogMatchFields* fields) const {
  if (kind != RuleKind::kCloud) return false;
  if (!event_names.empty() && !In(event_names, event.event_name)) return false;
  if (!event_sources.empty() && !In(event_sources, event.event_source)) return false;
  if (!regions.empty() && !In(regions, event.region)) return false;
  if (!regions_not.empty() && In(regions_not, event.region)) return false;
  if (!principals.empty() && !AnyGlob(principals, event.principal_arn)) return false;
  if (!principals_allow.empty() && !event.principal_arn.empty() &&
      AnyGlob(principals_allow, event.principal_arn)) {
    return false;
  }
  if (!source_ips.empty() && !AnyCidr(source_ips, event.source_ip)) return false;
  if (!source_ips_not.empty() && AnyCidr(source_ips_not, event.source_ip)) return false;
  for (const FieldCondition& c : conditions) {
    if (!c.HoldsForValues(JsonPathValues(event, c.field))) return false;
  }
  if (fields != nullptr) {
    *fields = {{"event_name", event.event_name},       {"event_source", event.event_source},
               {"region", event.region},               {"principal_arn", event.principal_arn},
               {"access_key_id", event.access_key_id}, {"source_ip", event.source_ip},
               {"user_agent", event.user_agent}};
  }
  return true;
}

std::vector<std::pair<const Rule*, LogMatchFields>> RuleSet::MatchCloud(
    const CloudEvent& event) const {
  std::vector<std::pair<const Rule*, LogMatchFields>> out;
  for (const Rule& r : rules_) {
    LogMatchFields fields;
    if (r.MatchesCloud(event, &fields)) out.emplace_back(&r, std::move(fields));
  }
  return out;
}

bool FieldCondition::HoldsForValues(const std::vector<std::string>& values) const {
  const bool negative = op == Op::kNotEquals || op == Op::kNotIn || op == Op::kNotMatches;
  bool hit = false;
  for (const std::string& value : values) {
    if (op == Op::kMatches || op == Op::kNotMatches) {
      hit = RE2::PartialMatch(re2::StringPiece(value.data(), value.size()), *regex);
    } else {
      hit = std::find(this->values.begin(), this->values.end(), value) != this->values.end();
    }
    if (hit) break;
  }
  return negative ? !hit : hit;
}

bool Rule::Matches(const Event& event) const {
  if (kind != RuleKind::kFile || !event.has_file()) return false;
  const FileEvent& f = event.file();
  const int change = static_cast<int>(f.change());
  if (change <= 0 || change > 31 || (changes & (1u << change)) == 0) return false;
  if (paths.empty()) return true;
  for (const PathGlob& g : paths) {
    if (g.Matches(f.path())) return true;
    if (f.change() == FileEvent::RENAMED && !f.old_path().empty() && g.Matches(f.old_path())) {
      return true;
    }
  }
  return false;
}

bool FieldCondition::Holds(const LogMatchFields& fields) const {
  const std::string* value = nullptr;
  for (const auto& [k, v] : fields) {
    if (k == field) value = &v;  // the last one wins (captures come after parsed fields)
  }
  const bool negative = op == Op::kNotEquals || op == Op::kNotIn || op == Op::kNotMatches;
  if (value == nullptr) return negative;
  bool hit = false;
  switch (op) {
    case Op::kEquals:
    case Op::kNotEquals:
    case Op::kIn:
    case Op::kNotIn:
      hit = std::find(values.begin(), values.end(), *value) != values.end();
      break;
    case Op::kMatches:
    case Op::kNotMatches:
      hit = RE2::PartialMatch(re2::StringPiece(value->data(), value->size()), *regex);
      break;
  }
  return negative ? !hit : hit;
}

bool Rule::MatchesLog(const Event& event, LogMatchFields* fields) const {
  if (kind != RuleKind::kLog || !event.has_log()) return false;
  const tripline::v1::LogEvent& log = event.log();
  if (!sources.empty() &&
      std::find(sources.begin(), sources.end(), log.source()) == sources.end()) {
    return false;
  }
  if (!paths.empty() && std::none_of(paths.begin(), paths.end(), [&](const PathGlob& g) {
        return g.Matches(log.path());
      })) {
    return false;
  }
  // Most lines match no rule: decide on the regex before copying anything, with a match that
  // asks for no submatches (RE2 answers it from its DFA), and extract captures only on a hit.
  const std::string* subject = &log.line();
  if (!field.empty()) {
    auto it = log.fields().find(field);
    if (it == log.fields().end()) return false;
    subject = &it->second;
  }
  const re2::StringPiece text(subject->data(), subject->size());
  if (regex && !regex->Match(text, 0, text.size(), RE2::UNANCHORED, nullptr, 0)) return false;
  LogMatchFields out;
  out.reserve(2 + log.fields().size() + (regex ? regex->NamedCapturingGroups().size() : 0));
  out.emplace_back("source", log.source());
  out.emplace_back("path", log.path());
  // Parsed fields in name order (the wire map has none), so matches are reproducible.
  const size_t first_parsed = out.size();
  for (const auto& [k, v] : log.fields()) out.emplace_back(k, v);
  std::sort(out.begin() + static_cast<std::ptrdiff_t>(first_parsed), out.end());
  if (regex && !regex->NamedCapturingGroups().empty()) {
    const int n = regex->NumberOfCapturingGroups();
    std::vector<re2::StringPiece> groups(static_cast<size_t>(n) + 1);
    if (!regex->Match(text, 0, text.size(), RE2::UNANCHORED, groups.data(), n + 1)) return false;
    for (const auto& [name, index] : regex->NamedCapturingGroups()) {
      const re2::StringPiece& g = groups[static_cast<size_t>(index)];
      if (g.data() != nullptr) out.emplace_back(name, std::string(g.data(), g.size()));
    }
  }
  for (const FieldCondition& c : conditions) {
    if (!c.Holds(out)) return false;
  }
  if (fields) *fields = std::move(out);
  return true;
}

std::vector<std::pair<const Rule*, LogMatchFields>> RuleSet::MatchLog(const Event& event) const {
  std::vector<std::pair<const Rule*, LogMatchFields>> out;
  if (!event.has_log()) return out;
  for (const Rule& r : rules_) {
    if (r.kind != RuleKind::kLog) continue;
    LogMatchFields fields;
    if (r.MatchesLog(event, &fields)) out.emplace_back(&r, std::move(fields));
  }
  return out;
}

std::vector<const Rule*> RuleSet::Match(const Event& event) const {
  std::vector<const Rule*> out;
  for (const Rule& r : rules_) {
    if (r.Matches(event)) out.push_back(&r);
  }
  return out;
}

bool RuleSet::AnyIsolates() const {
  return std::any_of(rules_.begin(), rules_.end(), [](const Rule& r) { return r.Isolates(); });
}

const Rule* RuleSet::Find(std::string_view id) const {
  for (const Rule& r : rules_) {
    if (r.id == id) return &r;
  }
  return nullptr;
}

absl::StatusOr<RuleSet> ParseRules(std::string_view text, const std::string& name) {
  std::vector<Rule> rules;
  std::map<std::string, std::string> seen;
  RETURN_IF_ERROR(ParseInto(text, name, &rules, &seen));
  return RuleSet(std::move(rules));
}

absl::StatusOr<RuleSet> LoadRules(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "rules: stat", path);
  std::vector<std::string> files;
  if (S_ISDIR(st.st_mode)) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.size() > 5 && name.compare(name.size() - 5, 5, ".yaml") == 0 && name[0] != '.') {
        files.push_back(entry.path().string());
      }
    }
    if (ec) {
      return absl::UnavailableError(
          absl::StrFormat("rules: list directory %s: %s", path, ec.message()));
    }
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  std::vector<Rule> rules;
  std::map<std::string, std::string> seen;
  for (const std::string& file : files) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(file, 4 << 20));
    RETURN_IF_ERROR(ParseInto(text, file, &rules, &seen));
  }
  return RuleSet(std::move(rules));
}

}  // namespace tripline::collector
