#include "agent/config/agent_config.h"

#include <algorithm>
#include <iterator>
#include <set>

#include "absl/strings/str_format.h"
#include "re2/re2.h"
#include "platform/config/config_node.h"
#include "platform/net/plain_http.h"
#include "platform/runtime/status_macros.h"

namespace tripline::agent {
namespace {

absl::StatusOr<FimPathConfig> ParseFimPath(const ConfigNode& node) {
  FimPathConfig out;
  if (node.IsScalar()) {  // "- /etc" is shorthand for "- path: /etc"
    ASSIGN_OR_RETURN(out.path, node.AsString());
  } else {
    RETURN_IF_ERROR(node.ExpectKeys(
        {"path", "recursive", "exclude", "max_hash_bytes", "attributes", "one_filesystem"}));
    ASSIGN_OR_RETURN(out.path, node.RequiredString("path"));
    ASSIGN_OR_RETURN(out.recursive, node.Bool("recursive", out.recursive));
    ASSIGN_OR_RETURN(out.exclude, node.StringList("exclude"));
    ASSIGN_OR_RETURN(out.max_hash_bytes,
                     node.Int("max_hash_bytes", out.max_hash_bytes, 0, int64_t{1} << 40));
    if (std::optional<ConfigNode> attrs = node.Child("attributes")) {
      ASSIGN_OR_RETURN(out.attributes, node.StringList("attributes"));
      static constexpr std::string_view kKnown[] = {"size",  "mode",  "owner", "mtime",
                                                    "ctime", "inode", "links", "sha256"};
      for (const std::string& a : out.attributes) {
        if (std::find(std::begin(kKnown), std::end(kKnown), a) == std::end(kKnown)) {
          return attrs->Error(absl::StrFormat(
              "unknown attribute '%s' (expected size, mode, owner, mtime, ctime, inode, links, "
              "sha256)",
              a));
        }
      }
    }
    ASSIGN_OR_RETURN(out.one_filesystem, node.Bool("one_filesystem", out.one_filesystem));
  }
  if (out.path.empty() || out.path[0] != '/') {
    return node.Error(absl::StrFormat("path must be absolute, got '%s'", out.path));
  }
  while (out.path.size() > 1 && out.path.back() == '/') out.path.pop_back();
  for (const std::string& glob : out.exclude) {
    if (glob.empty()) return node.Error("exclude: empty glob");
  }
  return out;
}

bool ValidSourceName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::Status CheckRegex(const ConfigNode& node, std::string_view key, const std::string& pattern) {
  if (pattern.empty()) return absl::OkStatus();
  RE2::Options options(RE2::Latin1);  // as the tailer compiles it: bytes, not UTF-8
  options.set_log_errors(false);
  RE2 re(pattern, options);
  if (!re.ok()) {
    return node.Child(key)->Error(absl::StrFormat("bad RE2 '%s': %s", pattern, re.error()));
  }
  return absl::OkStatus();
}

absl::StatusOr<LogSourceConfig> ParseLogSource(const ConfigNode& node) {
  RETURN_IF_ERROR(node.ExpectKeys({"name", "type", "paths", "parser", "include", "exclude",
                                   "start_at", "max_line", "partial_timeout", "units",
                                   "max_priority"}));
  LogSourceConfig s;
  ASSIGN_OR_RETURN(s.name, node.RequiredString("name"));
  if (!ValidSourceName(s.name)) {
    return node.Child("name")->Error(
        absl::StrFormat("source name '%s' must be 1-64 characters of a-z, 0-9, '.', '_', '-'",
                        s.name));
  }
  ASSIGN_OR_RETURN(s.type, node.Enum("type", s.type, {"file", "journald"}));
  ASSIGN_OR_RETURN(s.parser, node.Enum("parser", s.type == "journald" ? "raw" : s.parser,
                                       {"raw", "syslog", "json"}));
  ASSIGN_OR_RETURN(s.include, node.String("include", ""));
  ASSIGN_OR_RETURN(s.exclude, node.String("exclude", ""));
  RETURN_IF_ERROR(CheckRegex(node, "include", s.include));
  RETURN_IF_ERROR(CheckRegex(node, "exclude", s.exclude));
  ASSIGN_OR_RETURN(s.start_at, node.Enum("start_at", s.start_at, {"end", "beginning"}));
  ASSIGN_OR_RETURN(s.max_line, node.Int("max_line", s.max_line, 256, int64_t{16} << 20));
  ASSIGN_OR_RETURN(s.partial_timeout_ms,
                   node.DurationMs("partial_timeout", s.partial_timeout_ms, 1, 3600 * 1000));
  ASSIGN_OR_RETURN(s.paths, node.StringList("paths"));
  ASSIGN_OR_RETURN(s.units, node.StringList("units"));
  ASSIGN_OR_RETURN(s.max_priority, node.Int("max_priority", s.max_priority, 0, 7));
  if (s.type == "file") {
    if (s.paths.empty()) return node.Error("paths: at least one path is required (type: file)");
    if (!s.units.empty()) return node.Child("units")->Error("units: only for type: journald");
    for (const std::string& p : s.paths) {
      const size_t slash = p.rfind('/');
      if (p.empty() || p[0] != '/' || slash == p.size() - 1) {
        return node.Child("paths")->Error(
            absl::StrFormat("'%s': expected an absolute path to a file or a glob of files", p));
      }
      if (p.substr(0, slash).find_first_of("*?[") != std::string::npos) {
        return node.Child("paths")->Error(absl::StrFormat(
            "'%s': only the last component may be a glob (directories are watched by name)", p));
      }
    }
  } else if (!s.paths.empty()) {
    return node.Child("paths")->Error("paths: not for type: journald (use units)");
  }
  return s;
}

absl::StatusOr<AgentConfig> Parse(const ConfigNode& root, AgentConfigUse use) {
  AgentConfig c;
  RETURN_IF_ERROR(root.ExpectKeys(
      {"agent_id", "state_dir", "log_level", "collector", "fim", "logs", "batch", "transport",
       "spool", "imds"}));

  const bool daemon = use == AgentConfigUse::kDaemon;
  if (root.Child("agent_id").has_value()) {
    ASSIGN_OR_RETURN(c.agent_id, root.RequiredString("agent_id"));
  }
  if (!c.agent_id.empty() && !ValidAgentId(c.agent_id)) {
    ASSIGN_OR_RETURN(ConfigNode id, root.Required("agent_id"));
    return id.Error("expected 1..128 characters of [A-Za-z0-9._-]");
  }
  if (std::optional<ConfigNode> imds = root.Child("imds")) {
    RETURN_IF_ERROR(imds->ExpectKeys({"endpoint", "timeout", "attempts"}));
    ASSIGN_OR_RETURN(c.imds.endpoint, imds->String("endpoint", c.imds.endpoint));
    if (absl::Status st = ParsePlainHttpEndpoint(c.imds.endpoint).status(); !st.ok()) {
      return imds->Child("endpoint")->Error(std::string(st.message()));
    }
    while (c.imds.endpoint.size() > 8 && c.imds.endpoint.back() == '/') c.imds.endpoint.pop_back();
    ASSIGN_OR_RETURN(c.imds.timeout_ms, imds->DurationMs("timeout", c.imds.timeout_ms, 1, 60000));
    ASSIGN_OR_RETURN(c.imds.attempts, imds->Int("attempts", c.imds.attempts, 1, 20));
  }
  ASSIGN_OR_RETURN(c.state_dir, root.String("state_dir", c.state_dir));
  if (c.state_dir.empty()) return root.Error("state_dir must not be empty");
  ASSIGN_OR_RETURN(c.log_level, root.Enum("log_level", c.log_level,
                                          {"trace", "debug", "info", "warn", "error"}));

  if (daemon || root.Child("collector").has_value()) {
    ASSIGN_OR_RETURN(ConfigNode collector, root.Required("collector"));
    RETURN_IF_ERROR(collector.ExpectKeys(
        {"address", "plaintext", "ca_file", "cert_file", "key_file", "enrollment_token_file"}));
    ASSIGN_OR_RETURN(c.collector.address, collector.RequiredString("address"));
    ASSIGN_OR_RETURN(c.collector.plaintext, collector.Bool("plaintext", false));
    ASSIGN_OR_RETURN(c.collector.ca_file, collector.String("ca_file", ""));
    ASSIGN_OR_RETURN(c.collector.cert_file, collector.String("cert_file", ""));
    ASSIGN_OR_RETURN(c.collector.key_file, collector.String("key_file", ""));
    ASSIGN_OR_RETURN(c.collector.enrollment_token_file,
                     collector.RequiredString("enrollment_token_file"));
    if (!c.collector.plaintext && c.collector.ca_file.empty()) {
      return collector.Error("ca_file is required unless plaintext: true");
    }
    if (c.collector.cert_file.empty() != c.collector.key_file.empty()) {
      return collector.Error("cert_file and key_file go together (mTLS): set both or neither");
    }
  }

  ASSIGN_OR_RETURN(ConfigNode fim, root.Required("fim"));
  RETURN_IF_ERROR(fim.ExpectKeys(
      {"paths", "threads", "debounce", "debounce_max", "fallback_scan_interval", "max_watches"}));
  ASSIGN_OR_RETURN(c.fim.threads, fim.Int("threads", c.fim.threads, 0, 64));
  ASSIGN_OR_RETURN(c.fim.debounce_ms, fim.DurationMs("debounce", c.fim.debounce_ms, 0, 60000));
  ASSIGN_OR_RETURN(c.fim.debounce_max_ms,
                   fim.DurationMs("debounce_max", c.fim.debounce_max_ms, 0, 600000));
  if (c.fim.debounce_max_ms < c.fim.debounce_ms) {
    return fim.Error("debounce_max must be at least debounce");
  }
  ASSIGN_OR_RETURN(c.fim.fallback_scan_interval_ms,
                   fim.DurationMs("fallback_scan_interval", c.fim.fallback_scan_interval_ms, 100,
                                  24 * 3600 * 1000));
  ASSIGN_OR_RETURN(c.fim.max_watches, fim.Int("max_watches", c.fim.max_watches, 0, 1 << 30));
  ASSIGN_OR_RETURN(ConfigNode paths, fim.Required("paths"));
  ASSIGN_OR_RETURN(std::vector<ConfigNode> entries, paths.Elements());
  if (entries.empty()) return paths.Error("at least one path is required");
  for (const ConfigNode& e : entries) {
    ASSIGN_OR_RETURN(FimPathConfig p, ParseFimPath(e));
    c.fim.paths.push_back(std::move(p));
  }

  if (std::optional<ConfigNode> logs = root.Child("logs")) {
    RETURN_IF_ERROR(logs->ExpectKeys({"sources", "rotate_wait"}));
    ASSIGN_OR_RETURN(c.logs.rotate_wait_ms,
                     logs->DurationMs("rotate_wait", c.logs.rotate_wait_ms, 0, 3600 * 1000));
    std::set<std::string> names;
    if (std::optional<ConfigNode> sources = logs->Child("sources")) {
      ASSIGN_OR_RETURN(std::vector<ConfigNode> source_nodes, sources->Elements());
      for (const ConfigNode& e : source_nodes) {
        ASSIGN_OR_RETURN(LogSourceConfig s, ParseLogSource(e));
        if (!names.insert(s.name).second) {
          return e.Child("name")->Error(absl::StrFormat("duplicate source name '%s'", s.name));
        }
        c.logs.sources.push_back(std::move(s));
      }
    }
  }

  if (std::optional<ConfigNode> batch = root.Child("batch")) {
    RETURN_IF_ERROR(batch->ExpectKeys({"max_events", "linger", "heartbeat"}));
    ASSIGN_OR_RETURN(c.batch.max_events, batch->Int("max_events", c.batch.max_events, 1, 65536));
    ASSIGN_OR_RETURN(c.batch.linger_ms, batch->DurationMs("linger", c.batch.linger_ms, 0, 60000));
    ASSIGN_OR_RETURN(c.batch.heartbeat_ms,
                     batch->DurationMs("heartbeat", c.batch.heartbeat_ms, 1000, 3600 * 1000));
  }

  if (std::optional<ConfigNode> transport = root.Child("transport")) {
    RETURN_IF_ERROR(transport->ExpectKeys({"window", "backoff_initial", "backoff_max"}));
    ASSIGN_OR_RETURN(c.transport.window, transport->Int("window", c.transport.window, 1, 4096));
    ASSIGN_OR_RETURN(
        c.transport.backoff_initial_ms,
        transport->DurationMs("backoff_initial", c.transport.backoff_initial_ms, 1, 3600 * 1000));
    ASSIGN_OR_RETURN(
        c.transport.backoff_max_ms,
        transport->DurationMs("backoff_max", c.transport.backoff_max_ms, 1, 3600 * 1000));
    if (c.transport.backoff_max_ms < c.transport.backoff_initial_ms) {
      return transport->Error("backoff_max must be at least backoff_initial");
    }
  }

  c.spool.dir = c.state_dir + "/spool";
  if (std::optional<ConfigNode> spool = root.Child("spool")) {
    RETURN_IF_ERROR(spool->ExpectKeys({"dir", "max_bytes"}));
    ASSIGN_OR_RETURN(c.spool.dir, spool->String("dir", c.spool.dir));
    if (c.spool.dir.empty() || c.spool.dir[0] != '/') {
      return spool->Error(absl::StrFormat("dir must be an absolute path, got '%s'", c.spool.dir));
    }
    ASSIGN_OR_RETURN(c.spool.max_bytes, spool->Int("max_bytes", c.spool.max_bytes, int64_t{1} << 16,
                                                   int64_t{1} << 40));
  }
  return c;
}

}  // namespace

bool ValidAgentId(std::string_view agent_id) {
  if (agent_id.empty() || agent_id.size() > 128) return false;
  for (char ch : agent_id) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<AgentConfig> LoadAgentConfig(const std::string& path, AgentConfigUse use) {
  ASSIGN_OR_RETURN(ConfigNode root, LoadYamlFile(path));
  return Parse(root, use);
}

absl::StatusOr<AgentConfig> ParseAgentConfig(std::string_view text, const std::string& name,
                                             AgentConfigUse use) {
  ASSIGN_OR_RETURN(ConfigNode root, LoadYamlString(text, name));
  return Parse(root, use);
}

}  // namespace tripline::agent
