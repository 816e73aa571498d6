// Comparing a scan with a baseline: what was added, removed or changed, and which attributes
// changed. The one comparison behind the daemon's start-up report and rescans and the one-shot
// `check` command.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "agent/fim/baseline_store.h"
#include "agent/fim/fim_root.h"
#include "agent/fim/tree_scan.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

struct FileChange {
  enum Kind { kAdded, kRemoved, kChanged };
  Kind kind = kChanged;
  std::string path;
  tripline::v1::FileState before;  // kRemoved, kChanged
  tripline::v1::FileState after;   // kAdded, kChanged
  bool content = false;            // kChanged: contents (MODIFIED) rather than attributes (ATTRIB)
  std::vector<std::string_view> attrs;  // kChanged: ChangedAttrs()
  std::string note;                     // from the scan
};

// Compares `scan` with `baseline` inside `scope` (paths: an entry at or under one of them takes
// part; others are ignored on both sides). A scanned path missing from the baseline is added, a
// baseline path in scope missing from the scan is removed, and a path in both is changed when the
// attributes its root compares differ. Sorted by path.
std::vector<FileChange> DiffBaseline(const Baseline& baseline, const ScanResult& scan,
                                     const std::vector<FimRoot>& roots,
                                     const std::vector<std::string>& scope);

}  // namespace tripline::agent
