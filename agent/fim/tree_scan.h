// The parallel walker and hasher behind every full FIM scan: the daemon's start and rescans, and
// the one-shot `scan` and `check` commands.
//
// A pool of worker threads (four per CPU by default, so reads from a cold cache overlap) shares
// one LIFO stack of tasks: "list this directory" and "hash this large file". A lister stats each
// entry with fstatat relative to the directory's fd (never following symlinks, names as bytes),
// hashes small regular files itself and hands large ones to the pool, so one directory of big
// libraries is hashed by every core. `on_directory` runs before a directory is opened for listing,
// so a caller that installs an inotify watch there misses nothing created while the scan runs.
// Directories on another device (one_filesystem), directory loops (a bind mount of an ancestor) and
// nesting deeper than kMaxWalkDepth are recorded but not descended, with a ScanError saying why.
// Unreadable entries are recorded with a note; the scan goes on.
//
// Threads: ScanTrees blocks its caller and joins its workers before returning; `on_directory`
// is called from the workers concurrently and must be thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "agent/fim/fim_root.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

struct ScannedFile {
  std::string path;
  size_t root = 0;  // index into the roots passed to ScanTrees
  tripline::v1::FileState state;
  std::string note;  // why part of the state is missing
};

struct ScanError {
  std::string path;
  std::string message;  // "open /x: Permission denied (EACCES)"
};

struct ScanResult {
  std::vector<ScannedFile> files;  // sorted by path (bytewise)
  std::vector<ScanError> errors;
  uint64_t bytes_hashed = 0;
};

// Where a scan starts: a root, or a directory below one (the root's options apply).
struct ScanStart {
  size_t root = 0;
  std::string path;
};

struct TreeScanOptions {
  int threads = 0;  // 0: four per online CPU (reads of a cold cache overlap), at most 64
  // Called (from any worker) with the root index and path of each directory about to be listed.
  std::function<void(size_t, const std::string&)> on_directory;
  const std::atomic<bool>* cancel = nullptr;  // set: workers stop taking tasks
};

// Scans every start. A start that cannot be stat'd is a ScanError (a missing root, say).
ScanResult ScanTrees(const std::vector<FimRoot>& roots, const std::vector<ScanStart>& starts,
                     const TreeScanOptions& options);

// Every root from its top.
std::vector<ScanStart> AllRoots(const std::vector<FimRoot>& roots);

}  // namespace tripline::agent
