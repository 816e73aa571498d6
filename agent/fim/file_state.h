// What the agent knows about one file: its lstat attributes and, for regular files up to a size
// cap, the SHA-256 of its contents (read with O_NOATIME where allowed). Pages the read brought into
// the page cache are dropped afterwards, pages that were cached before are left alone, so a scan
// neither touches atimes nor evicts the host's cache. Symlinks are never followed; their target is
// recorded as bytes.
//
// Threads: pure functions; safe from any thread.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

// Attributes a root compares (a bit set). The file type and a symlink's target are always
// compared: a file replaced by a directory or a retargeted link is always news.
enum FileAttr : uint32_t {
  kAttrSize = 1u << 0,
  kAttrMode = 1u << 1,   // permission bits (and setuid/setgid/sticky)
  kAttrOwner = 1u << 2,  // uid and gid
  kAttrMtime = 1u << 3,
  kAttrCtime = 1u << 4,
  kAttrInode = 1u << 5,   // inode and device
  kAttrLinks = 1u << 6,   // hard link count
  kAttrSha256 = 1u << 7,  // contents; without it regular files are not read at all
};
inline constexpr uint32_t kDefaultAttrs =
    kAttrSize | kAttrMode | kAttrOwner | kAttrInode | kAttrLinks | kAttrSha256;
inline constexpr uint32_t kAllAttrs = (kAttrSha256 << 1) - 1;

// "size", "mode", "owner", "mtime", "ctime", "inode", "links", "sha256" -> bits. InvalidArgument
// names the unknown word.
absl::StatusOr<uint32_t> ParseFileAttrs(const std::vector<std::string>& names);

struct FileStateRead {
  bool exists = false;            // false: the path is gone (ENOENT/ENOTDIR)
  tripline::v1::FileState state;  // valid when exists
  std::string note;               // why part of the state is missing, e.g. "open: ... (EACCES)"
  uint64_t bytes_hashed = 0;
};

// Reads `name` relative to `dir_fd` (AT_FDCWD with a full path works too). `known` may carry an
// lstat result the caller already has. With `hash`, regular files no larger than
// `max_hash_bytes` are hashed; failures to open or read leave sha256 empty and say why in note.
FileStateRead ReadFileStateAt(int dir_fd, const char* name, int64_t max_hash_bytes,
                              const struct stat* known = nullptr, bool hash = true);

// The attribute part of a FileState from an lstat result.
tripline::v1::FileState StateFromStat(const struct stat& st);

enum class StateChange {
  kNone,     // nothing compared differs (an identical rewrite lands here)
  kAttrib,   // only attributes changed (mode, owner, links, times); contents did not
  kContent,  // type, inode, size, contents (sha256; mtime when a side is unhashed) or link target
};

// The names of the compared attributes that differ between `before` and `after`, in a fixed
// order: "type", "target", "inode", "size", "sha256", "mtime", "ctime", "mode", "owner", "links".
// Timestamps alone are not a change unless asked for: rewriting a file with the same bytes is not
// news. When sha256 is compared but a side has none (unreadable, too large, being written),
// contents compare by size and mtime, and a hash where there was none counts as a sha256 change.
// Directories compare without contents, size and times: their entries are reported as their own
// events.
std::vector<std::string_view> ChangedAttrs(const tripline::v1::FileState& before,
                                           const tripline::v1::FileState& after,
                                           uint32_t attrs = kDefaultAttrs);

// Classifies ChangedAttrs: kContent when one of type/target/inode/size/sha256 (or the unhashed
// mtime fallback) changed, else kAttrib when anything did.
StateChange CompareStates(const tripline::v1::FileState& before,
                          const tripline::v1::FileState& after, uint32_t attrs = kDefaultAttrs);

}  // namespace tripline::agent
