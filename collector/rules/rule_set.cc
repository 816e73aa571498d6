#include "collector/rules/rule_set.h"

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

absl::StatusOr<Rule> ParseRule(const ConfigNode& node) {
  RETURN_IF_ERROR(
      node.ExpectKeys({"id", "title", "severity", "match", "response", "response_mode"}));
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
  RETURN_IF_ERROR(match.ExpectKeys({"kind", "paths", "changes"}));
  ASSIGN_OR_RETURN(ConfigNode kind_node, match.Required("kind"));
  ASSIGN_OR_RETURN(std::string kind, kind_node.AsString());
  if (kind != "file") {
    if (kind == "log" || kind == "agent") {
      return kind_node.Error(absl::StrFormat(
          "kind '%s' is not supported by this version yet (only 'file')", kind));
    }
    return kind_node.Error(absl::StrFormat("unknown kind '%s' (expected 'file')", kind));
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
      if (name != "isolate") {
        return e.Error(absl::StrFormat("unknown response '%s' (expected 'isolate')", name));
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

bool Rule::Matches(const Event& event) const {
  if (!event.has_file()) return false;
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
