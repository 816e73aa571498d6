#include "collector/daemon/collector_daemon.h"

#include <chrono>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/server_builder.h"
#include "platform/net/grpc_credentials.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {

absl::Status CheckRulesAgainstConfig(const RuleSet& /*rules*/, const CollectorConfig& /*config*/) {
  // Isolating rules need nothing from the config any more: the response finds or creates its
  // security groups per VPC. Start and reload keep calling this one place for such checks.
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CollectorDaemon>> CollectorDaemon::Start(CollectorParts parts) {
  std::unique_ptr<CollectorDaemon> d(new CollectorDaemon());
  d->config_ = parts.config;
  d->clock_ = parts.clock != nullptr ? parts.clock : &SystemClock();
  RETURN_IF_ERROR(CheckRulesAgainstConfig(parts.rules, d->config_));

  ASSIGN_OR_RETURN(d->store_, CollectorStore::Open(d->config_.database));
  d->registry_ = std::make_unique<AgentRegistry>();
  RETURN_IF_ERROR(d->registry_->Load(d->store_.get()));

  IsolationWorker::Options worker_options;
  worker_options.isolation_security_group = d->config_.aws.isolation_security_group;
  worker_options.default_mode = d->config_.response_mode == ResponseMode::kOff
                                    ? "auto"
                                    : ResponseModeName(d->config_.response_mode);
  const ResponseConfig& response = d->config_.response;
  worker_options.never_isolate_ids.insert(response.never_isolate_ids.begin(),
                                          response.never_isolate_ids.end());
  if (!response.self_instance_id.empty()) {
    worker_options.never_isolate_ids.insert(response.self_instance_id);
  }
  worker_options.never_isolate_tags = response.never_isolate_tags;
  worker_options.max_auto_per_hour = response.max_auto_isolations_per_hour;
  d->notifier_ = std::make_unique<Notifier>(d->store_.get(), std::move(parts.notify_sinks),
                                            Notifier::Options{});
  if (!d->notifier_->empty()) {
    Notifier* notifier = d->notifier_.get();
    CollectorStore* store = d->store_.get();
    worker_options.on_outcome = [notifier, store](const ActionRecord& action,
                                                  const std::string& outcome) {
      Notification n;
      n.incident_id = action.incident_id;
      n.instance = action.target;
      n.outcome = outcome;
      n.title = absl::StrFormat("Tripline: %s %s", action.target, outcome);
      n.text = absl::StrFormat("%s %s (action %d by %s, mode %s)", action.target, outcome,
                               action.id, action.actor, action.mode);
      if (action.incident_id > 0) {
        absl::StatusOr<std::optional<IncidentRecord>> inc = store->GetIncident(action.incident_id);
        if (inc.ok() && *inc) {
          n.title = absl::StrFormat("Tripline: %s %s (incident %d, %s: %s)", action.target,
                                    outcome, action.incident_id, (*inc)->severity, (*inc)->title);
          n.text = absl::StrCat(n.text, "\n", (*inc)->summary);
        }
      }
      notifier->Enqueue(std::move(n));
    };
  }
  d->worker_ = std::make_unique<IsolationWorker>(d->store_.get(), std::move(parts.network),
                                                 parts.network_error, worker_options, *d->clock_);

  StoreWriter::Options writer_options;
  writer_options.auto_respond = d->config_.response_mode != ResponseMode::kOff;
  d->rule_count_.store(parts.rules.rules().size());
  IsolationWorker* worker = d->worker_.get();
  // Whoever queues a response action wakes the worker.
  auto wake_worker = [worker] { worker->Wake(); };
  d->writer_ = std::make_unique<StoreWriter>(
      d->store_.get(), d->registry_.get(), std::make_shared<const RuleSet>(std::move(parts.rules)),
      writer_options, *d->clock_, wake_worker);

  AbsenceMonitor::Options absence_options;
  absence_options.auto_respond = writer_options.auto_respond;
  StoreWriter* store_writer = d->writer_.get();
  // Absence and cloud rules come from the same rule set as the writer's, reloads included.
  auto current_rules = [store_writer] { return store_writer->rules(); };
  absence_options.rules = current_rules;
  absence_options.on_actions_queued = wake_worker;
  if (!d->notifier_->empty()) {
    Notifier* notifier = d->notifier_.get();
    absence_options.on_opened = [notifier](const IncidentRecord& incident) {
      Notification n;
      n.incident_id = incident.id;
      n.instance = incident.agent_id;
      n.outcome = "silent";
      n.title = absl::StrFormat("Tripline: %s silent (incident %d, %s: %s)", incident.agent_id,
                                incident.id, incident.severity, incident.title);
      n.text = incident.summary;
      notifier->Enqueue(std::move(n));
    };
  }
  d->absence_ =
      std::make_unique<AbsenceMonitor>(d->store_.get(), std::move(absence_options), *d->clock_);
  if (!d->config_.cloudtrail.regions.empty()) {
    d->cloud_writer_ = std::make_unique<CloudEventWriter>(
        d->store_.get(), current_rules, writer_options.auto_respond, *d->clock_, wake_worker);
    const CloudTrailConfig& ct = d->config_.cloudtrail;
    for (const std::string& region : ct.regions) {
      auto source = parts.cloudtrail_sources.find(region);
      if (source == parts.cloudtrail_sources.end() || source->second == nullptr) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "%s: cloudtrail: no LookupEvents client for region %s", d->config_.path, region));
      }
      CloudTrailPollerOptions po;
      po.region = region;
      po.poll_interval_ns = int64_t{ct.poll_interval_ms} * 1000000;
      po.lookback_ns = int64_t{ct.lookback_ms} * 1000000;
      po.overlap_ns = int64_t{ct.overlap_ms} * 1000000;
      po.min_call_interval_ns = 1000000000 / ct.max_calls_per_second;
      d->pollers_.push_back(std::make_unique<CloudTrailPoller>(
          po, std::move(source->second), d->cloud_writer_.get(), *d->clock_));
    }
  }

  IngestService::Options ingest_options;
  ingest_options.enrollment_token = parts.enrollment_token;
  ingest_options.max_in_flight = parts.max_in_flight;
  if (d->config_.identity.require_document && d->config_.identity.aws_certificates.empty()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: identity.aws_certificates is empty: agents prove their EC2 instance with the signed "
        "instance identity document, checked against AWS's certificate for each region the "
        "fleet runs in (docs/operations.md says where to get them); for hosts off EC2 set "
        "identity.require_document: false",
        d->config_.path.empty() ? std::string("collector config") : d->config_.path));
  }
  if (d->config_.identity.require_document) {
    absl::StatusOr<std::unique_ptr<InstanceIdentityVerifier>> verifier =
        InstanceIdentityVerifier::Load(d->config_.identity.aws_certificates,
                                       d->config_.identity.allowed_accounts);
    if (!verifier.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("identity.aws_certificates: %s", verifier.status().message()));
    }
    spdlog::info("collector: enrollment requires a signed instance identity document "
                 "regions={} allowed_accounts={}",
                 (*verifier)->certificate_count(),
                 d->config_.identity.allowed_accounts.empty()
                     ? std::string("any")
                     : absl::StrJoin(d->config_.identity.allowed_accounts, ","));
    ingest_options.identity = std::move(*verifier);
  } else {
    spdlog::warn(
        "collector: identity.require_document is false: enrollment does NOT check which EC2 "
        "instance an agent runs on; anyone with the enrollment token may enroll under any agent "
        "id (meant for hosts off EC2 only)");
  }
  d->ingest_ =
      std::make_unique<IngestService>(d->registry_.get(), d->writer_.get(), ingest_options);
  if (d->config_.operators.token_key_file.empty()) {
    d->config_.operators.token_key_file = DefaultTokenKeyFile(d->config_.database);
  }
  ASSIGN_OR_RETURN(std::string token_key,
                   LoadOrCreateTokenKey(d->config_.operators.token_key_file));
  d->tokens_ = std::make_unique<OperatorTokens>(d->store_.get(), std::move(token_key));
  std::vector<std::pair<std::string, Role>> cert_roles;
  for (const auto& [cn, role] : d->config_.operators.cert_roles) {
    ASSIGN_OR_RETURN(Role r, ParseRole(role));
    cert_roles.emplace_back(cn, r);
  }
  d->authorizer_ = std::make_unique<OperatorAuthorizer>(d->tokens_.get(), parts.operator_token,
                                                        std::move(cert_roles));
  d->operator_ = std::make_unique<OperatorService>(d->store_.get(), d->authorizer_.get(),
                                                   wake_worker);
  CollectorDaemon* self = d.get();
  d->operator_->SetRulesReloader([self]() -> absl::StatusOr<size_t> {
    if (absl::Status st = self->ReloadRules(); !st.ok()) return st;
    return self->rule_count();
  });

  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   MakeServerCredentials(d->config_.tls));
  if (d->config_.tls.plaintext) {
    spdlog::warn("collector: tls.plaintext is true: gRPC traffic on {} is NOT encrypted",
                 d->config_.listen);
  }

  d->writer_->Start();
  d->notifier_->Start();
  d->worker_->Start();
  d->absence_->Start();
  for (const auto& poller : d->pollers_) poller->Start();

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(d->config_.listen, credentials, &d->port_);
  builder.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  // Agents keep their stream alive with pings; allow them without answering GOAWAY.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.RegisterService(d->ingest_.get());
  builder.RegisterService(d->operator_.get());
  d->server_ = builder.BuildAndStart();
  if (d->server_ == nullptr || d->port_ == 0) {
    d->Stop();
    return absl::UnavailableError(absl::StrFormat(
        "%s: listen %s: cannot listen there (address in use, or not a local address?)",
        d->config_.path, d->config_.listen));
  }
  spdlog::info("collector: listening on {} database={} rules={}", d->address(), d->config_.database,
               d->writer_->rules()->rules().size());
  return d;
}

