// Parsers for log lines: syslog (RFC 3164 as written by syslog daemons to files, with or without
// the <PRI> header, and RFC 5424) and JSON (one object per line). A parser only adds fields; the
// line itself always travels unchanged, so a line a parser does not understand is never lost.
//
// Lines are hostile bytes: parsers bound every loop by the line's length, never recurse deeper
// than kMaxJsonDepth, and emit field names made only of [A-Za-z0-9_.@-] (other bytes become '_'),
// so names are always valid UTF-8; values are bytes as found (JSON strings are unescaped).
// No state, no threads.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tripline::agent {

enum class LogParser { kRaw, kSyslog, kJson };

using LogFields = std::vector<std::pair<std::string, std::string>>;

inline constexpr int kMaxJsonDepth = 64;

// "raw" | "syslog" | "json".
absl::StatusOr<LogParser> LogParserFromName(std::string_view name);

// Fields of a syslog line: facility and severity (when a <PRI> header is present), timestamp,
// host, app, pid, msgid (RFC 5424), structured_data (RFC 5424, as text) and message.
// InvalidArgument when the line does not look like syslog.
absl::StatusOr<LogFields> ParseSyslogLine(std::string_view line);

// The top-level members of a JSON object: strings unescaped (\uXXXX to UTF-8; lone surrogates
// become U+FFFD), numbers, true, false and null as written, objects and arrays as their JSON text.
// InvalidArgument naming the byte offset for anything that is not one JSON object.
absl::StatusOr<LogFields> ParseJsonLine(std::string_view line);

// Runs `parser` on `line`. Lines a parser rejects get one field, "parse_error", saying why.
LogFields ParseLogLine(LogParser parser, std::string_view line);

// `name` with every byte outside [A-Za-z0-9_.@-] replaced by '_', cut to 128 bytes; "_" if empty.
std::string SafeFieldName(std::string_view name);

}  // namespace tripline::agent
