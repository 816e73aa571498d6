// The running collector, wired together: the store, the agent registry, the store writer thread,
// the response worker thread, and one gRPC server carrying Ingest (callback API), Operator (sync)
// and reflection. main.cc only parses flags and loads files; tests start the same object in
// process on 127.0.0.1:0.
//
// Threads: gRPC's (callback reactions and the sync pool for Operator), the store writer, the
// response worker, one CloudTrail poller per configured region. Stop() order: the server stops
// accepting and cancels open streams, the pollers stop after their current call, the store writer
// commits everything already accepted, then the response worker stops after its current EC2 call.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <vector>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "collector/api/operator_service.h"
#include "collector/cloudtrail/cloud_event_writer.h"
#include "collector/cloudtrail/cloudtrail_poller.h"
#include "collector/config/collector_config.h"
#include "collector/incidents/absence_monitor.h"
#include "collector/ingest/agent_registry.h"
#include "collector/ingest/ingest_service.h"
#include "collector/ingest/store_writer.h"
#include "collector/notify/notifier.h"
#include "collector/response/isolation_worker.h"
#include "collector/rules/rule_set.h"
#include "collector/store/collector_store.h"
#include "grpcpp/server.h"
#include "platform/runtime/clock.h"

namespace tripline::collector {

struct CollectorParts {
  CollectorConfig config;
  std::string enrollment_token;  // never logged
  std::string operator_token;    // bootstrap admin token, may be empty; never logged
  RuleSet rules;
  // Null: isolate actions fail with `network_error` recorded.
  std::unique_ptr<InstanceNetwork> network;
  absl::Status network_error = absl::FailedPreconditionError("no EC2 client configured");
  const Clock* clock = nullptr;  // null: SystemClock()
  size_t max_in_flight = 128;    // per stream
  // Where response outcomes are announced (webhooks, SNS); empty: nowhere.
  std::vector<std::unique_ptr<NotificationSink>> notify_sinks;
  // One LookupEvents source per region of config.cloudtrail.regions (main.cc makes the real
  // ones; tests may pass their own). A configured region without a source fails Start().
  std::map<std::string, std::unique_ptr<LookupEventsSource>> cloudtrail_sources;
};

class CollectorDaemon {
 public:
  // Opens the store, starts the threads and the server. Errors name what failed: the database,
  // the TLS files, or the listen address.
  static absl::StatusOr<std::unique_ptr<CollectorDaemon>> Start(CollectorParts parts);
  ~CollectorDaemon();  // Stop()s

  // The port the server listens on (the chosen one when the config said 0).
  int port() const { return port_; }
  // "127.0.0.1:PORT" (the host from the config, the actual port).
  std::string address() const;

  // Loads the rules again from the config's path (SIGHUP). On error the old rules stay in force
  // and the error (naming file:line:col) is returned.
  absl::Status ReloadRules();
  // Rules in force after the last successful reload (or at start).
  size_t rule_count() const { return rule_count_.load(); }
  // Swaps in `rules` directly (tests).
  void SetRules(RuleSet rules);

  // Orderly stop; idempotent.
  void Stop();

  CollectorStore* store() const { return store_.get(); }

 private:
  CollectorDaemon() = default;

  CollectorConfig config_;
  const Clock* clock_ = nullptr;
  std::unique_ptr<CollectorStore> store_;
  std::unique_ptr<AgentRegistry> registry_;
  std::unique_ptr<Notifier> notifier_;  // before worker_: the worker calls it
  std::unique_ptr<IsolationWorker> worker_;
  std::unique_ptr<StoreWriter> writer_;
  std::unique_ptr<AbsenceMonitor> absence_;
  std::unique_ptr<CloudEventWriter> cloud_writer_;        // before the pollers that use it
  std::vector<std::unique_ptr<CloudTrailPoller>> pollers_;  // one per CloudTrail region
  std::unique_ptr<IngestService> ingest_;
  std::unique_ptr<OperatorTokens> tokens_;
  std::unique_ptr<OperatorAuthorizer> authorizer_;
  std::unique_ptr<OperatorService> operator_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<size_t> rule_count_{0};
  std::mutex stop_mu_;
  bool stopped_ = false;  // guarded by stop_mu_
};

// The check both start and reload make of the rules against the config.
absl::Status CheckRulesAgainstConfig(const RuleSet& rules, const CollectorConfig& config);

}  // namespace tripline::collector
