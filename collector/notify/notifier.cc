#include "collector/notify/notifier.h"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {
namespace {

// Length of the well-formed UTF-8 sequence at s[i], or 0.
int Utf8Length(const std::string& s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  const int len = c >= 0xf0 && c < 0xf5   ? 4
                  : c >= 0xe0 && c < 0xf0 ? 3
                  : c >= 0xc2 && c < 0xe0 ? 2
                                          : 0;
  if (len == 0 || i + len > s.size()) return 0;
  for (int k = 1; k < len; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  }
  return len;
}

// `s` with every byte that is not part of well-formed UTF-8 replaced by U+FFFD (SNS and JSON
// take UTF-8 only).
std::string ValidUtf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const int len = Utf8Length(s, i);
    if (len == 0) {
      out += "\xef\xbf\xbd";
      ++i;
    } else {
      out.append(s, i, len);
      i += len;
    }
  }
  return out;
}

class WebhookSink : public NotificationSink {
 public:
  WebhookSink(std::string url, bool slack, long timeout_ms)
      : url_(std::move(url)), slack_(slack), timeout_ms_(timeout_ms) {}
  std::string name() const override {
    // The host only: webhook URLs carry their secret in the path.
    const size_t scheme = url_.find("://");
    const size_t path = url_.find('/', scheme == std::string::npos ? 0 : scheme + 3);
    return absl::StrCat(slack_ ? "slack " : "webhook ", url_.substr(0, path));
  }
  absl::Status Send(const Notification& n) override {
    const std::string body =
        slack_ ? absl::StrCat(R"({"text":)", JsonString(n.title + "\n" + n.text), "}")
               : absl::StrFormat(
                     R"({"incident_id":%d,"title":%s,"instance":%s,"outcome":%s,"text":%s})",
                     n.incident_id, JsonString(n.title), JsonString(n.instance),
                     JsonString(n.outcome), JsonString(n.text));
    CURL* h = curl_easy_init();
    if (h == nullptr) return absl::InternalError("curl_easy_init failed");
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    std::string answer;
    char errbuf[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(h, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms_);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(
        h, CURLOPT_WRITEFUNCTION,
        +[](char*, size_t size, size_t count, void*) { return size * count; });
    const CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    if (rc != CURLE_OK) {
      return absl::UnavailableError(errbuf[0] ? errbuf : curl_easy_strerror(rc));
    }
    if (status < 200 || status >= 300) {
      return absl::UnavailableError(absl::StrCat("HTTP ", status));
    }
    return absl::OkStatus();
  }

 private:
  const std::string url_;
  const bool slack_;
  const long timeout_ms_;
};

// Control characters (CR, LF above all: header injection) become spaces.
std::string HeaderSafe(const std::string& s) {
  std::string out = ValidUtf8(s);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return out;
}

class SmtpSink : public NotificationSink {
 public:
  explicit SmtpSink(SmtpOptions o) : o_(std::move(o)) {}
  std::string name() const override { return absl::StrCat("smtp ", o_.url); }
  absl::Status Send(const Notification& n) override {
    // RFC 5322 message, CRLF line ends; libcurl escapes lines that start with a dot.
    std::string body = ValidUtf8(n.text);
    std::string crlf_body;
    for (char c : body) {
      if (c == '\n')
        crlf_body += "\r\n";
      else if (c != '\r')
        crlf_body += c;
    }
    std::string to_header;
    for (const std::string& t : o_.to)
      absl::StrAppend(&to_header, to_header.empty() ? "" : ", ", t);
    const std::string message = absl::StrCat(
        "From: ", o_.from, "\r\nTo: ", to_header, "\r\nSubject: ", HeaderSafe(n.title),
        "\r\nDate: ",
        absl::FormatTime("%a, %d %b %Y %H:%M:%S +0000", absl::Now(), absl::UTCTimeZone()),
        "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\nX-Tripline-Incident: ",
        n.incident_id, "\r\n\r\n", crlf_body, "\r\n");
    struct Reader {
      const std::string* data;
      size_t pos = 0;
    } reader{&message};
    CURL* h = curl_easy_init();
    if (h == nullptr) return absl::InternalError("curl_easy_init failed");
    curl_slist* rcpt = nullptr;
    for (const std::string& t : o_.to) rcpt = curl_slist_append(rcpt, ("<" + t + ">").c_str());
    const std::string from = "<" + o_.from + ">";
    char errbuf[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(h, CURLOPT_URL, o_.url.c_str());
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, o_.timeout_ms);
    if (o_.starttls) curl_easy_setopt(h, CURLOPT_USE_SSL, static_cast<long>(CURLUSESSL_ALL));
    if (!o_.username.empty()) {
      curl_easy_setopt(h, CURLOPT_USERNAME, o_.username.c_str());
      curl_easy_setopt(h, CURLOPT_PASSWORD, o_.password.c_str());
    }
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, from.c_str());
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(message.size()));
    curl_easy_setopt(
        h, CURLOPT_READFUNCTION, +[](char* buf, size_t size, size_t count, void* user) -> size_t {
          auto* r = static_cast<Reader*>(user);
          const size_t chunk = std::min(size * count, r->data->size() - r->pos);
          std::memcpy(buf, r->data->data() + r->pos, chunk);
          r->pos += chunk;
          return chunk;
        });
    curl_easy_setopt(h, CURLOPT_READDATA, &reader);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    const CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(h);
    if (rc != CURLE_OK) {
      return absl::UnavailableError(absl::StrCat(errbuf[0] ? errbuf : curl_easy_strerror(rc),
                                                 code ? absl::StrCat(" (SMTP ", code, ")") : ""));
    }
    return absl::OkStatus();
  }

 private:
  const SmtpOptions o_;
};

