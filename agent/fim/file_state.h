// What the agent knows about one file: its lstat attributes and, for regular files up to a size
// cap, the SHA-256 of its contents (read with O_NOATIME where allowed, pages dropped after, so a
// scan neither touches atimes nor evicts the host's cache). Symlinks are never followed; their
// target is recorded as bytes.
//
// Threads: pure functions; safe from any thread.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>

#include "tripline/v1/event.pb.h"

namespace tripline::agent {

struct FileStateRead {
  bool exists = false;            // false: the path is gone (ENOENT/ENOTDIR)
  tripline::v1::FileState state;  // valid when exists
  std::string note;               // why part of the state is missing, e.g. "open: ... (EACCES)"
  uint64_t bytes_hashed = 0;
};

// Reads `name` relative to `dir_fd` (AT_FDCWD with a full path works too); `path` is used in notes.
// `known` may carry an lstat result the caller already has. Regular files no larger than
// `max_hash_bytes` are hashed; failures to open or read leave sha256 empty and say why in note.
FileStateRead ReadFileStateAt(int dir_fd, const char* name, int64_t max_hash_bytes,
                              const struct stat* known = nullptr);

// The attribute part of a FileState from an lstat result.
tripline::v1::FileState StateFromStat(const struct stat& st);

enum class StateChange {
  kNone,     // nothing compared differs (an identical rewrite lands here)
  kAttrib,   // mode, owner, or link count changed; contents did not
  kContent,  // type, inode, size, contents (sha256; mtime when a side is unhashed) or link target
};

// Compares two states as FIM reports them. Timestamps alone are not a change when both sides
// have a sha256: rewriting a file with the same bytes is not news. When a side has no sha256
// (unreadable, too large) contents compare by size and mtime.
StateChange CompareStates(const tripline::v1::FileState& before,
                          const tripline::v1::FileState& after);

}  // namespace tripline::agent
