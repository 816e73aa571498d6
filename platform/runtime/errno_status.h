// Turning errno into an absl::Status whose message names the operation, the thing and the reason:
// "open /etc/shadow: Permission denied (EACCES)".
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace tripline {

// The symbolic name of an errno value ("EACCES"), or its number when unknown.
std::string ErrnoName(int err);

// A Status for a failed system call: code chosen from errno (ENOENT -> NotFound, EACCES/EPERM ->
// PermissionDenied, ENOSPC/EDQUOT -> ResourceExhausted, ...), message "<op> <what>: <reason> (<NAME>)".
absl::Status ErrnoStatus(int err, std::string_view op, std::string_view what);

}  // namespace tripline
