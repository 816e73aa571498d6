#include "agent/fim/fim_root.h"

#include <fnmatch.h>

#include "absl/strings/str_format.h"
#include "platform/crypto/digest.h"

namespace tripline::agent {

bool IsExcluded(const std::vector<std::string>& globs, const std::string& path,
                std::string_view base_name) {
  if (globs.empty()) return false;
  const std::string base(base_name);
  for (const std::string& glob : globs) {
    const bool full = glob.find('/') != std::string::npos;
    if (::fnmatch(glob.c_str(), full ? path.c_str() : base.c_str(), 0) == 0) return true;
  }
  return false;
}

bool IsUnder(const std::string& path, const std::string& dir) {
  if (dir == "/") return path.size() > 1 && path[0] == '/';
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

bool IsAtOrUnder(const std::string& path, const std::string& dir) {
  return path == dir || IsUnder(path, dir);
}

std::string RootFingerprint(const FimRoot& root) {
  std::string text = absl::StrFormat("v1|%d|%d|%d|%d|", root.recursive ? 1 : 0, root.max_hash_bytes,
                                     root.attrs, root.one_filesystem ? 1 : 0);
  for (const std::string& glob : root.exclude) {
    text += std::to_string(glob.size());
    text += ':';
    text += glob;
  }
  return Sha256(text);
}

}  // namespace tripline::agent
