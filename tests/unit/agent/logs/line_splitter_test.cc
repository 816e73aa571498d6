#include "agent/logs/line_splitter.h"

#include "gtest/gtest.h"

namespace tripline::agent {
namespace {

TEST(LineSplitter, LinesCarryTheirOffsetsAcrossFeeds) {
  LineSplitter s(1024, 100);
  std::vector<LogLine> out;
  s.Feed("ab", &out);
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(s.HasPending());
  s.Feed("c\n\ndef\nx", &out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].bytes, "abc");
  EXPECT_EQ(out[0].offset, 100u);
  EXPECT_EQ(out[0].next_offset, 104u);
  EXPECT_EQ(out[1].bytes, "");
  EXPECT_EQ(out[1].offset, 104u);
  EXPECT_EQ(out[2].bytes, "def");
  EXPECT_EQ(out[2].next_offset, 109u);
  EXPECT_EQ(s.consumed(), 110u);
  EXPECT_EQ(s.line_start(), 109u);
}

TEST(LineSplitter, LongLinesAreCutFlaggedAndSpanAllTheirBytes) {
  LineSplitter s(4, 0);
  std::vector<LogLine> out;
  s.Feed("0123456789", &out);
  s.Feed("abc\nok\n", &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].bytes, "0123");
  EXPECT_TRUE(out[0].truncated);
  EXPECT_EQ(out[0].next_offset, 14u);
  EXPECT_EQ(out[1].bytes, "ok");
  EXPECT_FALSE(out[1].truncated);
  EXPECT_EQ(out[1].offset, 14u);
}

TEST(LineSplitter, FlushEmitsThePartialLineFlagged) {
  LineSplitter s(100, 0);
  std::vector<LogLine> out;
  EXPECT_FALSE(s.Flush(&out));
  s.Feed(std::string("no newline \xff", 12), &out);
  ASSERT_TRUE(s.Flush(&out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].partial);
  EXPECT_EQ(out[0].bytes, std::string("no newline \xff", 12));
  EXPECT_EQ(out[0].next_offset, 12u);
  s.Feed(" rest\n", &out);  // what follows is a line of its own
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].bytes, " rest");
  EXPECT_EQ(out[1].offset, 12u);
}

TEST(LineSplitter, ResetStartsOverAtTheGivenOffset) {
  LineSplitter s(100, 0);
  std::vector<LogLine> out;
  s.Feed("partial", &out);
  s.Reset(0);
  EXPECT_FALSE(s.HasPending());
  s.Feed("new\n", &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].bytes, "new");
  EXPECT_EQ(out[0].offset, 0u);
}

}  // namespace
}  // namespace tripline::agent
