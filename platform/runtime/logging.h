// Process-wide logging: one line per event a person would want, key=value fields, no secrets.
// Logs go to stderr (journald picks them up under systemd). Thread-safe.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "spdlog/spdlog.h"

namespace tripline {

// Sets up the default logger for program `name` at `level` ("trace", "debug", "info", "warn",
// "error"); format "json" writes one JSON object per line, anything else plain text.
absl::Status InitLogging(const std::string& name, const std::string& level,
                         const std::string& format = "text");

// Bytes from outside (paths, log lines) made safe to print on one line: printable ASCII kept,
// everything else as \xNN, capped at `max` bytes with "..." appended.
std::string Printable(std::string_view bytes, size_t max = 256);

}  // namespace tripline
