// One configured FIM root and the path rules every FIM component shares: what is excluded, what is
// under what, and a fingerprint of a root's options (a stored baseline taken with other options is
// not compared against, it is retaken).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/fim/file_state.h"

namespace tripline::agent {

struct FimRoot {
  std::string path;  // absolute, no trailing '/'
  bool recursive = true;
  std::vector<std::string> exclude;  // fnmatch globs: no '/' -> base name, with '/' -> full path
  int64_t max_hash_bytes = int64_t{64} << 20;
  uint32_t attrs = kDefaultAttrs;  // FileAttr bits compared (and whether contents are read)
  bool one_filesystem = true;      // do not descend into directories on another device
};

// True when `path` (whose last component is `base_name`) matches one of `globs`.
bool IsExcluded(const std::vector<std::string>& globs, const std::string& path,
                std::string_view base_name);

// True when `path` is strictly below directory `dir` ("/etc/x" is under "/etc", "/etcx" is not).
bool IsUnder(const std::string& path, const std::string& dir);

// True when `path` is `dir` or under it.
bool IsAtOrUnder(const std::string& path, const std::string& dir);

// Bytes that change whenever an option that changes what a scan records changes.
std::string RootFingerprint(const FimRoot& root);

}  // namespace tripline::agent
