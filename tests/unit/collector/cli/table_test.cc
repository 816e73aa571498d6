#include "collector/cli/table.h"

#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tripline::cli {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(Table, ColumnsAlignedTwoSpacesApartWithoutTrailingSpaces) {
  Table t({"ID", "NAME"});
  t.AddRow({"1", "web"});
  t.AddRow({"22", "database"});
  EXPECT_EQ(t.Render(120), "ID  NAME\n1   web\n22  database\n");
}

TEST(Table, MissingCellsAreEmptyAndExtraCellsDropped) {
  Table t({"A", "B"});
  t.AddRow({"x"});
  t.AddRow({"y", "z", "dropped"});
  EXPECT_EQ(t.Render(120), "A  B\nx\ny  z\n");
  EXPECT_EQ(t.rows(), 2u);
}

TEST(Table, WidestColumnShrinksFirstAndNoLineExceedsTheWidth) {
  Table t({"ID", "PATH"});
  t.AddRow({"1", std::string(200, 'p')});
  const std::string out = t.Render(40);
  for (const std::string& line : Lines(out)) EXPECT_LE(line.size(), 40u) << line;
  EXPECT_NE(out.find("..."), std::string::npos);
  EXPECT_EQ(Lines(out)[1].substr(0, 4), "1   ");  // the narrow column kept whole
}

TEST(Table, HostileBytesNeverReachTheTerminal) {
  Table t({"PATH"});
  t.AddRow({std::string("/tmp/\x1b]0;pwned\x07\xff\n", 16)});
  const std::string out = t.Render(120);
  for (unsigned char c : out) {
    EXPECT_TRUE(c == '\n' || (c >= 0x20 && c < 0x7f)) << static_cast<int>(c);
  }
  EXPECT_NE(out.find("\\x1b"), std::string::npos);
  EXPECT_EQ(Lines(out).size(), 2u);  // the embedded newline did not start a row
}

TEST(TerminalSafe, EscapesEverythingOutsidePrintableAscii) {
  EXPECT_EQ(TerminalSafe("ok"), "ok");
  EXPECT_EQ(TerminalSafe(std::string("a\tb\x7f\x80", 5)), "a\\x09b\\x7f\\x80");
}

}  // namespace
}  // namespace tripline::cli
