#include "platform/runtime/logging.h"

#include <cstdio>

#include "absl/strings/str_format.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace tripline {

absl::Status InitLogging(const std::string& name, const std::string& level,
                         const std::string& format) {
  spdlog::level::level_enum lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(
        absl::StrFormat("log level '%s': expected trace, debug, info, warn, error or off", level));
  }
  spdlog::drop(name);
  auto logger = spdlog::stderr_logger_mt(name);
  if (format == "json") {
    logger->set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","program":")" + name + R"(","msg":"%v"})",
        spdlog::pattern_time_type::utc);
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ " + name + ": %v");
  }
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return absl::OkStatus();
}

std::string Printable(std::string_view bytes, size_t max) {
  std::string out;
  out.reserve(std::min(bytes.size(), max) + 8);
  size_t n = 0;
  for (unsigned char c : bytes) {
    if (n++ >= max) {
      out += "...";
      break;
    }
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
      out.push_back(static_cast<char>(c));
    } else {
      out += absl::StrFormat("\\x%02x", c);
    }
  }
  return out;
}

}  // namespace tripline
