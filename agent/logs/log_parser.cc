#include "agent/logs/log_parser.h"

#include <cstdint>

#include "absl/strings/str_format.h"

namespace tripline::agent {
namespace {

constexpr const char* kSeverities[] = {"emerg",   "alert",  "crit", "err",
                                       "warning", "notice", "info", "debug"};
constexpr const char* kFacilities[] = {
    "kern",   "user",   "mail",     "daemon", "auth",   "syslog", "lpr",    "news",
    "uucp",   "cron",   "authpriv", "ftp",    "ntp",    "security", "console", "solaris-cron",
    "local0", "local1", "local2",   "local3", "local4", "local5", "local6", "local7"};
constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// The token at `*pos` up to the next space (or the end); moves past one following space.
std::string_view Token(std::string_view s, size_t* pos) {
  size_t start = *pos;
  size_t end = s.find(' ', start);
  if (end == std::string_view::npos) end = s.size();
  *pos = end < s.size() ? end + 1 : end;
  return s.substr(start, end - start);
}

bool IsBsdTimestamp(std::string_view s) {
  // "Mmm dd hh:mm:ss" with a space-padded day.
  if (s.size() < 15) return false;
  bool month = false;
  for (const char* m : kMonths) month = month || s.substr(0, 3) == m;
  return month && s[3] == ' ' && (s[4] == ' ' || IsDigit(s[4])) && IsDigit(s[5]) && s[6] == ' ' &&
         IsDigit(s[7]) && IsDigit(s[8]) && s[9] == ':' && IsDigit(s[10]) && IsDigit(s[11]) &&
         s[12] == ':' && IsDigit(s[13]) && IsDigit(s[14]);
}

bool IsIsoTimestamp(std::string_view token) {
  // 2024-05-01T10:00:00[.frac](Z|+hh:mm)
  return token.size() >= 19 && IsDigit(token[0]) && IsDigit(token[3]) && token[4] == '-' &&
         token[10] == 'T' && token[13] == ':';
}

void AddNonNil(LogFields* out, const char* name, std::string_view value) {
  if (!value.empty() && value != "-") out->emplace_back(name, std::string(value));
}

// Parses "app[pid]: message" (or "app: message"); false when there is no such tag.
bool ParseTag(std::string_view rest, LogFields* out) {
  size_t i = 0;
  while (i < rest.size() && i < 128 && rest[i] != ':' && rest[i] != '[' && rest[i] != ' ') ++i;
  if (i == 0 || i >= rest.size() || i == 128) return false;
  std::string_view app = rest.substr(0, i);
  std::string_view pid;
  if (rest[i] == '[') {
    size_t close = rest.find(']', i);
    if (close == std::string_view::npos || close - i > 32) return false;
    pid = rest.substr(i + 1, close - i - 1);
    i = close + 1;
  }
  if (i >= rest.size() || rest[i] != ':') return false;
  ++i;
  if (i < rest.size() && rest[i] == ' ') ++i;
  out->emplace_back("app", std::string(app));
  AddNonNil(out, "pid", pid);
  out->emplace_back("message", std::string(rest.substr(i)));
  return true;
}

// --- JSON --------------------------------------------------------------------------------

class JsonScanner {
 public:
  explicit JsonScanner(std::string_view s) : s_(s) {}

  absl::StatusOr<LogFields> Object() {
    LogFields out;
    SkipSpace();
    if (!Eat('{')) return Error("expected '{'");
    SkipSpace();
    if (Eat('}')) return Finish(std::move(out));
    for (;;) {
      SkipSpace();
      std::string key;
      if (absl::Status st = String(&key); !st.ok()) return st;
      SkipSpace();
      if (!Eat(':')) return Error("expected ':'");
      SkipSpace();
      std::string value;
      if (pos_ < s_.size() && s_[pos_] == '"') {
        if (absl::Status st = String(&value); !st.ok()) return st;
      } else {
        const size_t start = pos_;
        if (absl::Status st = SkipValue(1); !st.ok()) return st;
        value = std::string(s_.substr(start, pos_ - start));
      }
      out.emplace_back(SafeFieldName(key), std::move(value));
      SkipSpace();
      if (Eat('}')) return Finish(std::move(out));
      if (!Eat(',')) return Error("expected ',' or '}'");
    }
  }

