#include "collector/daemon/collector_daemon.h"

#include <chrono>

#include "absl/strings/str_format.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/server_builder.h"
#include "platform/net/grpc_credentials.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {

absl::Status CheckRulesAgainstConfig(const RuleSet& rules, const CollectorConfig& config) {
  if (config.aws.isolation_security_group.empty() && rules.AnyIsolates() &&
      config.response_mode == ResponseMode::kAuto) {
    for (const Rule& r : rules.rules()) {
      if (r.Isolates()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: rule %s responds with isolate, but %s sets no aws.isolation_security_group",
            r.where, r.id, config.path));
      }
    }
  }
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
  d->worker_ = std::make_unique<IsolationWorker>(d->store_.get(), std::move(parts.network),
                                                 parts.network_error, worker_options, *d->clock_);

  StoreWriter::Options writer_options;
  writer_options.auto_respond = d->config_.response_mode == ResponseMode::kAuto;
  IsolationWorker* worker = d->worker_.get();
  d->writer_ = std::make_unique<StoreWriter>(
      d->store_.get(), d->registry_.get(),
      std::make_shared<const RuleSet>(std::move(parts.rules)), writer_options, *d->clock_,
      [worker] { worker->Wake(); });

  IngestService::Options ingest_options;
  ingest_options.enrollment_token = parts.enrollment_token;
  ingest_options.max_in_flight = parts.max_in_flight;
  d->ingest_ = std::make_unique<IngestService>(d->registry_.get(), d->writer_.get(),
                                               ingest_options);
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
  d->operator_ = std::make_unique<OperatorService>(d->store_.get(), d->authorizer_.get());

  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   MakeServerCredentials(d->config_.tls));
  if (d->config_.tls.plaintext) {
    spdlog::warn("collector: tls.plaintext is true: gRPC traffic on {} is NOT encrypted",
                 d->config_.listen);
  }

  d->writer_->Start();
  d->worker_->Start();

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
  spdlog::info("collector: listening on {} database={} rules={}", d->address(),
               d->config_.database, d->writer_->rules()->rules().size());
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
  if (writer_ != nullptr) writer_->Stop();  // commits what was accepted
  if (worker_ != nullptr) worker_->Stop();  // after its current call
  if (server_ != nullptr) server_->Wait();
  spdlog::info("collector: stopped");
}

}  // namespace tripline::collector
