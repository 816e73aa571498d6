#include "collector/cli/operator_view.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/unit/collector/cli/fake_operator.h"

namespace tripline::cli {
namespace {

using testing::CannedFleet;
using testing::kNowNs;
using testing::kSecond;

bool OnlyPrintable(const std::string& s) {
  for (unsigned char c : s) {
    if (c != '\n' && (c < 0x20 || c >= 0x7f)) return false;
  }
  return true;
}

TEST(FormatTime, UtcIsoAndDashForNever) {
  EXPECT_EQ(FormatUtcTime(kNowNs), "2024-05-01T12:00:00Z");
  EXPECT_EQ(FormatUtcTime(0), "-");
}

TEST(FormatAgo, EachUnitAndTheFutureAndNever) {
  EXPECT_EQ(FormatAgo(kNowNs - 12 * kSecond, kNowNs), "12s ago");
  EXPECT_EQ(FormatAgo(kNowNs - 5 * 60 * kSecond, kNowNs), "5m ago");
  EXPECT_EQ(FormatAgo(kNowNs - 3 * 3600 * kSecond, kNowNs), "3h ago");
  EXPECT_EQ(FormatAgo(kNowNs - 2 * 86400 * kSecond, kNowNs), "2d ago");
  EXPECT_EQ(FormatAgo(kNowNs + 4 * kSecond, kNowNs), "in 4s");
  EXPECT_EQ(FormatAgo(0, kNowNs), "never");
  // Extremes must not overflow.
  EXPECT_EQ(FormatAgo(INT64_MIN + 1, INT64_MAX), "213503d ago");
}

TEST(EventSummary, FileEventShowsChangePathAndHashPrefixes) {
  const auto fleet = CannedFleet();
  const auto& modified = fleet.events.events(0).event();
  EXPECT_EQ(EventKind(modified), "file");
  EXPECT_EQ(EventSummary(modified), "MODIFIED /etc/hosts sha256 01010101->abababab");
  const auto& created = fleet.events.events(1).event();
  const std::string s = EventSummary(created);
  EXPECT_EQ(s.rfind("CREATED /tmp/\\xff\\xfe\\x1b]0;pwned\\x07evil sha256 none->cdcdcdcd", 0), 0u)
      << s;
}

TEST(EventSummary, RenameModeAndOwnerChanges) {
  v1::Event e;
  auto* f = e.mutable_file();
  f->set_change(v1::FileEvent::RENAMED);
  f->set_old_path("/etc/a");
  f->set_path("/etc/b");
  f->mutable_before()->set_mode(0100644);
  f->mutable_after()->set_mode(0104755);
  f->mutable_after()->set_uid(1000);
  f->set_note("replaced an existing file");
  EXPECT_EQ(EventSummary(e),
            "RENAMED /etc/a -> /etc/b mode 0644->4755 owner 0:0->1000:0 (replaced an existing "
            "file)");
}

TEST(EventSummary, LogAndAgentEventsAndUnknownEnums) {
  const auto fleet = CannedFleet();
  EXPECT_EQ(EventSummary(fleet.events.events(2).event()),
            "auth /var/log/auth.log:100 Failed password for root\\x1b[2J");
  EXPECT_EQ(EventSummary(fleet.events.events(3).event()), "STARTED tripline-agent 0.1.0");
  v1::Event odd;
  odd.mutable_file()->set_change(static_cast<v1::FileEvent::Change>(99));
  odd.mutable_file()->set_path("/x");
  EXPECT_EQ(EventSummary(odd), "change(99) /x");
  EXPECT_EQ(EventSummary(v1::Event()), "(empty event)");
  EXPECT_EQ(EventKind(v1::Event()), "?");
}

TEST(Tables, AgentsShowLastSeenRelativeAndIsolation) {
  const auto fleet = CannedFleet();
  const std::string out = AgentsTable(fleet.agents, kNowNs).Render(200);
  EXPECT_NE(out.find("i-0aaa1111"), std::string::npos);
  EXPECT_NE(out.find("12s ago"), std::string::npos);
  EXPECT_NE(out.find("3h ago"), std::string::npos);
  EXPECT_NE(out.find("isolated"), std::string::npos);
  EXPECT_NE(out.find("db-\\x1b[31m1"), std::string::npos);
  EXPECT_NE(out.find("12 batches, 1.5 MiB"), std::string::npos) << out;
  EXPECT_TRUE(OnlyPrintable(out));
}

TEST(Tables, SpoolBacklogFromTheLastHeartbeat) {
  v1::Agent a;
  EXPECT_EQ(SpoolBacklog(a), "-");  // no heartbeat yet: unknown, not zero
  a.set_heartbeat_unix_ns(kNowNs);
  EXPECT_EQ(SpoolBacklog(a), "0");
  a.set_spool_backlog_batches(1);
  a.set_spool_backlog_bytes(700);
  EXPECT_EQ(SpoolBacklog(a), "1 batch, 700 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.0 KiB");
  EXPECT_EQ(FormatBytes(uint64_t{7} << 30), "7.0 GiB");
  EXPECT_EQ(FormatBytes(UINT64_MAX), "16777216.0 TiB");
}

TEST(Tables, IncidentsAndActionsCarryWhatAnOperatorNeeds) {
  const auto fleet = CannedFleet();
  const std::string incidents = IncidentsTable(fleet.incidents).Render(200);
  EXPECT_NE(incidents.find("contained"), std::string::npos);
  EXPECT_NE(incidents.find("ssh-bruteforce"), std::string::npos);
  EXPECT_TRUE(OnlyPrintable(incidents));
  const std::string actions = ActionsTable(fleet.actions).Render(300);
  EXPECT_NE(actions.find("UnauthorizedOperation"), std::string::npos);
  EXPECT_NE(actions.find("req-2222"), std::string::npos);
}

TEST(IncidentReport, TimelineMergesEventsAndActionsInTimeOrder) {
  const auto fleet = CannedFleet();
  const std::string report = IncidentReport(fleet.incident7, 300);
  EXPECT_TRUE(OnlyPrintable(report));
  EXPECT_EQ(report.find("\x1b"), std::string::npos);
  // Event at -62s, then actions at -55s (describe), -52s (modify, failed), -50s (isolate).
  const size_t ev = report.find("CREATED");
  const size_t describe = report.find("ec2:DescribeInstances");
  const size_t modify = report.find("ec2:ModifyNetworkInterfaceAttribute");
  const size_t isolate = report.find("isolate i-0bbb2222");
  ASSERT_NE(ev, std::string::npos);
  ASSERT_NE(describe, std::string::npos);
  ASSERT_NE(modify, std::string::npos);
  ASSERT_NE(isolate, std::string::npos);
  EXPECT_LT(ev, describe);
  EXPECT_LT(describe, modify);
  EXPECT_LT(modify, isolate);
  EXPECT_NE(report.find("UnauthorizedOperation"), std::string::npos);
}

TEST(IncidentReport, EachSummaryLineIsItsOwnRow) {
  auto fleet = CannedFleet();
  fleet.incident7.mutable_incident()->set_summary("rule matched event 2\ncontained: 2 interfaces");
  const std::string report = IncidentReport(fleet.incident7, 300);
  EXPECT_NE(report.find("summary   rule matched event 2\n          contained: 2 interfaces\n"),
            std::string::npos)
      << report;
  EXPECT_EQ(report.find("\\x0a"), std::string::npos);
}

}  // namespace
}  // namespace tripline::cli
