#include "platform/config/config_node.h"

#include <charconv>

#include "absl/strings/str_format.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/status_macros.h"

namespace tripline {
namespace {

std::string JoinChoices(std::initializer_list<std::string_view> choices) {
  std::string out;
  for (std::string_view c : choices) {
    if (!out.empty()) out += ", ";
    out += c;
  }
  return out;
}

}  // namespace

ConfigNode::ConfigNode(YAML::Node node, std::shared_ptr<const std::string> file,
                       std::string key_path)
    : node_(std::move(node)), file_(std::move(file)), key_path_(std::move(key_path)) {}

std::string ConfigNode::Where() const {
  YAML::Mark m = node_.Mark();
  if (m.is_null()) return *file_;
  return absl::StrFormat("%s:%d:%d", *file_, m.line + 1, m.column + 1);
}

absl::Status ConfigNode::Error(std::string_view message) const {
  if (key_path_.empty()) return absl::InvalidArgumentError(absl::StrFormat("%s: %s", Where(), message));
  return absl::InvalidArgumentError(absl::StrFormat("%s: %s: %s", Where(), key_path_, message));
}

absl::Status ConfigNode::ExpectMap() const {
  if (IsNull() || node_.IsMap()) return absl::OkStatus();
  return Error("expected a mapping of keys to values");
}

absl::Status ConfigNode::ExpectKeys(std::initializer_list<std::string_view> allowed) const {
  RETURN_IF_ERROR(ExpectMap());
  if (IsNull()) return absl::OkStatus();
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    if (!it->first.IsScalar()) {
      return ConfigNode(it->first, file_, key_path_).Error("keys must be plain strings");
    }
    const std::string key = it->first.Scalar();
    bool known = false;
    for (std::string_view a : allowed) known = known || a == key;
    if (!known) {
      return ConfigNode(it->first, file_, key_path_)
          .Error(absl::StrFormat("unknown key '%s' (expected one of: %s)", key,
                                 JoinChoices(allowed)));
    }
  }
  return absl::OkStatus();
}

ConfigNode ConfigNode::ChildNode(const YAML::Node& node, std::string_view key) const {
  return ConfigNode(node, file_, key_path_.empty() ? std::string(key) : absl::StrFormat("%s.%s", key_path_, key));
}

std::optional<ConfigNode> ConfigNode::Child(std::string_view key) const {
  if (!node_.IsMap()) return std::nullopt;
  YAML::Node child = node_[std::string(key)];
  if (!child.IsDefined() || child.IsNull()) return std::nullopt;
  return ChildNode(child, key);
}

absl::StatusOr<ConfigNode> ConfigNode::Required(std::string_view key) const {
  RETURN_IF_ERROR(ExpectMap());
  std::optional<ConfigNode> child = Child(key);
  if (!child) return Error(absl::StrFormat("missing required key '%s'", key));
  return *child;
}

absl::StatusOr<std::vector<ConfigNode>> ConfigNode::Elements() const {
  std::vector<ConfigNode> out;
  if (IsNull()) return out;
  if (!node_.IsSequence()) return Error("expected a list");
  for (size_t i = 0; i < node_.size(); ++i) {
    out.emplace_back(node_[i], file_, absl::StrFormat("%s[%d]", key_path_, i));
  }
  return out;
}

absl::StatusOr<std::string> ConfigNode::AsString() const {
  if (!node_.IsScalar()) return Error("expected a single value");
  return node_.Scalar();
}

absl::StatusOr<std::string> ConfigNode::String(std::string_view key, std::string fallback) const {
  RETURN_IF_ERROR(ExpectMap());
  std::optional<ConfigNode> child = Child(key);
  if (!child) return fallback;
  return child->AsString();
}

absl::StatusOr<std::string> ConfigNode::RequiredString(std::string_view key) const {
  ASSIGN_OR_RETURN(ConfigNode child, Required(key));
  ASSIGN_OR_RETURN(std::string value, child.AsString());
  if (value.empty()) return child.Error("must not be empty");
  return value;
}

