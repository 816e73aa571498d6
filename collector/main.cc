// tripline-collector: verifies and stores what agents send, runs the rules, opens incidents and
// isolates instances. Flags only name files; everything else is in collector.yaml.
//
//   tripline-collector --config FILE [--ready-file PATH] [--log-level LEVEL]
//
// Exit status: 0 after an orderly stop (SIGTERM/SIGINT), 2 for a bad command line, config or
// rules (the message names file:line:col), 1 when the collector cannot start (database, TLS
// files, listen address). SIGHUP reloads the rules; a bad rules file keeps the old ones.
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "collector/config/collector_config.h"
#include "collector/daemon/collector_daemon.h"
#include "collector/response/ec2_instance_network.h"
#include "collector/rules/rule_set.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/shutdown.h"

namespace {

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "tripline-collector: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  tripline::BlockShutdownSignals();

  std::string config_path, ready_file, log_level;
  CLI::App app{"tripline-collector: verifies, stores and acts on what tripline agents report"};
  app.add_option("--config", config_path, "collector.yaml")->required();
  app.add_option("--ready-file", ready_file,
                 "after listening, write HOST:PORT and a newline here (atomically)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error (overrides config)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  absl::StatusOr<tripline::collector::CollectorConfig> config =
      tripline::collector::LoadCollectorConfig(config_path);
  if (!config.ok()) return Fail(2, std::string(config.status().message()));
  if (!log_level.empty()) config->log_level = log_level;
  if (absl::Status st = tripline::InitLogging("tripline-collector", config->log_level);
      !st.ok()) {
    return Fail(2, std::string(st.message()));
  }

  absl::StatusOr<tripline::collector::RuleSet> rules =
      tripline::collector::LoadRules(config->rules);
  if (!rules.ok()) return Fail(2, std::string(rules.status().message()));
  if (absl::Status st = tripline::collector::CheckRulesAgainstConfig(*rules, *config); !st.ok()) {
    return Fail(2, std::string(st.message()));
  }

  tripline::collector::CollectorParts parts;
  absl::StatusOr<std::string> enrollment = tripline::collector::ReadSecretFile(
      config->enrollment_token_file, "enrollment_token_file");
  if (!enrollment.ok()) return Fail(2, std::string(enrollment.status().message()));
  absl::StatusOr<std::string> operator_token = tripline::collector::ReadSecretFile(
      config->operator_token_file, "operator_token_file");
  if (!operator_token.ok()) return Fail(2, std::string(operator_token.status().message()));
  parts.enrollment_token = *std::move(enrollment);
  parts.operator_token = *std::move(operator_token);

  absl::StatusOr<tripline::collector::AwsResponse> aws =
      tripline::collector::MakeAwsResponse(config->aws);
  if (aws.ok()) {
    parts.network = std::move(aws->network);
    // The collector never isolates the instance it runs on.
    if (config->response.self_instance_id.empty()) {
      config->response.self_instance_id = aws->self_instance_id;
    }
    spdlog::info("collector: AWS region={} own_instance={}", aws->region,
                 config->response.self_instance_id.empty() ? "(not on EC2)"
                                                           : config->response.self_instance_id);
  } else {
    parts.network_error = aws.status();
    spdlog::warn("collector: AWS is not usable, response actions will fail: {}",
                 std::string(aws.status().message()));
  }
  for (const tripline::collector::NotifyConfig::Webhook& hook : config->notify.webhooks) {
    parts.notify_sinks.push_back(tripline::collector::MakeWebhookSink(hook.url, hook.slack, 10000));
  }
  if (const auto& smtp = config->notify.smtp; !smtp.url.empty()) {
    tripline::collector::SmtpOptions o;
    o.url = smtp.url;
    o.from = smtp.from;
    o.to = smtp.to;
    o.starttls = smtp.starttls && smtp.url.rfind("smtp://", 0) == 0;
    o.username = smtp.username;
    if (!smtp.password_file.empty()) {
      absl::StatusOr<std::string> password = tripline::collector::ReadSecretFile(
          smtp.password_file, "notify.smtp.password_file");
      if (!password.ok()) return Fail(2, std::string(password.status().message()));
      o.password = *std::move(password);
    }
    absl::StatusOr<std::unique_ptr<tripline::collector::NotificationSink>> sink =
        tripline::collector::MakeSmtpSink(std::move(o));
    if (!sink.ok()) return Fail(2, absl::StrFormat("notify.smtp: %s", sink.status().message()));
    parts.notify_sinks.push_back(*std::move(sink));
  }
  if (!config->notify.sns_topic_arn.empty()) {
    absl::StatusOr<std::unique_ptr<tripline::aws::QueryConnection>> sns =
        tripline::collector::MakeSnsConnection(config->aws, config->notify.sns_topic_arn);
    if (!sns.ok()) return Fail(2, absl::StrFormat("notify.sns_topic_arn: %s", sns.status().message()));
    parts.notify_sinks.push_back(
        tripline::collector::MakeSnsSink(*std::move(sns), config->notify.sns_topic_arn));
  }
  parts.config = *config;
  parts.rules = *std::move(rules);

  absl::StatusOr<std::unique_ptr<tripline::collector::CollectorDaemon>> daemon =
      tripline::collector::CollectorDaemon::Start(std::move(parts));
  if (!daemon.ok()) return Fail(1, std::string(daemon.status().message()));

  if (!ready_file.empty()) {
    absl::Status st =
        tripline::WriteFileAtomic(ready_file, (*daemon)->address() + "\n", 0644);
    if (!st.ok()) {
      (*daemon)->Stop();
      return Fail(1, absl::StrFormat("--ready-file: %s", st.message()));
    }
  }

  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  tripline::collector::CollectorDaemon* d = daemon->get();
  tripline::StartSignalWatcher(
      [&] {
        spdlog::info("collector: stopping on signal");
        std::lock_guard<std::mutex> lock(mu);
        stop = true;
        cv.notify_all();
      },
      [d] { d->ReloadRules().IgnoreError(); });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return stop; });
  }
  (*daemon)->Stop();
  tripline::StopSignalWatcher();
  return 0;
}
