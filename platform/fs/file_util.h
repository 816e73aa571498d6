// Whole-file reads and crash-safe whole-file writes. Paths are bytes (std::string), never assumed
// to be UTF-8.
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace tripline {

// Reads all of `path`, refusing files larger than `max_bytes` (ResourceExhausted names the file).
absl::StatusOr<std::string> ReadFileToString(const std::string& path, size_t max_bytes = 16 << 20);

// Writes `contents` to `path` atomically: a temporary file in the same directory, created with
// `mode`, written, fsync'd, renamed over `path`, then the directory fsync'd. Either the old or the
// new contents survive a crash, never a mix.
absl::Status WriteFileAtomic(const std::string& path, std::string_view contents, mode_t mode);

// Creates `path` (and missing parents) as directories with `mode`; an existing directory is fine.
absl::Status MakeDirs(const std::string& path, mode_t mode);

}  // namespace tripline
