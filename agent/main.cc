// tripline-agent: watches files, batches and signs what it sees, and streams it to the collector.
// Flags only name files; everything else is in agent.yaml.
//
//   tripline-agent --config FILE [--log-level LEVEL]          the daemon
//   tripline-agent scan --config FILE [--json]                take and store the FIM baseline
//   tripline-agent check --config FILE [--json]               compare the disk with it
//
// Exit status of the daemon: 0 after an orderly stop (SIGTERM/SIGINT), 2 for a bad command line or
// config (the message names file:line:col), 1 when the agent cannot start (key or token file, TLS
// files, inotify). An unreachable or refusing collector is never a reason to exit.
// `scan`: 0 done, 2 bad command line or config, 3 the baseline could not be stored.
// `check` (like AIDE's --check): 0 no changes, 1 changes found, 2 bad command line or config,
// 3 nothing to compare with or the baseline file could not be read.
#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "agent/batch/batcher.h"
#include "agent/config/agent_config.h"
#include "agent/fim/fim_delivery.h"
#include "agent/fim/fim_watcher.h"
#include "agent/fim/one_shot.h"
#include "agent/identity/agent_identity.h"
#include "agent/identity/instance_metadata.h"
#include "agent/logs/journal_reader.h"
#include "agent/logs/log_tailer.h"
#include "agent/logs/offset_ledger.h"
#include "agent/spool/spool.h"
#include "agent/transport/publisher.h"
#include "platform/crypto/digest.h"
#include "platform/fs/file_util.h"
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

absl::StatusOr<std::vector<tripline::agent::FimRoot>> FimRoots(
    const tripline::agent::AgentConfig& config) {
  std::vector<tripline::agent::FimRoot> roots;
  for (const tripline::agent::FimPathConfig& p : config.fim.paths) {
    absl::StatusOr<uint32_t> attrs = tripline::agent::ParseFileAttrs(p.attributes);
    if (!attrs.ok()) return attrs.status();
    roots.push_back(tripline::agent::FimRoot{p.path, p.recursive, p.exclude, p.max_hash_bytes,
                                             *attrs, p.one_filesystem});
  }
  return roots;
}

