#include "collector/rules/path_glob.h"

#include "absl/strings/str_format.h"

namespace tripline::collector {

absl::StatusOr<PathGlob> PathGlob::Compile(std::string_view pattern) {
  if (pattern.empty()) return absl::InvalidArgumentError("empty path pattern");
  PathGlob glob;
  glob.pattern_ = std::string(pattern);
  size_t i = 0;
  while (i < pattern.size()) {
    const char c = pattern[i];
    Token t{};
    if (c == '*') {
      if (i + 1 < pattern.size() && pattern[i + 1] == '*') {
        t.kind = Kind::kDoubleStar;
        i += 2;
        while (i < pattern.size() && pattern[i] == '*') ++i;  // "***" is "**"
      } else {
        t.kind = Kind::kStar;
        ++i;
      }
    } else if (c == '?') {
      t.kind = Kind::kAnyByte;
      ++i;
    } else if (c == '\\') {
      if (i + 1 >= pattern.size()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("pattern '%s' ends with a lone backslash", pattern));
      }
      t.kind = Kind::kByte;
      t.byte = static_cast<unsigned char>(pattern[i + 1]);
      i += 2;
    } else if (c == '[') {
      size_t j = i + 1;
      bool negate = false;
      if (j < pattern.size() && (pattern[j] == '!' || pattern[j] == '^')) {
        negate = true;
        ++j;
      }
      std::bitset<256> set;
      bool closed = false;
      bool first = true;
      while (j < pattern.size()) {
        unsigned char lo = static_cast<unsigned char>(pattern[j]);
        if (lo == ']' && !first) {
          closed = true;
          ++j;
          break;
        }
        first = false;
        if (lo == '\\' && j + 1 < pattern.size()) lo = static_cast<unsigned char>(pattern[++j]);
        ++j;
        unsigned char hi = lo;
        if (j + 1 < pattern.size() && pattern[j] == '-' && pattern[j + 1] != ']') {
          hi = static_cast<unsigned char>(pattern[j + 1]);
          j += 2;
          if (hi < lo) {
            return absl::InvalidArgumentError(absl::StrFormat(
                "pattern '%s': character range %c-%c is reversed", pattern, lo, hi));
          }
        }
        for (unsigned v = lo; v <= hi; ++v) set.set(v);
      }
      if (!closed) {
        return absl::InvalidArgumentError(
            absl::StrFormat("pattern '%s': '[' at offset %d has no closing ']'", pattern, i));
      }
      if (negate) set.flip();
      set.reset('/');  // a class never matches the separator
      t.kind = Kind::kClass;
      t.set = set;
      i = j;
    } else {
      t.kind = Kind::kByte;
      t.byte = static_cast<unsigned char>(c);
      ++i;
    }
    glob.tokens_.push_back(t);
  }
  return glob;
}

bool PathGlob::Matches(std::string_view path) const {
  // reach[j]: the tokens so far can consume exactly path[0, j).
  const size_t n = path.size();
  std::vector<char> reach(n + 1, 0), next(n + 1, 0);
  reach[0] = 1;
  for (const Token& t : tokens_) {
    std::fill(next.begin(), next.end(), 0);
    bool any = false;
    switch (t.kind) {
      case Kind::kStar:
      case Kind::kDoubleStar:
        for (size_t j = 0; j <= n; ++j) {
          bool extend = j > 0 && next[j - 1] &&
                        (t.kind == Kind::kDoubleStar || path[j - 1] != '/');
          next[j] = reach[j] || extend;
          any = any || next[j];
        }
        break;
      default:
        for (size_t j = 0; j < n; ++j) {
          if (!reach[j]) continue;
          const unsigned char b = static_cast<unsigned char>(path[j]);
          bool ok = false;
          if (t.kind == Kind::kByte) ok = b == t.byte;
          else if (t.kind == Kind::kAnyByte) ok = b != '/';
          else ok = t.set.test(b);
          if (ok) {
            next[j + 1] = 1;
            any = true;
          }
        }
        break;
    }
    if (!any) return false;
    reach.swap(next);
  }
  return reach[n] != 0;
}

}  // namespace tripline::collector
