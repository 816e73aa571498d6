// tripline-collector: verifies and stores what agents send, runs the rules, opens incidents and
// isolates instances. Flags only name files; everything else is in collector.yaml.
//
//   tripline-collector --config FILE [--ready-file PATH] [--log-level LEVEL]
//   tripline-collector --config FILE token create NAME --role read|respond|admin
//   tripline-collector --config FILE token list
//   tripline-collector --config FILE token revoke NAME
//
// The token commands work on the database directly (the collector may be running): they are for
// the collector host's administrator, who can read the database anyway. A new token is printed
// once, on standard output; only its keyed hash is stored.
//
// Exit status: 0 after an orderly stop (SIGTERM/SIGINT), 2 for a bad command line, config or
// rules (the message names file:line:col), 1 when the collector cannot start (database, TLS
// files, listen address). SIGHUP reloads the rules; a bad rules file keeps the old ones.
#include <pwd.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "collector/auth/operator_auth.h"
#include "collector/cloudtrail/lookup_events_client.h"
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

// "local:<user>" for the audit trail: the user who ran the command (through sudo: the one who
// ran sudo).
std::string LocalActor() {
  if (const char* sudo = std::getenv("SUDO_USER"); sudo != nullptr && *sudo != '\0') {
    return absl::StrFormat("local:%s", tripline::Printable(sudo, 64));
  }
  if (const passwd* pw = ::getpwuid(::geteuid()); pw != nullptr && pw->pw_name != nullptr) {
    return absl::StrFormat("local:%s", tripline::Printable(pw->pw_name, 64));
  }
  return absl::StrFormat("local:uid%d", ::geteuid());
}

struct TokenCommand {
  std::string verb;  // create, list, revoke
  std::string name;
  std::string role = "read";
};

int RunTokenCommand(const tripline::collector::CollectorConfig& config, const TokenCommand& cmd) {
  using namespace tripline::collector;  // NOLINT: one function's worth
  absl::StatusOr<std::unique_ptr<CollectorStore>> store = CollectorStore::Open(config.database);
  if (!store.ok()) return Fail(1, std::string(store.status().message()));
  absl::StatusOr<std::string> key = LoadOrCreateTokenKey(config.operators.token_key_file);
  if (!key.ok()) return Fail(1, std::string(key.status().message()));
  OperatorTokens tokens(store->get(), *std::move(key));
  const int64_t now = absl::ToUnixNanos(absl::Now());

  if (cmd.verb == "create") {
    absl::StatusOr<Role> role = ParseRole(cmd.role);
    if (!role.ok()) return Fail(2, std::string(role.status().message()));
    absl::StatusOr<OperatorTokens::Created> created =
        tokens.Create(cmd.name, *role, LocalActor(), now);
    if (!created.ok()) {
      return Fail(absl::IsInvalidArgument(created.status()) ? 2 : 1,
                  std::string(created.status().message()));
    }
    std::cout << created->token << std::endl;
    std::fprintf(stderr,
                 "tripline-collector: token %s (role %s) created; it is shown only now. Give it "
                 "to its holder in a 0600 file (TRIPLINE_TOKEN_FILE).\n",
                 cmd.name.c_str(), cmd.role.c_str());
    return 0;
  }
  if (cmd.verb == "revoke") {
    absl::Status st = tokens.Revoke(cmd.name, LocalActor(), now);
    if (!st.ok()) return Fail(1, std::string(st.message()));
    std::fprintf(stderr, "tripline-collector: token %s revoked\n", cmd.name.c_str());
    return 0;
  }
  absl::StatusOr<std::vector<OperatorTokenRecord>> list = tokens.List();
  if (!list.ok()) return Fail(1, std::string(list.status().message()));
  std::cout << absl::StrFormat("%-6s %-24s %-8s %-8s %-20s %s\n", "ID", "NAME", "ROLE", "STATE",
                               "CREATED", "BY");
  for (const OperatorTokenRecord& t : *list) {
    std::cout << absl::StrFormat(
        "%-6d %-24s %-8s %-8s %-20s %s\n", t.id, tripline::Printable(t.name, 64), t.role,
        t.revoked_ns == 0 ? "active" : "revoked",
        absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixNanos(t.created_ns),
                         absl::UTCTimeZone()),
        tripline::Printable(t.created_by, 64));
  }
  return 0;
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
  TokenCommand token_cmd;
  auto* token = app.add_subcommand("token", "create, list or revoke operator tokens");
  token->require_subcommand(1);
  auto* create = token->add_subcommand("create", "create a token and print it (once)");
  create->add_option("NAME", token_cmd.name, "who holds it, e.g. alice or ci-reader")->required();
  create->add_option("--role", token_cmd.role, "read, respond or admin")
      ->check(CLI::IsMember({"read", "respond", "admin"}))
      ->capture_default_str();
  auto* list = token->add_subcommand("list", "list tokens (never their secrets)");
  auto* revoke = token->add_subcommand("revoke", "revoke NAME's active token");
  revoke->add_option("NAME", token_cmd.name, "the token's name")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  absl::StatusOr<tripline::collector::CollectorConfig> config =
      tripline::collector::LoadCollectorConfig(config_path);
  if (!config.ok()) return Fail(2, std::string(config.status().message()));
  if (!log_level.empty()) config->log_level = log_level;
  if (absl::Status st = tripline::InitLogging("tripline-collector", config->log_level); !st.ok()) {
    return Fail(2, std::string(st.message()));
  }

  if (token->parsed()) {
    token_cmd.verb = create->parsed() ? "create" : list->parsed() ? "list" : "revoke";
    return RunTokenCommand(*config, token_cmd);
  }

  absl::StatusOr<tripline::collector::RuleSet> rules =
      tripline::collector::LoadRules(config->rules);
  if (!rules.ok()) return Fail(2, std::string(rules.status().message()));
  if (absl::Status st = tripline::collector::CheckRulesAgainstConfig(*rules, *config); !st.ok()) {
    return Fail(2, std::string(st.message()));
  }

  tripline::collector::CollectorParts parts;
  absl::StatusOr<std::string> enrollment =
      tripline::collector::ReadSecretFile(config->enrollment_token_file, "enrollment_token_file");
  if (!enrollment.ok()) return Fail(2, std::string(enrollment.status().message()));
  parts.enrollment_token = *std::move(enrollment);
  if (!config->operator_token_file.empty()) {
    absl::StatusOr<std::string> operator_token =
        tripline::collector::ReadSecretFile(config->operator_token_file, "operator_token_file");
    if (!operator_token.ok()) return Fail(2, std::string(operator_token.status().message()));
    parts.operator_token = *std::move(operator_token);
  }

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
  for (const std::string& region : config->cloudtrail.regions) {
    absl::StatusOr<std::unique_ptr<tripline::collector::LookupEventsSource>> source =
        tripline::collector::MakeLookupEventsClient(config->aws, config->cloudtrail, region);
    if (!source.ok()) {
      return Fail(2, absl::StrFormat("%s: cloudtrail: region %s: %s", config->path, region,
                                     source.status().message()));
    }
    parts.cloudtrail_sources[region] = *std::move(source);
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
    absl::Status st = tripline::WriteFileAtomic(ready_file, (*daemon)->address() + "\n", 0644);
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
