#include "agent/logs/log_parser.h"

#include <map>

#include "gtest/gtest.h"

namespace tripline::agent {
namespace {

std::map<std::string, std::string> AsMap(const LogFields& fields) {
  return std::map<std::string, std::string>(fields.begin(), fields.end());
}

TEST(SyslogParser, FileFormatWithoutPriority) {
  absl::StatusOr<LogFields> f = ParseSyslogLine(
      "May  1 10:00:00 web-1 sshd[812]: Failed password for root from 1.2.3.4 port 22 ssh2");
  ASSERT_TRUE(f.ok()) << f.status();
  auto m = AsMap(*f);
  EXPECT_EQ(m["timestamp"], "May  1 10:00:00");
  EXPECT_EQ(m["host"], "web-1");
  EXPECT_EQ(m["app"], "sshd");
  EXPECT_EQ(m["pid"], "812");
  EXPECT_EQ(m["message"], "Failed password for root from 1.2.3.4 port 22 ssh2");
  EXPECT_EQ(m.count("severity"), 0u);
}

TEST(SyslogParser, Rfc3164WithPriorityAndIsoTimestamp) {
  auto m = AsMap(*ParseSyslogLine("<38>2024-05-01T10:00:00.123+00:00 web-1 sudo: alice : ok"));
  EXPECT_EQ(m["facility"], "auth");
  EXPECT_EQ(m["severity"], "info");
  EXPECT_EQ(m["timestamp"], "2024-05-01T10:00:00.123+00:00");
  EXPECT_EQ(m["host"], "web-1");
  EXPECT_EQ(m["app"], "sudo");
  EXPECT_EQ(m["message"], "alice : ok");
}

TEST(SyslogParser, Rfc5424WithStructuredDataAndNilValues) {
  auto m = AsMap(*ParseSyslogLine(
      "<165>1 2003-10-11T22:14:15.003Z mymachine evntslog - ID47 "
      "[exampleSDID@32473 iut=\"3\" eventSource=\"Appl\\]ication\"][x@1 a=\"b\"] "
      "\xEF\xBB\xBF" "An application event"));
  EXPECT_EQ(m["facility"], "local4");
  EXPECT_EQ(m["severity"], "notice");
  EXPECT_EQ(m["timestamp"], "2003-10-11T22:14:15.003Z");
  EXPECT_EQ(m["host"], "mymachine");
  EXPECT_EQ(m["app"], "evntslog");
  EXPECT_EQ(m.count("pid"), 0u);  // "-" is nil
  EXPECT_EQ(m["msgid"], "ID47");
  EXPECT_EQ(m["structured_data"],
            "[exampleSDID@32473 iut=\"3\" eventSource=\"Appl\\]ication\"][x@1 a=\"b\"]");
  EXPECT_EQ(m["message"], "An application event");
  auto nil = AsMap(*ParseSyslogLine("<13>1 - - - - - -"));
  EXPECT_EQ(nil["message"], "");
}

TEST(SyslogParser, RejectsWhatIsNotSyslog) {
  EXPECT_FALSE(ParseSyslogLine("just some text").ok());
  EXPECT_FALSE(ParseSyslogLine("<999>1 x").ok());
  EXPECT_FALSE(ParseSyslogLine("<1a>x").ok());
  auto m = AsMap(ParseLogLine(LogParser::kSyslog, "just some text"));
  EXPECT_NE(m["parse_error"].find("syslog"), std::string::npos);
}

TEST(JsonParser, TopLevelMembersWithUnescapedStringsAndRawValues) {
  auto m = AsMap(*ParseJsonLine(
      R"( {"level":"ERROR","msg":"a \"quoted\"\n\u00e9\ud83d\ude00","n":-1.5e3,"ok":true,)"
      R"("nil":null,"obj":{"a":[1,{"b":"}"}]},"arr":[1,2]} )"));
  EXPECT_EQ(m["level"], "ERROR");
  EXPECT_EQ(m["msg"], "a \"quoted\"\n\xC3\xA9\xF0\x9F\x98\x80");
  EXPECT_EQ(m["n"], "-1.5e3");
  EXPECT_EQ(m["ok"], "true");
  EXPECT_EQ(m["nil"], "null");
  EXPECT_EQ(m["obj"], R"({"a":[1,{"b":"}"}]})");
  EXPECT_EQ(m["arr"], "[1,2]");
}

TEST(JsonParser, HostileInputIsRejectedOrSanitisedNeverTrusted) {
  EXPECT_FALSE(ParseJsonLine("[1,2]").ok());
  EXPECT_FALSE(ParseJsonLine(R"({"a":1} trailing)").ok());
  EXPECT_FALSE(ParseJsonLine(R"({"a":"unterminated)").ok());
  EXPECT_FALSE(ParseJsonLine(R"({"a":tru})").ok());
  EXPECT_FALSE(ParseJsonLine(std::string(10000, '[')).ok());
  std::string deep = R"({"a":)" + std::string(200, '[') + std::string(200, ']') + "}";
  absl::Status st = ParseJsonLine(deep).status();
  EXPECT_NE(st.message().find("nested too deep"), std::string::npos) << st;
  // Keys become safe field names; values keep their bytes, UTF-8 or not.
  auto m = AsMap(*ParseJsonLine(std::string("{\"we ird\\u00e9\":\"\xff\xfe\",\"\":1}")));
  EXPECT_EQ(m["we_ird__"], "\xff\xfe");
  EXPECT_EQ(m["_"], "1");
  // A lone surrogate becomes U+FFFD.
  EXPECT_EQ(AsMap(*ParseJsonLine(R"({"s":"\ud800x"})"))["s"], "\xEF\xBF\xBDx");
}

TEST(LogParser, RawAddsNothingAndNamesAreChecked) {
  EXPECT_TRUE(ParseLogLine(LogParser::kRaw, "{\"a\":1}").empty());
  EXPECT_TRUE(LogParserFromName("json").ok());
  EXPECT_FALSE(LogParserFromName("xml").ok());
  EXPECT_EQ(SafeFieldName("a.b-c@d_E9"), "a.b-c@d_E9");
  EXPECT_EQ(SafeFieldName(std::string(300, 'x')).size(), 128u);
}

}  // namespace
}  // namespace tripline::agent