absl::StatusOr<int64_t> ConfigNode::Int(std::string_view key, int64_t fallback, int64_t min,
                                        int64_t max) const {
  RETURN_IF_ERROR(ExpectMap());
  std::optional<ConfigNode> child = Child(key);
  if (!child) return fallback;
  ASSIGN_OR_RETURN(std::string text, child->AsString());
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return child->Error(absl::StrFormat("expected a whole number, got '%s'", text));
  }
  if (value < min || value > max) {
    return child->Error(absl::StrFormat("%d is out of range [%d, %d]", value, min, max));
  }
  return value;
}

absl::StatusOr<bool> ConfigNode::Bool(std::string_view key, bool fallback) const {
  RETURN_IF_ERROR(ExpectMap());
  std::optional<ConfigNode> child = Child(key);
  if (!child) return fallback;
  ASSIGN_OR_RETURN(std::string text, child->AsString());
  if (text == "true") return true;
  if (text == "false") return false;
  return child->Error(absl::StrFormat("expected true or false, got '%s'", text));
}

absl::StatusOr<std::vector<std::string>> ConfigNode::StringList(std::string_view key) const {
  RETURN_IF_ERROR(ExpectMap());
  std::vector<std::string> out;
  std::optional<ConfigNode> child = Child(key);
  if (!child) return out;
  if (child->IsScalar()) {
    out.push_back(child->node_.Scalar());
    return out;
  }
  ASSIGN_OR_RETURN(std::vector<ConfigNode> elements, child->Elements());
  for (const ConfigNode& e : elements) {
    ASSIGN_OR_RETURN(std::string s, e.AsString());
    out.push_back(std::move(s));
  }
  return out;
}

std::optional<int64_t> ParseDurationMs(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || value < 0) return std::nullopt;
  std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  int64_t mult = 0;
  if (unit.empty() || unit == "s") mult = 1000;
  else if (unit == "ms") mult = 1;
  else if (unit == "m") mult = 60'000;
  else if (unit == "h") mult = 3'600'000;
  else if (unit == "d") mult = 86'400'000;
  else return std::nullopt;
  if (value > INT64_MAX / mult) return std::nullopt;
  return value * mult;
}

absl::StatusOr<int64_t> ConfigNode::DurationMs(std::string_view key, int64_t fallback_ms,
                                               int64_t min_ms, int64_t max_ms) const {
  RETURN_IF_ERROR(ExpectMap());
  std::optional<ConfigNode> child = Child(key);
  if (!child) return fallback_ms;
  ASSIGN_OR_RETURN(std::string text, child->AsString());
  std::optional<int64_t> ms = ParseDurationMs(text);
  if (!ms) {
    return child->Error(
        absl::StrFormat("expected a duration like 250ms, 10s, 5m, 2h or 1d, got '%s'", text));
  }
  if (*ms < min_ms || *ms > max_ms) {
    return child->Error(absl::StrFormat("%s is out of range [%dms, %dms]", text, min_ms, max_ms));
  }
  return *ms;
}

absl::StatusOr<std::string> ConfigNode::Enum(std::string_view key, std::string fallback,
                                             std::initializer_list<std::string_view> choices) const {
  RETURN_IF_ERROR(ExpectMap());
  std::optional<ConfigNode> child = Child(key);
  if (!child) return fallback;
  ASSIGN_OR_RETURN(std::string text, child->AsString());
  for (std::string_view c : choices) {
    if (c == text) return text;
  }
  return child->Error(
      absl::StrFormat("'%s' is not one of: %s", text, JoinChoices(choices)));
}

absl::StatusOr<ConfigNode> LoadYamlString(std::string_view text, const std::string& name) {
  auto file = std::make_shared<const std::string>(name);
  try {
    YAML::Node root = YAML::Load(std::string(text));
    return ConfigNode(root, file, "");
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrFormat("%s:%d:%d: %s", name, e.mark.line + 1,
                                                      e.mark.column + 1, e.msg));
  }
}

absl::StatusOr<ConfigNode> LoadYamlFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 4 << 20));
  return LoadYamlString(text, path);
}

}  // namespace tripline