class SnsSink : public NotificationSink {
 public:
  SnsSink(std::unique_ptr<aws::QueryConnection> connection, std::string topic_arn)
      : connection_(std::move(connection)), topic_arn_(std::move(topic_arn)) {}
  std::string name() const override { return "sns " + topic_arn_; }
  absl::Status Send(const Notification& n) override {
    std::string subject = ValidUtf8(n.title.substr(0, 100));  // SNS: at most 100 characters
    for (char& c : subject) {
      if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    }
    aws::CallInfo info;
    pugi::xml_document doc;
    RETURN_IF_ERROR(connection_->Call(
        "Publish", {{"TopicArn", topic_arn_}, {"Subject", subject}, {"Message", ValidUtf8(n.text)}},
        false, &info, &doc));
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<aws::QueryConnection> connection_;
  const std::string topic_arn_;
};

}  // namespace

std::string JsonString(const std::string& raw) {
  const std::string s = ValidUtf8(raw);
  std::string out = "\"";
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += ch;
    }
  }
  out += '"';
  return out;
}

std::unique_ptr<NotificationSink> MakeWebhookSink(std::string url, bool slack, long timeout_ms) {
  return std::make_unique<WebhookSink>(std::move(url), slack, timeout_ms);
}

absl::StatusOr<std::unique_ptr<NotificationSink>> MakeSmtpSink(SmtpOptions options) {
  if (options.url.rfind("smtp://", 0) != 0 && options.url.rfind("smtps://", 0) != 0) {
    return absl::InvalidArgumentError("SMTP url must be smtp:// or smtps://");
  }
  if (options.to.empty()) return absl::InvalidArgumentError("SMTP: no recipient");
  std::vector<std::string> addresses = options.to;
  addresses.push_back(options.from);
  for (const std::string& a : addresses) {
    if (a.find('@') == std::string::npos || a.find_first_of("<>\r\n\t ") != std::string::npos ||
        HeaderSafe(a) != a) {
      return absl::InvalidArgumentError(
          absl::StrCat("SMTP address '", Printable(a, 80), "' is not name@domain"));
    }
  }
  return std::unique_ptr<NotificationSink>(new SmtpSink(std::move(options)));
}

std::unique_ptr<NotificationSink> MakeSnsSink(std::unique_ptr<aws::QueryConnection> connection,
                                              std::string topic_arn) {
  return std::make_unique<SnsSink>(std::move(connection), std::move(topic_arn));
}

Notifier::Notifier(CollectorStore* store, std::vector<std::unique_ptr<NotificationSink>> sinks,
                   Options options)
    : store_(store), sinks_(std::move(sinks)), options_(options) {}

Notifier::~Notifier() { Stop(); }

void Notifier::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stopping_ || sinks_.empty()) return;
  thread_ = std::thread([this] { Loop(); });
}

bool Notifier::Enqueue(Notification n) {
  if (sinks_.empty()) return true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.size() >= options_.max_queue) {
      spdlog::error("notify: queue full ({}), dropping the notification of incident {}",
                    queue_.size(), n.incident_id);
      return false;
    }
    queue_.push_back(std::move(n));
  }
  cv_.notify_one();
  return true;
}

void Notifier::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  if (!queue_.empty()) {
    spdlog::warn("notify: stopping with {} notification(s) not sent", queue_.size());
    queue_.clear();
  }
}

void Notifier::Loop() {
  for (;;) {
    Notification n;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      n = std::move(queue_.front());
      queue_.pop_front();
    }
    Deliver(n);
  }
}

void Notifier::Deliver(const Notification& n) {
  std::mt19937_64 rng(std::random_device{}());
  for (const std::unique_ptr<NotificationSink>& sink : sinks_) {
    absl::Status st;
    int attempt = 1;
    for (;; ++attempt) {
      st = sink->Send(n);
      if (st.ok() || attempt >= options_.attempts) break;
      {
        std::unique_lock<std::mutex> lock(mu_);
        const long cap = options_.retry_base_ms << (attempt - 1);
        const long wait = std::uniform_int_distribution<long>(cap / 2, cap)(rng);
        if (cv_.wait_for(lock, std::chrono::milliseconds(wait), [this] { return stopping_; })) {
          break;  // stopping: record what we have
        }
      }
    }
    const std::string line =
        st.ok() ? absl::StrFormat("notify %s: delivered (%d attempt(s))", sink->name(), attempt)
                : absl::StrFormat("notify %s: failed after %d attempt(s): %s", sink->name(),
                                  attempt, Printable(std::string(st.message()), 300));
    if (!st.ok()) spdlog::warn("{} incident={}", line, n.incident_id);
    if (n.incident_id > 0) {
      absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
      absl::Status s = w.status();
      if (s.ok()) s = w->AppendIncidentSummary(n.incident_id, line, absl::ToUnixNanos(absl::Now()));
      if (s.ok()) s = w->Commit();
      if (!s.ok()) spdlog::error("notify: cannot record the outcome: {}", s.ToString());
    }
  }
}

}  // namespace tripline::collector
