#include "agent/logs/line_splitter.h"

#include <cstring>

namespace tripline::agent {

LineSplitter::LineSplitter(size_t max_line, uint64_t start_offset)
    : max_line_(max_line == 0 ? 1 : max_line), line_start_(start_offset), pos_(start_offset) {}

void LineSplitter::Feed(std::string_view data, std::vector<LogLine>* out) {
  size_t i = 0;
  while (i < data.size()) {
    const void* nl = std::memchr(data.data() + i, '\n', data.size() - i);
    const size_t end = nl ? static_cast<const char*>(nl) - data.data() : data.size();
    const size_t room = max_line_ - pending_.size();
    if (end - i > room) truncated_ = true;
    pending_.append(data.data() + i, std::min(end - i, room));
    pos_ += end - i;
    i = end;
    if (!nl) break;
    ++pos_;
    ++i;
    LogLine line;
    line.offset = line_start_;
    line.next_offset = pos_;
    line.bytes = std::move(pending_);
    line.truncated = truncated_;
    out->push_back(std::move(line));
    pending_.clear();
    truncated_ = false;
    line_start_ = pos_;
  }
}

bool LineSplitter::Flush(std::vector<LogLine>* out) {
  if (!HasPending()) return false;
  LogLine line;
  line.offset = line_start_;
  line.next_offset = pos_;
  line.bytes = std::move(pending_);
  line.truncated = truncated_;
  line.partial = true;
  out->push_back(std::move(line));
  pending_.clear();
  truncated_ = false;
  line_start_ = pos_;
  return true;
}

void LineSplitter::Reset(uint64_t offset) {
  pending_.clear();
  truncated_ = false;
  line_start_ = pos_ = offset;
}

}  // namespace tripline::agent
