#include "collector/cli/table.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_format.h"

namespace tripline::cli {
namespace {

constexpr size_t kGap = 2;
constexpr size_t kMinColumn = 4;  // room for one character and "..."
constexpr int kMinTableWidth = 20;

std::string Fit(const std::string& cell, size_t width) {
  if (cell.size() <= width) return cell;
  if (width <= 3) return cell.substr(0, width);
  return cell.substr(0, width - 3) + "...";
}

}  // namespace

std::string TerminalSafe(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      out += absl::StrFormat("\\x%02x", c);
    }
  }
  return out;
}

Table::Table(std::vector<std::string> headers) {
  for (std::string& h : headers) headers_.push_back(TerminalSafe(h));
}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  for (std::string& c : cells) c = TerminalSafe(c);
  rows_.push_back(std::move(cells));
}

std::string Table::Render(int max_columns) const {
  const size_t limit = static_cast<size_t>(std::max(max_columns, kMinTableWidth));
  const size_t n = headers_.size();
  if (n == 0) return "";
  std::vector<size_t> width(n);
  for (size_t i = 0; i < n; ++i) {
    width[i] = headers_[i].size();
    for (const auto& row : rows_) width[i] = std::max(width[i], row[i].size());
  }
  auto total = [&] {
    return std::accumulate(width.begin(), width.end(), size_t{0}) + kGap * (n - 1);
  };
  // Shrink the widest column one step at a time: narrow columns (ids, times) stay whole while a
  // long path or detail gives way.
  while (total() > limit) {
    auto widest = std::max_element(width.begin(), width.end());
    if (*widest <= kMinColumn) break;
    --*widest;
  }

  std::string out;
  auto emit = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (size_t i = 0; i < n; ++i) {
      std::string cell = Fit(cells[i], width[i]);
      line += cell;
      if (i + 1 < n) line.append(width[i] - cell.size() + kGap, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    if (line.size() > limit) line.resize(limit);
    out += line;
    out += '\n';
  };
  emit(headers_);
  for (const auto& row : rows_) emit(row);
  return out;
}

}  // namespace tripline::cli