 private:
  absl::StatusOr<LogFields> Finish(LogFields out) {
    SkipSpace();
    if (pos_ != s_.size()) return Error("text after the object");
    return out;
  }
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrFormat("json: %s at byte %d", what, pos_));
  }
  bool Eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\r' || s_[pos_] == '\n')) {
      ++pos_;
    }
  }
  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  bool Hex4(uint32_t* out) {
    if (s_.size() - pos_ < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[pos_ + i];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else return false;
    }
    pos_ += 4;
    *out = v;
    return true;
  }
  // A string at pos_ (which must be '"'), unescaped into *out (or skipped when null).
  absl::Status String(std::string* out) {
    if (!Eat('"')) return Error("expected a string");
    for (;;) {
      if (pos_ >= s_.size()) return Error("unterminated string");
      char c = s_[pos_++];
      if (c == '"') return absl::OkStatus();
      if (c != '\\') {
        if (out) out->push_back(c);  // bytes as they are, UTF-8 or not
        continue;
      }
      if (pos_ >= s_.size()) return Error("unterminated escape");
      char e = s_[pos_++];
      char plain = 0;
      switch (e) {
        case '"': plain = '"'; break;
        case '\\': plain = '\\'; break;
        case '/': plain = '/'; break;
        case 'b': plain = '\b'; break;
        case 'f': plain = '\f'; break;
        case 'n': plain = '\n'; break;
        case 'r': plain = '\r'; break;
        case 't': plain = '\t'; break;
        case 'u': {
          uint32_t cp;
          if (!Hex4(&cp)) return Error("bad \\u escape");
          if (cp >= 0xD800 && cp < 0xDC00) {
            uint32_t lo;
            if (s_.substr(pos_, 2) == "\\u") {
              pos_ += 2;
              if (!Hex4(&lo)) return Error("bad \\u escape");
              cp = (lo >= 0xDC00 && lo < 0xE000) ? 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                                                 : 0xFFFD;
            } else {
              cp = 0xFFFD;
            }
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            cp = 0xFFFD;
          }
          if (out) AppendUtf8(cp, out);
          continue;
        }
        default:
          return Error("bad escape");
      }
      if (out) out->push_back(plain);
    }
  }
  absl::Status SkipValue(int depth) {
    if (depth > kMaxJsonDepth) return Error("nested too deep");
    SkipSpace();
    if (pos_ >= s_.size()) return Error("expected a value");
    char c = s_[pos_];
    if (c == '"') return String(nullptr);
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++pos_;
      SkipSpace();
      if (Eat(close)) return absl::OkStatus();
      for (;;) {
        if (c == '{') {
          SkipSpace();
          if (absl::Status st = String(nullptr); !st.ok()) return st;
          SkipSpace();
          if (!Eat(':')) return Error("expected ':'");
        }
        if (absl::Status st = SkipValue(depth + 1); !st.ok()) return st;
        SkipSpace();
        if (Eat(close)) return absl::OkStatus();
        if (!Eat(',')) return Error("expected ',' or a closing bracket");
      }
    }
    // number, true, false, null
    const size_t start = pos_;
    while (pos_ < s_.size() && (IsDigit(s_[pos_]) || (s_[pos_] >= 'a' && s_[pos_] <= 'z') ||
                                s_[pos_] == '-' || s_[pos_] == '+' || s_[pos_] == '.' ||
                                s_[pos_] == 'E')) {
      ++pos_;
    }
    std::string_view lit = s_.substr(start, pos_ - start);
    if (lit == "true" || lit == "false" || lit == "null") return absl::OkStatus();
    if (lit.empty() || !(IsDigit(lit[0]) || lit[0] == '-')) return Error("expected a value");
    for (char d : lit) {
      if (d >= 'a' && d <= 'z' && d != 'e') return Error("bad number");
    }
    return absl::OkStatus();
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

std::string SafeFieldName(std::string_view name) {
  std::string out;
  for (char c : name.substr(0, 128)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || IsDigit(c) || c == '_' ||
              c == '.' || c == '@' || c == '-';
    out.push_back(ok ? c : '_');
  }
  return out.empty() ? "_" : out;
}

absl::StatusOr<LogParser> LogParserFromName(std::string_view name) {
  if (name == "raw") return LogParser::kRaw;
  if (name == "syslog") return LogParser::kSyslog;
  if (name == "json") return LogParser::kJson;
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown parser '%s' (expected raw, syslog or json)", name));
}

