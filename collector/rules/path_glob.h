// Globs over path bytes, as rules write them: `*` matches any bytes within one path component,
// `**` any bytes across components (including none), `?` one byte other than '/', `[abc]`,
// `[a-z]` and `[!abc]` one byte (never '/') from a class, and `\x` the byte x itself. Paths are
// bytes, not UTF-8: a non-UTF-8 name matches like any other. Matching is linear in
// (pattern tokens × path length): no backtracking blow-up on hostile paths. Immutable after
// Compile; safe to share between threads.
#pragma once

#include <bitset>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tripline::collector {

class PathGlob {
 public:
  // InvalidArgument naming the problem (empty pattern, unterminated '[', empty class, trailing
  // backslash); the caller adds where the pattern was written.
  static absl::StatusOr<PathGlob> Compile(std::string_view pattern);

  bool Matches(std::string_view path) const;
  const std::string& pattern() const { return pattern_; }

 private:
  enum class Kind { kByte, kAnyByte, kClass, kStar, kDoubleStar };
  struct Token {
    Kind kind;
    unsigned char byte = 0;       // kByte
    std::bitset<256> set;         // kClass (already negated when written [!...])
  };
  std::string pattern_;
  std::vector<Token> tokens_;
};

}  // namespace tripline::collector