CollectorDaemon::~CollectorDaemon() { Stop(); }

std::string CollectorDaemon::address() const {
  const std::string& listen = config_.listen;
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host == "0.0.0.0" || host == "[::]" || host.empty()) host = "127.0.0.1";
  return absl::StrFormat("%s:%d", host, port_);
}

absl::Status CollectorDaemon::ReloadRules() {
  absl::StatusOr<RuleSet> rules = LoadRules(config_.rules);
  if (!rules.ok()) {
    spdlog::error("collector: rules reload failed, keeping the old rules: {}",
                  std::string(rules.status().message()));
    return rules.status();
  }
  if (absl::Status st = CheckRulesAgainstConfig(*rules, config_); !st.ok()) {
    spdlog::error("collector: rules reload failed, keeping the old rules: {}",
                  std::string(st.message()));
    return st;
  }
  spdlog::info("collector: rules reloaded from {}: {} rule(s)", config_.rules,
               rules->rules().size());
  rule_count_.store(rules->rules().size());
  SetRules(*std::move(rules));
  return absl::OkStatus();
}

void CollectorDaemon::SetRules(RuleSet rules) {
  writer_->SetRules(std::make_shared<const RuleSet>(std::move(rules)));
}

void CollectorDaemon::Stop() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  if (server_ != nullptr) {
    // Unary calls get a moment to finish; open Publish streams are cancelled. The writer keeps
    // running meanwhile, so every reactor's items are answered and each stream can finish.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  }
  if (absence_ != nullptr) absence_->Stop();
  for (const auto& poller : pollers_) poller->Stop();  // after the call in flight
  if (writer_ != nullptr) writer_->Stop();  // commits what was accepted
  if (worker_ != nullptr) worker_->Stop();  // after its current call
  if (notifier_ != nullptr) notifier_->Stop();
  if (server_ != nullptr) server_->Wait();
  spdlog::info("collector: stopped");
}

}  // namespace tripline::collector