// `scan` and `check`: see the header comment for their exit status.
int RunOneShot(bool check, const std::string& config_path, bool json,
               const std::string& log_level) {
  using namespace tripline::agent;
  absl::StatusOr<AgentConfig> config = LoadAgentConfig(config_path, AgentConfigUse::kOneShot);
  if (!config.ok()) return Fail(2, std::string(config.status().message()));
  // Reports go to stdout; only warnings and worse are logged unless asked.
  if (absl::Status st =
          tripline::InitLogging("tripline-agent", log_level.empty() ? "warn" : log_level);
      !st.ok()) {
    return Fail(2, std::string(st.message()));
  }
  absl::StatusOr<std::vector<FimRoot>> roots = FimRoots(*config);
  if (!roots.ok()) return Fail(2, std::string(roots.status().message()));
  if (absl::Status st = tripline::MakeDirs(config->state_dir, 0700); !st.ok()) {
    return Fail(3, std::string(st.message()));
  }
  OneShotOptions options{*std::move(roots), config->state_dir + "/" + kBaselineFileName,
                         static_cast<int>(config->fim.threads)};
  const tripline::Clock& clock = tripline::SystemClock();
  if (!check) {
    absl::StatusOr<ScanReport> report = RunScan(options, clock);
    if (!report.ok()) return Fail(3, std::string(report.status().message()));
    std::string text = json ? ScanReportJson(*report, options.baseline_path)
                            : ScanReportText(*report, options.baseline_path);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  absl::StatusOr<CheckReport> report = RunCheck(options, clock);
  if (!report.ok()) return Fail(3, std::string(report.status().message()));
  std::string text = json ? CheckReportJson(*report) : CheckReportText(*report);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return report->changes.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  tripline::BlockShutdownSignals();
  using namespace tripline::agent;

  std::string config_path, log_level, oneshot_config;
  bool json = false;
  CLI::App app{"tripline-agent: file integrity monitoring that reports to a tripline-collector"};
  app.add_option("--config", config_path, "agent.yaml (runs the agent)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error (overrides config)");
  app.require_subcommand(0, 1);
  CLI::App* scan = app.add_subcommand("scan", "take the FIM baseline of fim.paths and store it");
  CLI::App* check = app.add_subcommand(
      "check", "compare fim.paths with the stored baseline; exit 0 unchanged, 1 changed");
  for (CLI::App* sub : {scan, check}) {
    sub->add_option("--config", oneshot_config, "agent.yaml (only state_dir and fim are needed)")
        ->required();
    sub->add_flag("--json", json, "print the report as JSON");
    sub->add_option("--log-level", log_level, "trace, debug, info, warn or error");
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  // The daemon idles for days with a dozen threads and a scan hashes with four per CPU: one malloc
  // arena per CPU, instead of glibc's eight per CPU, keeps each thread from holding an arena of its
  // own (2 MB at 100k watched files).
  ::mallopt(M_ARENA_MAX, std::max(1, static_cast<int>(std::thread::hardware_concurrency())));
  if (scan->parsed() || check->parsed()) {
    return RunOneShot(check->parsed(), oneshot_config, json, log_level);
  }
  if (config_path.empty()) return Fail(2, "--config is required (or a command: scan, check)");

  absl::StatusOr<AgentConfig> config = LoadAgentConfig(config_path);
  if (!config.ok()) return Fail(2, std::string(config.status().message()));
  if (!log_level.empty()) config->log_level = log_level;
  if (absl::Status st = tripline::InitLogging("tripline-agent", config->log_level); !st.ok()) {
    return Fail(2, std::string(st.message()));
  }

  // On EC2 the agent is its instance and proves it with IMDS's signed identity document; off EC2
  // agent.yaml names it and the collector must be told not to ask for a document.
  std::optional<InstanceMetadata> instance;
  if (config->agent_id.empty()) {
    ImdsOptions imds;
    imds.endpoint = config->imds.endpoint;
    imds.timeout = absl::Milliseconds(config->imds.timeout_ms);
    imds.attempts = static_cast<int>(config->imds.attempts);
    absl::StatusOr<InstanceMetadata> read = ReadInstanceMetadata(imds);
    if (!read.ok()) {
      return Fail(1, absl::StrFormat("agent_id is not set, so the instance id comes from IMDSv2, "
                                     "which failed: %s (off EC2, set agent_id in %s)",
                                     read.status().message(), config_path));
    }
    spdlog::info("agent: instance identity from IMDSv2 instance_id={} region={}",
                 read->instance_id, read->region);
    config->agent_id = read->instance_id;
    instance = *std::move(read);
  } else {
    spdlog::info("agent: agent_id={} from the config; no instance identity document is sent",
                 config->agent_id);
  }
  absl::StatusOr<AgentIdentity> identity = LoadAgentIdentity(
      config->agent_id, config->state_dir, config->collector.enrollment_token_file);
  if (!identity.ok()) return Fail(1, std::string(identity.status().message()));
  if (instance) {
    identity->identity_document = std::move(instance->document);
    identity->identity_signature = std::move(instance->signature);
  }
  spdlog::info("agent: starting agent_id={} version={} public_key={} roots={}", identity->agent_id,
               AgentVersion(), tripline::ToHex(identity->key->public_key()),
               config->fim.paths.size());

  const tripline::Clock& clock = tripline::SystemClock();
  // Log offsets move only when the batch holding the lines is durable (see offset_ledger.h).
  std::unique_ptr<OffsetLedger> ledger;
  std::vector<LogFileSource> log_sources;
  std::vector<JournalSource> journal_sources;
  for (const LogSourceConfig& s : config->logs.sources) {
    if (s.type == "journald") {
      journal_sources.push_back(JournalSource{
          .name = s.name,
          .units = s.units,
          .max_priority = static_cast<int>(s.max_priority),
          .parser = *LogParserFromName(s.parser),
          .include = s.include,
          .exclude = s.exclude,
          .start_at_beginning = s.start_at == "beginning",
          .max_line = static_cast<size_t>(s.max_line)});
      continue;
    }
    LogFileSource src;
    src.name = s.name;
    src.paths = s.paths;
    src.parser = *LogParserFromName(s.parser);
    src.include = s.include;
    src.exclude = s.exclude;
    src.start_at_beginning = s.start_at == "beginning";
    src.max_line = static_cast<size_t>(s.max_line);
    src.partial_timeout = absl::Milliseconds(s.partial_timeout_ms);
    log_sources.push_back(std::move(src));
  }
  if (!log_sources.empty() || !journal_sources.empty()) {
    absl::StatusOr<std::unique_ptr<OffsetLedger>> opened =
        OffsetLedger::Open(config->state_dir + "/" + kLogOffsetsFile);
    if (!opened.ok()) return Fail(1, std::string(opened.status().message()));
    ledger = *std::move(opened);
  }
  // Which FIM changes are in which batch, so each is reported exactly once (fim_delivery.h).
  absl::StatusOr<std::unique_ptr<FimDelivery>> fim_delivery_opened =
      FimDelivery::Open(config->state_dir + "/" + kFimDeliveryFileName);
  if (!fim_delivery_opened.ok()) {
    return Fail(1, std::string(fim_delivery_opened.status().message()));
  }
  FimDelivery& fim_delivery = **fim_delivery_opened;
  absl::StatusOr<std::unique_ptr<Spool>> opened = Spool::Open(SpoolOptions{
      .dir = config->spool.dir, .max_bytes = static_cast<uint64_t>(config->spool.max_bytes)});
  if (!opened.ok()) return Fail(1, std::string(opened.status().message()));
  Spool& spool = **opened;
  const SpoolRecovery recovered = spool.recovery();
  spdlog::info("agent: spool opened dir={} unacked={} acked_seq={} head_seq={} torn_tail_bytes={}",
               config->spool.dir, recovered.records, recovered.acked_seq,
               recovered.head ? recovered.head->seq : 0, recovered.dropped_tail_bytes);
  BatcherOptions batch_options{.max_events = static_cast<size_t>(config->batch.max_events),
                               .linger = absl::Milliseconds(config->batch.linger_ms),
                               .heartbeat = absl::Milliseconds(config->batch.heartbeat_ms),
                               .version = tripline::agent::AgentVersion()};
  batch_options.on_seal = [&ledger, &fim_delivery](uint64_t seq,
                                                    const tripline::v1::EventBatch& batch) {
    if (ledger) {
      if (absl::Status st = ledger->RecordSealed(seq, batch); !st.ok()) {
        spdlog::error("logs: cannot record batch_seq={} (its lines may be sent again after a "
                      "restart): {}",
                      seq, st.ToString());
      }
    }
    if (absl::Status st = fim_delivery.RecordSealed(seq, batch); !st.ok()) {
      spdlog::error("fim: cannot record batch_seq={} (its changes may be reported again after a "
                    "crash): {}",
                    seq, st.ToString());
    }
  };
  // A batch is durable once it is fdatasync'd in the spool (or acked): its lines' offsets move,
  // and FIM forgets the pending events it holds.
  spool.SetDurableListener([&ledger, &fim_delivery](uint64_t seq) {
    if (ledger) {
      if (absl::Status st = ledger->Durable(seq); !st.ok()) {
        spdlog::error("logs: cannot record durable_seq={}: {}", seq, st.ToString());
      }
    }
    if (absl::Status st = fim_delivery.Durable(seq); !st.ok()) {
      spdlog::error("fim: cannot record durable_seq={}: {}", seq, st.ToString());
    }
  });
  Batcher batcher(identity->agent_id, *identity->key, clock, &spool, std::move(batch_options));
  batcher.Add(AgentEvent(tripline::v1::AgentEvent::STARTED, "agent started"));

  PublisherOptions publish;
  publish.address = config->collector.address;
  publish.tls = tripline::ClientTlsOptions{config->collector.plaintext, config->collector.ca_file,
                                           config->collector.cert_file, config->collector.key_file};
  publish.window = static_cast<uint64_t>(config->transport.window);
  publish.backoff_initial = absl::Milliseconds(config->transport.backoff_initial_ms);
  publish.backoff_max = absl::Milliseconds(config->transport.backoff_max_ms);
  std::unique_ptr<LogTailer> tailer;
  std::unique_ptr<JournalReader> journal;
  if (!journal_sources.empty()) {
    journal = std::make_unique<JournalReader>(
        std::move(journal_sources), ledger.get(), clock,
        [&batcher](tripline::v1::Event ev) { return batcher.Add(std::move(ev)); });
  }
  if (!log_sources.empty()) {
    tailer = std::make_unique<LogTailer>(
        std::move(log_sources), ledger.get(), clock,
        [&batcher](tripline::v1::Event ev) { return batcher.Add(std::move(ev)); },
        LogTailerOptions{.rotate_wait = absl::Milliseconds(config->logs.rotate_wait_ms)});
  }
  // The chain goes on from the spool's last batch when the spool is intact; a fresh spool, or one
  // whose torn tail was cut, waits for the collector's head and continues the further of the two.
  // Log offsets recover before the first new batch can be sealed: a batch of the last run that
  // is neither in the spool nor at the collector had its seq given up, and the next batch reuses
  // it; its lines must be read again, not counted as delivered.
  const bool resume_from_spool = recovered.head && recovered.dropped_tail_bytes == 0;
  bool offsets_ok = true;
  auto recover_offsets = [&](uint64_t landed) {
    // FIM's pending changes in batches after `landed` are offered again.
    if (absl::Status st = fim_delivery.Recover(landed); !st.ok()) {
      spdlog::error("fim: cannot recover which changes were delivered (those pending are "
                    "reported again): {}",
                    st.ToString());
    }
    if (!ledger) return;
    if (absl::Status st = ledger->Recover(landed); !st.ok()) {
      spdlog::error("logs: cannot recover offsets, not tailing: {}", st.ToString());
      offsets_ok = false;
    }
  };
  if (resume_from_spool) {
    recover_offsets(recovered.head->seq);
    batcher.Start(recovered.head->seq, recovered.head->digest);
  }
  Publisher publisher(*identity, &spool, publish, [&](const ChainHead& head) {
    if (!resume_from_spool) {
      // Landed: what the collector has and what the spool still holds for it.
      recover_offsets(
          std::max<uint64_t>(head.durable_seq, recovered.head ? recovered.head->seq : 0));
    }
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
    // Tailing starts after the offsets recovered.
    if (tailer && offsets_ok) {
      if (absl::Status st = tailer->Start(); !st.ok()) {
        spdlog::error("logs: cannot start tailing: {}", st.ToString());
      }
    }
    if (journal && offsets_ok) {
      if (absl::Status st = journal->Start(); !st.ok()) {
        spdlog::error("logs: cannot start reading the journal: {}", st.ToString());
      }
    }
  });
  if (absl::Status st = publisher.Start(); !st.ok()) return Fail(1, std::string(st.message()));

  absl::StatusOr<std::vector<FimRoot>> roots = FimRoots(*config);
  if (!roots.ok()) {
    publisher.Stop();
    return Fail(2, std::string(roots.status().message()));
  }
  FimOptions fim_options;
  fim_options.baseline_path = config->state_dir + "/" + kBaselineFileName;
  fim_options.threads = static_cast<int>(config->fim.threads);
  fim_options.debounce_ms = config->fim.debounce_ms;
  fim_options.debounce_max_ms = config->fim.debounce_max_ms;
  fim_options.fallback_scan_interval_ms = config->fim.fallback_scan_interval_ms;
  fim_options.max_watches = config->fim.max_watches;
  // FIM never blocks on the batcher: with the spool refusing for lack of room (or the queue
  // full), it holds its events and marks roots dirty instead (fim_watcher.h, Back-pressure).
  fim_options.offer = [&batcher, &spool](const tripline::v1::Event& ev) {
    return !spool.under_pressure() && batcher.TryAdd(ev);
  };
  fim_options.delivery = &fim_delivery;
  FimWatcher fim(*std::move(roots), std::move(fim_options), clock,
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
  if (tailer) tailer->Stop();
  if (journal) journal->Stop();
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
