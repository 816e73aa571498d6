// Typed access to YAML configuration where every error names the file, line, column and key:
//   "agent.yaml:14:7: fim.paths[0].recursive: expected true or false, got 'yes please'".
// yaml-cpp exceptions never escape this module. Unknown keys are errors (ExpectKeys), so a typo in
// a config does not silently fall back to a default.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "yaml-cpp/yaml.h"

namespace tripline {

class ConfigNode {
 public:
  ConfigNode(YAML::Node node, std::shared_ptr<const std::string> file, std::string key_path);

  bool IsMap() const { return node_.IsMap(); }
  bool IsSequence() const { return node_.IsSequence(); }
  bool IsScalar() const { return node_.IsScalar(); }
  bool IsNull() const { return !node_.IsDefined() || node_.IsNull(); }

  // "file:line:col" of this node.
  std::string Where() const;
  // InvalidArgument "file:line:col: key.path: message".
  absl::Status Error(std::string_view message) const;

  // Ok when this is a map (or null) whose keys are all in `allowed`; otherwise names the first
  // unknown key and where it is.
  absl::Status ExpectKeys(std::initializer_list<std::string_view> allowed) const;
  // Ok when this node is a map (null counts as an empty map).
  absl::Status ExpectMap() const;

  // The child under `key`, or nullopt when absent or null.
  std::optional<ConfigNode> Child(std::string_view key) const;
  absl::StatusOr<ConfigNode> Required(std::string_view key) const;
  // The elements of a sequence (an error when this is not one; empty for null).
  absl::StatusOr<std::vector<ConfigNode>> Elements() const;

  // This scalar's text.
  absl::StatusOr<std::string> AsString() const;

  absl::StatusOr<std::string> String(std::string_view key, std::string fallback) const;
  absl::StatusOr<std::string> RequiredString(std::string_view key) const;
  absl::StatusOr<int64_t> Int(std::string_view key, int64_t fallback, int64_t min,
                              int64_t max) const;
  absl::StatusOr<bool> Bool(std::string_view key, bool fallback) const;
  // A scalar or a sequence of scalars; empty when absent.
  absl::StatusOr<std::vector<std::string>> StringList(std::string_view key) const;
  // A duration like "250ms", "10s", "5m", "2h" or a bare number of seconds, in milliseconds,
  // checked against [min_ms, max_ms].
  absl::StatusOr<int64_t> DurationMs(std::string_view key, int64_t fallback_ms, int64_t min_ms,
                                     int64_t max_ms) const;
  // One of `choices`.
  absl::StatusOr<std::string> Enum(std::string_view key, std::string fallback,
                                   std::initializer_list<std::string_view> choices) const;

  const std::string& key_path() const { return key_path_; }
  const std::string& file() const { return *file_; }

 private:
  ConfigNode ChildNode(const YAML::Node& node, std::string_view key) const;
  YAML::Node node_;
  std::shared_ptr<const std::string> file_;
  std::string key_path_;
};

// Parses a YAML file (at most 4 MiB); syntax errors name file:line:col.
absl::StatusOr<ConfigNode> LoadYamlFile(const std::string& path);
// Parses YAML text; `name` stands for the file in messages.
absl::StatusOr<ConfigNode> LoadYamlString(std::string_view text, const std::string& name);

// Parses a duration ("250ms", "10s", "5m", "2h", "1d" or bare seconds) into milliseconds.
std::optional<int64_t> ParseDurationMs(std::string_view text);

}  // namespace tripline
