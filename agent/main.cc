// tripline-agent: watches files, batches and signs what it sees, and streams it to the collector.
// Flags only name files; everything else is in agent.yaml.
//
//   tripline-agent --config FILE [--log-level LEVEL]
//
// Exit status: 0 after an orderly stop (SIGTERM/SIGINT), 2 for a bad command line or config (the
// message names file:line:col), 1 when the agent cannot start (key or token file, TLS files,
// inotify). An unreachable or refusing collector is never a reason to exit.
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "agent/batch/batcher.h"
#include "agent/config/agent_config.h"
#include "agent/fim/fim_watcher.h"
#include "agent/identity/agent_identity.h"
#include "agent/spool/spool.h"
#include "agent/transport/publisher.h"
#include "platform/crypto/digest.h"
#include "platform/runtime/clock.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/shutdown.h"

namespace {

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "tripline-agent: %s\n", message.c_str());
  return code;
}

tripline::v1::Event AgentEvent(tripline::v1::AgentEvent::Kind kind, const std::string& message) {
  tripline::v1::Event ev;
  ev.set_time_unix_ns(tripline::SystemClock().NowUnixNanos());
  ev.mutable_agent()->set_kind(kind);
  ev.mutable_agent()->set_message(message);
  ev.mutable_agent()->set_version(tripline::agent::AgentVersion());
  return ev;
}

}  // namespace

int main(int argc, char** argv) {
  tripline::BlockShutdownSignals();
  using namespace tripline::agent;

  std::string config_path, log_level;
  CLI::App app{"tripline-agent: file integrity monitoring that reports to a tripline-collector"};
  app.add_option("--config", config_path, "agent.yaml")->required();
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error (overrides config)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  absl::StatusOr<AgentConfig> config = LoadAgentConfig(config_path);
  if (!config.ok()) return Fail(2, std::string(config.status().message()));
  if (!log_level.empty()) config->log_level = log_level;
  if (absl::Status st = tripline::InitLogging("tripline-agent", config->log_level); !st.ok()) {
    return Fail(2, std::string(st.message()));
  }

  absl::StatusOr<AgentIdentity> identity = LoadAgentIdentity(
      config->agent_id, config->state_dir, config->collector.enrollment_token_file);
  if (!identity.ok()) return Fail(1, std::string(identity.status().message()));
  spdlog::info("agent: starting agent_id={} version={} public_key={} roots={}", identity->agent_id,
               AgentVersion(), tripline::ToHex(identity->key->public_key()),
               config->fim.paths.size());

  const tripline::Clock& clock = tripline::SystemClock();
  absl::StatusOr<std::unique_ptr<Spool>> opened = Spool::Open(SpoolOptions{
      .dir = config->spool.dir, .max_bytes = static_cast<uint64_t>(config->spool.max_bytes)});
  if (!opened.ok()) return Fail(1, std::string(opened.status().message()));
  Spool& spool = **opened;
  const SpoolRecovery recovered = spool.recovery();
  spdlog::info("agent: spool opened dir={} unacked={} acked_seq={} head_seq={} torn_tail_bytes={}",
               config->spool.dir, recovered.records, recovered.acked_seq,
               recovered.head ? recovered.head->seq : 0, recovered.dropped_tail_bytes);
  Batcher batcher(identity->agent_id, *identity->key, clock, &spool,
                  BatcherOptions{.max_events = static_cast<size_t>(config->batch.max_events),
                                 .linger = absl::Milliseconds(config->batch.linger_ms)});
  batcher.Add(AgentEvent(tripline::v1::AgentEvent::STARTED, "agent started"));

  PublisherOptions publish;
  publish.address = config->collector.address;
  publish.tls = tripline::ClientTlsOptions{config->collector.plaintext, config->collector.ca_file,
                                           config->collector.cert_file, config->collector.key_file};
  publish.window = static_cast<uint64_t>(config->transport.window);
  publish.backoff_initial = absl::Milliseconds(config->transport.backoff_initial_ms);
  publish.backoff_max = absl::Milliseconds(config->transport.backoff_max_ms);
  // The chain goes on from the spool's last batch when the spool is intact; a fresh spool, or one
  // whose torn tail was cut, waits for the collector's head and continues the further of the two.
  const bool resume_from_spool = recovered.head && recovered.dropped_tail_bytes == 0;
  if (resume_from_spool) batcher.Start(recovered.head->seq, recovered.head->digest);
  Publisher publisher(*identity, &spool, publish, [&](const ChainHead& head) {
    if (resume_from_spool) {
      if (head.durable_seq > recovered.head->seq) {
        spdlog::error("agent: collector durable_seq={} is past the spool's last batch {}; was the "
                      "state directory restored from a backup?",
                      head.durable_seq, recovered.head->seq);
      }
    } else if (recovered.head && recovered.head->seq > head.durable_seq) {
      batcher.Start(recovered.head->seq, recovered.head->digest);
    } else {
      batcher.Start(head.durable_seq, head.durable_digest);
    }
  });
  if (absl::Status st = publisher.Start(); !st.ok()) return Fail(1, std::string(st.message()));

  std::vector<FimRoot> roots;
  for (const FimPathConfig& p : config->fim.paths) {
    roots.push_back(FimRoot{p.path, p.recursive, p.exclude, p.max_hash_bytes});
  }
  FimWatcher fim(std::move(roots), clock,
                 [&batcher](tripline::v1::Event ev) { batcher.Add(std::move(ev)); });
  if (absl::Status st = fim.Start(); !st.ok()) {
    publisher.Stop();
    return Fail(1, std::string(st.message()));
  }

  absl::Notification stop;
  tripline::StartSignalWatcher(
      [&stop] {
        spdlog::info("agent: stopping on signal");
        stop.Notify();
      },
      nullptr);
  stop.WaitForNotification();

  // Orderly stop: nothing blocks from here on; stop watching, seal what is queued (with STOPPED
  // last) into the spool, give the collector up to 2 s to ack, then leave.
  batcher.SetNonBlocking();
  fim.Stop();
  batcher.Add(AgentEvent(tripline::v1::AgentEvent::STOPPED, "agent stopped"));
  batcher.Stop();
  const bool all_acked = publisher.WaitForAcks(absl::Now() + absl::Seconds(2));
  if (publisher.enrollments() == 0) {
    spdlog::warn("agent: stopped before the collector ever answered Enroll; nothing was sent");
  } else if (all_acked) {
    spdlog::info("agent: stopped, every batch acked acked_seq={}", spool.acked_seq());
  } else {
    spdlog::info("agent: stopped with unacked batches in the spool, sent after restart unacked={} "
                 "acked_seq={}",
                 spool.size(), spool.acked_seq());
  }
  publisher.Stop();
  spool.Close();
  tripline::StopSignalWatcher();
  return 0;
}
