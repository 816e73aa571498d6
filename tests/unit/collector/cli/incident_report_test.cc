#include "collector/cli/incident_report.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/unit/collector/cli/fake_operator.h"

namespace tripline::cli {
namespace {

using testing::CannedFleet;

TEST(IncidentReport, MarkdownCoversDetectionEvidenceActionsTimingsAndQuestions) {
  auto fleet = CannedFleet();
  std::optional<v1::Agent> agent = fleet.agents.agents(1);  // i-0bbb2222, isolated
  const std::string md = IncidentReportMarkdown(fleet.incident7, agent);
  EXPECT_EQ(md.rfind("# Incident 7: File created under /tmp: \\x1b[31mevil\n", 0), 0u) << md;
  for (const char* section : {"## Detection", "## Affected instance", "## Evidence",
                              "## Actions and results", "## Timings", "## Open questions"}) {
    EXPECT_NE(md.find(section), std::string::npos) << section;
  }
  // The event at -62 s, the incident at -60 s; isolated (isolate done) at -49 s.
  EXPECT_NE(md.find("| first event | detection | 2.000 s |"), std::string::npos) << md;
  EXPECT_NE(md.find("| detection | containment | 11.000 s |"), std::string::npos) << md;
  EXPECT_NE(md.find("| detection | resolution | - |"), std::string::npos) << md;
  // The failed step is an open question, with AWS's code.
  EXPECT_NE(md.find("failed with UnauthorizedOperation"), std::string::npos) << md;
  EXPECT_NE(md.find("still isolated"), std::string::npos);
  EXPECT_NE(md.find("Nobody is assigned"), std::string::npos);
  EXPECT_NE(md.find("evidence export 7"), std::string::npos);
  EXPECT_EQ(md.find('\x1b'), std::string::npos);
  EXPECT_EQ(md.find('\x07'), std::string::npos);
}

TEST(IncidentReport, JsonCarriesTheSameFacts) {
  auto fleet = CannedFleet();
  const std::string json = IncidentReportJson(fleet.incident7, fleet.agents.agents(1));
  EXPECT_NE(json.find("\"incident_id\": 7"), std::string::npos) << json;
  EXPECT_NE(json.find("\"contain_seconds\": 11"), std::string::npos) << json;
  EXPECT_NE(json.find("\"resolve_seconds\": null"), std::string::npos) << json;
  EXPECT_NE(json.find("\"error_code\": \"UnauthorizedOperation\""), std::string::npos);
  EXPECT_NE(json.find("\"open_questions\""), std::string::npos);
}

TEST(IncidentReport, ResolvedIncidentHasResolutionTimeAndNoUncontainedQuestion) {
  auto fleet = CannedFleet();
  v1::Action* resolved = fleet.incident7.add_actions();
  resolved->set_id(9);
  resolved->set_kind("incident:status");
  resolved->set_detail("contained -> resolved");
  resolved->set_status("done");
  resolved->set_actor("token:alice");
  resolved->set_created_unix_ns(fleet.incident7.incident().opened_unix_ns() +
                                300 * testing::kSecond);
  resolved->set_updated_unix_ns(resolved->created_unix_ns());
  fleet.incident7.mutable_incident()->set_status("resolved");
  fleet.incident7.mutable_incident()->set_assignee("alice");
  const std::string md = IncidentReportMarkdown(fleet.incident7, std::nullopt);
  EXPECT_NE(md.find("| detection | resolution | 300.000 s |"), std::string::npos) << md;
  EXPECT_EQ(md.find("Nobody is assigned"), std::string::npos);
  EXPECT_EQ(md.find("not resolved"), std::string::npos);
  EXPECT_NE(md.find("token:alice"), std::string::npos);
}

}  // namespace
}  // namespace tripline::cli
