// A directory-tree walker on openat/fstatat that never follows symlinks and treats names as bytes.
//
// The walk is pre-order: `visit` sees a directory before the walker opens it for listing, so a
// caller that installs an inotify watch in `visit` cannot miss an entry created while the
// directory is being listed. Each directory is opened relative to its parent's fd (O_NOFOLLOW), so
// a directory swapped for a symlink mid-walk is not followed. Entries that cannot be read are
// reported to `on_error` and the walk goes on.
//
// Threads: runs on the caller's thread; keeps one fd open per level of depth (capped at
// kMaxWalkDepth).
#pragma once

#include <sys/stat.h>

#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace tripline {

inline constexpr int kMaxWalkDepth = 256;

struct WalkEntry {
  const std::string& path;  // root-relative joined path: root + "/" + names...
  int dir_fd;               // fd of the directory holding the entry (AT_FDCWD for the root)
  const char* name;         // name relative to dir_fd (the root's full path for the root)
  const struct stat& st;    // lstat of the entry
  int depth;                // 0 for the root
};

enum class WalkAction {
  kContinue,  // descend into this entry if it is a directory (and the walk is recursive)
  kSkip,      // do not descend
};

struct WalkOptions {
  bool recursive = true;  // false: the root and its direct entries only
};

// Visits `root` and, when it is a directory, its entries. Returns an error only when the root
// itself cannot be stat'd (NotFound, PermissionDenied, ... naming it); other failures go to
// `on_error(path, status)` and the walk continues.
absl::Status WalkTree(const std::string& root, const WalkOptions& options,
                      const std::function<WalkAction(const WalkEntry&)>& visit,
                      const std::function<void(const std::string&, const absl::Status&)>& on_error);

// Joins a directory path and an entry name ("/" + "etc" -> "/etc", "/etc" + "passwd" ->
// "/etc/passwd").
std::string JoinPath(const std::string& dir, std::string_view name);

}  // namespace tripline
