// Cuts a byte stream read from a log file into lines, remembering where each starts and ends in
// the file. A line longer than max_line keeps its first max_line bytes (truncated = true) and the
// rest is skipped up to its newline, so memory per file stays at most max_line. Bytes after the
// last newline wait in the splitter until their newline comes or Flush() emits them as a partial
// line. No threads; one splitter per open file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tripline::agent {

struct LogLine {
  uint64_t offset = 0;       // where the line starts in the file
  uint64_t next_offset = 0;  // where the next one starts (after the newline, or the flushed bytes)
  std::string bytes;         // without the newline; at most max_line bytes
  bool truncated = false;
  bool partial = false;
};

class LineSplitter {
 public:
  LineSplitter(size_t max_line, uint64_t start_offset);

  // `data` are the file's bytes from consumed() on; completed lines are appended to `out`.
  void Feed(std::string_view data, std::vector<LogLine>* out);

  // True when bytes without a newline are waiting.
  bool HasPending() const { return pos_ > line_start_; }

  // Emits the waiting bytes as one line flagged partial (false when nothing waits).
  bool Flush(std::vector<LogLine>* out);

  // Forgets what waits and goes on from `offset` (a truncated or replaced file).
  void Reset(uint64_t offset);

  // The file offset after the last byte fed.
  uint64_t consumed() const { return pos_; }
  // Where the waiting bytes start: every line before it has been emitted.
  uint64_t line_start() const { return line_start_; }

 private:
  size_t max_line_;
  uint64_t line_start_;
  uint64_t pos_;
  std::string pending_;
  bool truncated_ = false;
};

}  // namespace tripline::agent
