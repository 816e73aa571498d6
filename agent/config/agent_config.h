// agent.yaml: what the agent watches, where it reports, and how it batches and retries.
//
// Every key is checked (unknown keys are errors) and every error names file:line:col and the key,
// e.g. "agent.yaml:4:14: collector.plaintext: expected true or false, got 'maybe'". Every optional
// key has a default that works; required: collector.address,
// collector.enrollment_token_file, collector.ca_file (unless plaintext), at least one fim.paths
// entry. `logs` is optional. Loading has no side effects (files named here are read later by their users).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tripline::agent {

struct FimPathConfig {
  std::string path;  // absolute, without a trailing '/' (except "/")
  bool recursive = true;
  // fnmatch globs: without '/' matched against the base name, with '/' against the full path.
  std::vector<std::string> exclude;
  int64_t max_hash_bytes = int64_t{64} << 20;  // larger regular files are reported without sha256
  // What is compared: size, mode, owner, mtime, ctime, inode, links, sha256 (the file type and a
  // symlink's target always are). Without sha256, contents are not read.
  std::vector<std::string> attributes = {"size", "mode", "owner", "inode", "links", "sha256"};
  bool one_filesystem = true;  // do not descend into other filesystems (mounts) below the path
};

// One log source (`logs.sources[]`). See packaging/config/agent.yaml for the meaning of each key.
struct LogSourceConfig {
  std::string name;            // [a-z0-9._-], 1..64 characters, unique
  std::string type = "file";   // file | journald
  // file: absolute paths; the last component may be a glob (fnmatch: * ? [..]), the directories
  // above it may not.
  std::vector<std::string> paths;
  std::string parser = "raw";  // raw | syslog | json
  std::string include;         // RE2, partial match on the line; empty: every line
  std::string exclude;         // RE2; a line matching it is not sent
  std::string start_at = "end";  // end | beginning: for files found when the source starts anew
  int64_t max_line = int64_t{64} << 10;
  int64_t partial_timeout_ms = 5000;
  // journald: only these units (empty: all) and priorities 0..max_priority.
  std::vector<std::string> units;
  int64_t max_priority = 7;
};

struct AgentConfig {
  // [A-Za-z0-9._-], 1..128 characters. Empty (the default for the daemon): the instance id from
  // IMDSv2, with the signed instance identity document sent at enrollment. Set it only off EC2.
  std::string agent_id;
  std::string state_dir = "/var/lib/tripline";
  std::string log_level = "info";

  // Where the instance identity comes from when agent_id is not set.
  struct Imds {
    std::string endpoint = "http://169.254.169.254";
    int64_t timeout_ms = 2000;  // per request
    int64_t attempts = 3;       // per request, on unreachable or 5xx
  } imds;

  struct Collector {
    std::string address;
    bool plaintext = false;
    std::string ca_file;
    std::string cert_file;
    std::string key_file;
    std::string enrollment_token_file;
  } collector;

  struct Fim {
    std::vector<FimPathConfig> paths;
    int64_t threads = 0;             // scan workers; 0: four per CPU
    int64_t debounce_ms = 100;       // a file written without closing is read after a pause...
    int64_t debounce_max_ms = 2000;  // ...or this long after the first write at the latest
    int64_t fallback_scan_interval_ms = 60000;  // scans of directories the watch limit left out
    int64_t max_watches = 0;  // cap on the agent's inotify watches; 0: the kernel's
  } fim;

  struct Logs {
    std::vector<LogSourceConfig> sources;
    int64_t rotate_wait_ms = 5000;  // how long a rotated file is kept open after it stops growing
  } logs;

  struct Batch {
    int64_t max_events = 512;
    int64_t linger_ms = 10;
    // A HEARTBEAT AgentEvent this often, so the collector tells a quiet agent from a silent one.
    int64_t heartbeat_ms = 60000;
  } batch;

  struct Transport {
    int64_t window = 64;
    int64_t backoff_initial_ms = 200;
    int64_t backoff_max_ms = 30000;
  } transport;

  // Sealed batches wait here, on disk, until the collector acks them (agent/spool).
  struct Spool {
    std::string dir;  // default: <state_dir>/spool
    int64_t max_bytes = int64_t{256} << 20;  // at the cap, sealing pauses (back-pressure)
  } spool;
};

// What the config is for: the daemon needs its identity and collector; the one-shot `scan` and
// `check` commands (hosts without a collector) need only state_dir and fim, and check the other
// keys only when present.
enum class AgentConfigUse { kDaemon, kOneShot };

// Reads and checks `path`. InvalidArgument with file:line:col for any problem in it; NotFound etc.
// when it cannot be read.
absl::StatusOr<AgentConfig> LoadAgentConfig(const std::string& path,
                                            AgentConfigUse use = AgentConfigUse::kDaemon);

// The same for YAML text; `name` stands for the file in messages.
absl::StatusOr<AgentConfig> ParseAgentConfig(std::string_view text, const std::string& name,
                                             AgentConfigUse use = AgentConfigUse::kDaemon);

// True for 1..128 characters of [A-Za-z0-9._-].
bool ValidAgentId(std::string_view agent_id);

}  // namespace tripline::agent
