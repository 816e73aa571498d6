// The notifier against real local receivers: a webhook (plain JSON and Slack's shape) on
// tests/fakes/http_receiver.py, SNS Publish on the local AWS endpoint (SigV4 checked by
// botocore); retries, failures and the outcome recorded on the incident.
#include "collector/notify/notifier.h"


#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/support/local_endpoint.h"
#include "tests/unit/collector/collector_test_env.h"

namespace tripline::collector {
namespace {

using tripline::testing::LocalEndpoint;

int64_t AddIncident(CollectorStore* store) {
  auto w = store->BeginWrite();
  IncidentRecord inc;
  inc.agent_id = "i-0abc";
  inc.rule_id = "etc-changed";
  inc.title = "A file under /etc changed";
  inc.severity = "high";
  inc.status = "contained";
  int64_t id = *w->InsertIncident(inc);
  EXPECT_TRUE(w->Commit().ok());
  return id;
}

Notification Sample(int64_t incident) {
  Notification n;
  n.incident_id = incident;
  n.instance = "i-0abc";
  n.outcome = "isolated";
  n.title = "Tripline: i-0abc isolated (incident 1, high: A file under /etc changed)";
  n.text =
      "rule etc-changed matched MODIFIED /etc/passwd\ncontained: 2 interface(s)\n\"quoted\" \xff";
  return n;
}

TEST(Notifier, WebhookSlackAndSnsAreDeliveredAndRecordedOnTheIncident) {
  LocalEndpoint hook(TRIPLINE_HTTP_RECEIVER_SCRIPT, {"--fail-first", "1"});
  ASSERT_TRUE(hook.running());
  tripline::testing::TempDir dir;
  std::ofstream(dir.Sub("seed.json"))
      << R"({"sns_topics": ["arn:aws:sns:us-east-1:111122223333:security"]})";
  LocalEndpoint aws(TRIPLINE_EC2_ENDPOINT_SCRIPT,
                    {"--region", "us-east-1", "--access-key", "AKIDNOTIFY", "--secret-key", "s",
                     "--seed", dir.Sub("seed.json")});
  ASSERT_TRUE(aws.running());
  auto store = *CollectorStore::Open(dir.Sub("c.db"));
  const int64_t incident = AddIncident(store.get());

  aws::QueryConnection::Options o;
  o.service = "sns";
  o.api_version = "2010-03-31";
  o.region = "us-east-1";
  o.endpoint = aws.url();
  o.credentials = []() -> absl::StatusOr<aws::Credentials> {
    return aws::Credentials{"AKIDNOTIFY", "s", ""};
  };
  std::vector<std::unique_ptr<NotificationSink>> sinks;
  sinks.push_back(MakeWebhookSink(hook.url() + "/hooks/secret-path", false, 5000));
  sinks.push_back(MakeWebhookSink(hook.url() + "/slack", true, 5000));
  sinks.push_back(
      MakeSnsSink(*aws::QueryConnection::Create(o), "arn:aws:sns:us-east-1:111122223333:security"));
  sinks.push_back(MakeWebhookSink("http://127.0.0.1:1/closed", false, 2000));
  Notifier notifier(store.get(), std::move(sinks), {/*attempts=*/3, /*retry_base_ms=*/10, 10});
  notifier.Start();
  ASSERT_TRUE(notifier.Enqueue(Sample(incident)));
  ASSERT_TRUE(testing::WaitFor([&] {
    auto inc = store->GetIncident(incident);
    return inc.ok() && *inc && absl::StrContains((*inc)->summary, "127.0.0.1:1");
  }));
  notifier.Stop();

  const std::string summary = (*store->GetIncident(incident))->summary;
  EXPECT_NE(summary.find("notify webhook " + hook.url() + ": delivered (2 attempt(s))"),
            std::string::npos)
      << summary;
  EXPECT_EQ(summary.find("secret-path"), std::string::npos) << "webhook paths hold secrets";
  EXPECT_NE(summary.find("notify slack " + hook.url() + ": delivered (1 attempt(s))"),
            std::string::npos)
      << summary;
  EXPECT_NE(summary.find("notify sns arn:aws:sns:us-east-1:111122223333:security: delivered"),
            std::string::npos)
      << summary;
  EXPECT_NE(summary.find("notify webhook http://127.0.0.1:1: failed after 3 attempt(s)"),
            std::string::npos)
      << summary;

  const std::string received = hook.Admin("/_tripline/received");
  EXPECT_NE(received.find(R"(\"incident_id\":)" + std::to_string(incident)), std::string::npos)
      << received;
  EXPECT_NE(received.find(R"(\"outcome\":\"isolated\")"), std::string::npos) << received;
  EXPECT_NE(received.find(R"({\"text\":\"Tripline: i-0abc isolated)"), std::string::npos)
      << received;
  EXPECT_NE(received.find(R"(\\\"quoted\\\" \ufffd)"), std::string::npos) << received;
  const std::string state = aws.Admin("/_tripline/state");
  EXPECT_NE(state.find("\"subject\": \"Tripline: i-0abc isolated"), std::string::npos) << state;
}

TEST(Notifier, EmailGoesOverSmtpAndIsRetriedAfterA451) {
  tripline::testing::TempDir dir;
  LocalEndpoint smtp(TRIPLINE_SMTP_RECEIVER_SCRIPT,
                     {"--out", dir.Sub("mail.jsonl"), "--fail-first", "1"});
  ASSERT_TRUE(smtp.running());
  auto store = *CollectorStore::Open(dir.Sub("c.db"));
  const int64_t incident = AddIncident(store.get());
  SmtpOptions o;
  o.url = "smtp://" + smtp.url().substr(7);
  o.from = "tripline@example.org";
  o.to = {"soc@example.org", "oncall@example.org"};
  auto sink = MakeSmtpSink(o);
  ASSERT_TRUE(sink.ok()) << sink.status();
  std::vector<std::unique_ptr<NotificationSink>> sinks;
  sinks.push_back(*std::move(sink));
  Notifier notifier(store.get(), std::move(sinks), {3, 10, 10});
  notifier.Start();
  Notification n = Sample(incident);
  n.title += "\r\nBcc: attacker@example.com";  // header injection attempt
  ASSERT_TRUE(notifier.Enqueue(n));
  ASSERT_TRUE(testing::WaitFor([&] {
    auto inc = store->GetIncident(incident);
    return inc.ok() && *inc && absl::StrContains((*inc)->summary, "notify smtp");
  }));
  notifier.Stop();
  EXPECT_NE((*store->GetIncident(incident))->summary.find("delivered (2 attempt(s))"),
            std::string::npos);
  std::ifstream in(dir.Sub("mail.jsonl"));
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_NE(line.find(R"("rcpt_tos": ["soc@example.org", "oncall@example.org"])"),
            std::string::npos)
      << line;
  EXPECT_NE(line.find("Subject: Tripline: i-0abc isolated"), std::string::npos) << line;
  EXPECT_EQ(line.find("\\r\\nBcc:"), std::string::npos)
      << "CRLF in the subject was not neutralised";
  EXPECT_NE(line.find("rule etc-changed matched MODIFIED /etc/passwd"), std::string::npos);
  EXPECT_FALSE(std::getline(in, line)) << "one message only";

  o.to = {"soc@example.org>\r\nRCPT TO:<x@y"};
  EXPECT_EQ(MakeSmtpSink(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Notifier, JsonStringEscapesAndReplacesBadUtf8) {
  EXPECT_EQ(JsonString("a\"b\\c\n\x01"), R"("a\"b\\c\u000a\u0001")");
  EXPECT_EQ(JsonString("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
  EXPECT_EQ(JsonString("\xc3"), "\"\xef\xbf\xbd\"");
}

}  // namespace
}  // namespace tripline::collector
