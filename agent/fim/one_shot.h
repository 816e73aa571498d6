// The one-shot FIM commands for hosts without a collector, AIDE's --init and --check:
//
//   tripline-agent scan  --config F [--json]   take the baseline and store it
//   tripline-agent check --config F [--json]   compare the disk with it and print what differs
//
// Both run the daemon's own scan (tree_scan.h), store (baseline_store.h) and comparison
// (baseline_diff.h). Reports are text for people or JSON for scripts. In JSON every path is given
// as "path" (the bytes when they are UTF-8, else escaped as \xHH) and "path_base64" (the exact
// bytes).
//
// Threads: runs on the caller's thread plus the scan's workers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/fim/baseline_diff.h"
#include "agent/fim/fim_root.h"
#include "agent/fim/tree_scan.h"
#include "platform/runtime/clock.h"

namespace tripline::agent {

struct OneShotOptions {
  std::vector<FimRoot> roots;
  std::string baseline_path;
  int threads = 0;  // 0: four per CPU
};

struct ScanReport {
  uint64_t files = 0;
  uint64_t bytes_hashed = 0;
  int64_t duration_ns = 0;
  std::vector<ScanError> errors;  // unreadable or skipped entries; the scan went on
};

struct CheckReport {
  std::vector<FileChange> changes;  // sorted by path
  uint64_t files = 0;
  uint64_t bytes_hashed = 0;
  int64_t duration_ns = 0;
  std::vector<ScanError> errors;
  std::vector<std::string> warnings;  // e.g. a root whose options changed since the scan
  size_t added() const;
  size_t removed() const;
  size_t changed() const;
};

// Scans every root and replaces the stored baseline with the result. Fails (naming the file)
// when the baseline file cannot be written.
absl::StatusOr<ScanReport> RunScan(const OneShotOptions& options, const Clock& clock);

// Scans every root and compares with the stored baseline. FailedPrecondition when there is no
// baseline for a configured root (run `scan` first); other errors name the baseline file.
absl::StatusOr<CheckReport> RunCheck(const OneShotOptions& options, const Clock& clock);

std::string ScanReportText(const ScanReport& report, const std::string& baseline_path);
std::string ScanReportJson(const ScanReport& report, const std::string& baseline_path);
std::string CheckReportText(const CheckReport& report);
std::string CheckReportJson(const CheckReport& report);

// The value of one attribute as ChangedAttrs names it, for people: "0644", "0:0", "2024-...".
std::string AttrValueText(const tripline::v1::FileState& state, std::string_view attr);

}  // namespace tripline::agent