absl::StatusOr<LogFields> ParseSyslogLine(std::string_view line) {
  LogFields out;
  size_t pos = 0;
  bool has_pri = false;
  if (!line.empty() && line[0] == '<') {
    size_t close = line.find('>');
    if (close == std::string_view::npos || close < 2 || close > 4) {
      return absl::InvalidArgumentError("syslog: bad <PRI> header");
    }
    int pri = 0;
    for (size_t i = 1; i < close; ++i) {
      if (!IsDigit(line[i])) return absl::InvalidArgumentError("syslog: bad <PRI> header");
      pri = pri * 10 + (line[i] - '0');
    }
    if (pri > 191) return absl::InvalidArgumentError("syslog: <PRI> above 191");
    out.emplace_back("facility", kFacilities[pri / 8]);
    out.emplace_back("severity", kSeverities[pri % 8]);
    pos = close + 1;
    has_pri = true;
  }
  std::string_view rest = line.substr(pos);
  // RFC 5424: a version number right after the PRI.
  if (has_pri && rest.size() >= 2 && IsDigit(rest[0]) && rest[1] == ' ') {
    size_t p = 2;
    AddNonNil(&out, "timestamp", Token(rest, &p));
    AddNonNil(&out, "host", Token(rest, &p));
    AddNonNil(&out, "app", Token(rest, &p));
    AddNonNil(&out, "pid", Token(rest, &p));
    AddNonNil(&out, "msgid", Token(rest, &p));
    if (p < rest.size() && rest[p] == '[') {
      const size_t sd_start = p;
      bool in_quotes = false;
      while (p < rest.size()) {
        char c = rest[p];
        if (c == '\\' && p + 1 < rest.size()) {
          p += 2;
          continue;
        }
        if (c == '"') in_quotes = !in_quotes;
        ++p;
        if (c == ']' && !in_quotes) {
          if (p >= rest.size() || rest[p] != '[') break;
        }
      }
      out.emplace_back("structured_data", std::string(rest.substr(sd_start, p - sd_start)));
      if (p < rest.size() && rest[p] == ' ') ++p;
    } else if (p < rest.size() && rest[p] == '-') {
      p = std::min(rest.size(), p + 2);
    }
    std::string_view msg = rest.substr(std::min(p, rest.size()));
    if (msg.substr(0, 3) == "\xEF\xBB\xBF") msg.remove_prefix(3);  // the BOM RFC 5424 allows
    out.emplace_back("message", std::string(msg));
    return out;
  }
  // RFC 3164 / file format: TIMESTAMP HOST TAG: MESSAGE.
  size_t p = 0;
  if (IsBsdTimestamp(rest)) {
    out.emplace_back("timestamp", std::string(rest.substr(0, 15)));
    p = 16;
  } else {
    size_t q = 0;
    std::string_view token = Token(rest, &q);
    if (IsIsoTimestamp(token)) {
      out.emplace_back("timestamp", std::string(token));
      p = q;
    } else if (!has_pri) {
      return absl::InvalidArgumentError("syslog: no timestamp at the start of the line");
    }
  }
  if (p < rest.size()) {
    size_t q = p;
    std::string_view host = Token(rest, &q);
    std::string_view after = rest.substr(std::min(q, rest.size()));
    if (!host.empty() && host.back() != ':' && ParseTag(after, &out)) {
      out.emplace_back("host", std::string(host));
      return out;
    }
    if (ParseTag(rest.substr(p), &out)) return out;  // no host: "TAG: message"
    out.emplace_back("message", std::string(rest.substr(p)));
    return out;
  }
  out.emplace_back("message", "");
  return out;
}

absl::StatusOr<LogFields> ParseJsonLine(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
  return JsonScanner(line).Object();
}

LogFields ParseLogLine(LogParser parser, std::string_view line) {
  absl::StatusOr<LogFields> fields;
  switch (parser) {
    case LogParser::kRaw:
      return {};
    case LogParser::kSyslog:
      fields = ParseSyslogLine(line);
      break;
    case LogParser::kJson:
      fields = ParseJsonLine(line);
      break;
  }
  if (!fields.ok()) return {{"parse_error", std::string(fields.status().message())}};
  return *std::move(fields);
}

}  // namespace tripline::agent
