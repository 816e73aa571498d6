// A plain-text table for a terminal: columns sized to their content, the whole table cut to fit a
// given width. Not thread-safe; build one per output.
//
// Invariant: whatever bytes the cells hold, Render() emits only printable ASCII, spaces and
// newlines. Callers still pass hostile bytes (paths, titles) through tripline::Printable() so they
// read unambiguously; the table's own escaping is the last guard between a cell and the terminal.
#pragma once

#include <string>
#include <vector>

namespace tripline::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> headers);

  // Appends one row; missing cells are empty, extra cells are dropped.
  void AddRow(std::vector<std::string> cells);

  size_t rows() const { return rows_.size(); }

  // The header and rows, one line each, columns two spaces apart, no trailing spaces. When the
  // natural width exceeds `max_columns`, the widest columns shrink first (cells cut with "...");
  // a line is never longer than `max_columns` (at least 20).
  std::string Render(int max_columns) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// `text` with every byte outside printable ASCII written as \xNN (backslashes kept as they are).
std::string TerminalSafe(std::string_view text);

}  // namespace tripline::cli
