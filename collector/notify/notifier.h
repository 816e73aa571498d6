// Tells people what the response did: when an isolation or release finishes, or waits for an
// approval, a Notification goes to every configured sink (webhook with a JSON body, Slack
// incoming webhook, SNS Publish). Its own thread and a bounded queue: Enqueue never blocks the
// response worker or ingest. Each sink is tried up to `attempts` times with backoff; the outcome
// ("delivered" or the last error) is appended to the incident's timeline.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "collector/store/collector_store.h"
#include "platform/aws/query_connection.h"

namespace tripline::collector {

struct Notification {
  int64_t incident_id = 0;  // 0: none
  std::string title;        // "Tripline: i-0abc contained (incident 7)"
  std::string instance;
  std::string outcome;  // contained, isolation failed, waiting for approval, released, ...
  std::string text;     // what happened, where, what was done: the incident's timeline
};

class NotificationSink {
 public:
  virtual ~NotificationSink() = default;
  virtual std::string name() const = 0;  // for the timeline: "webhook https://hooks.example"
  // One delivery attempt; an error says why (HTTP status, AWS code).
  virtual absl::Status Send(const Notification& n) = 0;
};

// POSTs JSON to `url` (http/https): Slack's {"text": ...} when `slack`, else the Notification's
// fields. A 2xx answer is delivery.
std::unique_ptr<NotificationSink> MakeWebhookSink(std::string url, bool slack, long timeout_ms);

// E-mail over SMTP with libcurl: `url` smtp://host[:port] or smtps://...; `starttls` requires
// STARTTLS on smtp://; `username`/`password` optional (AUTH). A text/plain UTF-8 message with the
// title as Subject. InvalidArgument (at creation) for addresses with CR, LF, '<' or '>'.
struct SmtpOptions {
  std::string url;
  std::string from;
  std::vector<std::string> to;
  bool starttls = false;
  std::string username;
  std::string password;  // never logged
  long timeout_ms = 10000;
};
absl::StatusOr<std::unique_ptr<NotificationSink>> MakeSmtpSink(SmtpOptions options);

// SNS Publish to `topic_arn` over `connection` (service "sns", version 2010-03-31).
std::unique_ptr<NotificationSink> MakeSnsSink(std::unique_ptr<aws::QueryConnection> connection,
                                              std::string topic_arn);

// The JSON string literal of `s` (quotes included), escaping what JSON requires; bytes that are
// not UTF-8 become U+FFFD.
std::string JsonString(const std::string& s);

class Notifier {
 public:
  struct Options {
    int attempts = 3;
    long retry_base_ms = 500;
    size_t max_queue = 1000;
  };
  Notifier(CollectorStore* store, std::vector<std::unique_ptr<NotificationSink>> sinks,
           Options options);
  ~Notifier();  // Stop()s
  void Start();
  // Queues `n` for every sink; false (and a log line) when the queue is full. Never blocks.
  bool Enqueue(Notification n);
  // Finishes the notification being sent, drops the rest with a log line, joins. Idempotent.
  void Stop();
  bool empty() const { return sinks_.empty(); }

 private:
  void Loop();
  void Deliver(const Notification& n);

  CollectorStore* const store_;
  const std::vector<std::unique_ptr<NotificationSink>> sinks_;
  const Options options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Notification> queue_;  // guarded by mu_
  bool stopping_ = false;           // guarded by mu_
  std::thread thread_;
};

}  // namespace tripline::collector
