#include "agent/transport/publisher.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "absl/strings/str_format.h"
#include "platform/crypto/digest.h"
#include "platform/runtime/logging.h"

namespace tripline::agent {
namespace {

constexpr char kAgentIdMetadata[] = "tripline-agent-id";

bool IsRefusal(absl::StatusCode code) {
  return code == absl::StatusCode::kPermissionDenied ||
         code == absl::StatusCode::kFailedPrecondition ||
         code == absl::StatusCode::kUnauthenticated;
}

std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

uint64_t SeedFromOs() {
  std::string bytes = RandomBytes(sizeof(uint64_t));
  uint64_t seed = 0;
  std::memcpy(&seed, bytes.data(), sizeof(seed));
  return seed;
}

}  // namespace

Publisher::Publisher(const AgentIdentity& identity, Spool* spool, PublisherOptions options,
                     FirstEnrollmentFn on_first_enrollment)
    : identity_(identity),
      spool_(spool),
      options_(std::move(options)),
      on_first_enrollment_(std::move(on_first_enrollment)),
      rng_(SeedFromOs()) {}

Publisher::~Publisher() { Stop(); }

absl::Status Publisher::Start() {
  if (thread_.joinable()) return absl::FailedPreconditionError("transport: already started");
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds =
      MakeChannelCredentials(options_.tls);
  if (!creds.ok()) return creds.status();
  credentials_ = *std::move(creds);
  if (options_.tls.plaintext) {
    spdlog::warn(
        "transport: plaintext connection to the collector (collector.plaintext: true); "
        "batches are signed but not encrypted address={}",
        options_.address);
  }
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

bool Publisher::WaitForAcks(absl::Time deadline) { return spool_->WaitUntilEmpty(deadline); }

void Publisher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (call_ != nullptr) call_->TryCancel();
    stop_cv_.SignalAll();
  }
  spool_->Interrupt();
  if (thread_.joinable()) thread_.join();
}

uint64_t Publisher::enrollments() const {
  absl::MutexLock lock(&mu_);
  return enrollments_;
}

uint64_t Publisher::connections() const {
  absl::MutexLock lock(&mu_);
  return connections_;
}

bool Publisher::SetCall(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  call_ = context;
  return !stopping_;
}

bool Publisher::SleepUnlessStopping(absl::Duration delay) {
  const absl::Time deadline = absl::Now() + delay;
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    if (stop_cv_.WaitWithDeadline(&mu_, deadline)) return !stopping_;
  }
  return false;
}

absl::Duration Publisher::Backoff(int failures) {
  absl::Duration d = options_.backoff_initial;
  for (int i = 0; i < failures && d < options_.backoff_max; ++i) d *= 2;
  d = std::min(d, options_.backoff_max);
  // Full jitter on the upper half: [d/2, d], so a fleet does not reconnect in lockstep.
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  return d * jitter(rng_);
}

void Publisher::Run() {
  int failures = 0;
  for (;;) {
    bool got_ack = false;
    absl::Duration delay = absl::ZeroDuration();
    Connect(&got_ack, &delay);
    if (got_ack) failures = 0;
    if (delay == absl::ZeroDuration()) delay = Backoff(failures++);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    spdlog::info("transport: reconnect in {}ms", absl::ToInt64Milliseconds(delay));
    if (!SleepUnlessStopping(delay)) return;
  }
}

void Publisher::Connect(bool* got_ack, absl::Duration* next_delay) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 6 * 60 * 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.backoff_initial)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.backoff_max)));
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options_.address, credentials_, args);
  std::unique_ptr<tripline::v1::Ingest::Stub> stub = tripline::v1::Ingest::NewStub(channel);

  absl::StatusOr<ChainHead> head;
  {
    grpc::ClientContext context;
    if (!SetCall(&context)) return;
    head = Enroll(*stub, identity_, &context, options_.enroll_timeout);
    SetCall(nullptr);
  }
  if (!head.ok()) {
    if (IsRefusal(head.status().code())) {
      spdlog::error(
          "transport: enrollment refused agent_id={} code={} message=\"{}\"; fix the "
          "token or re-enroll the agent at the collector, retrying",
          identity_.agent_id, absl::StatusCodeToString(head.status().code()),
          Printable(std::string(head.status().message())));
      *next_delay = options_.backoff_max;
    } else {
      spdlog::warn("transport: enroll failed address={} code={} message=\"{}\"", options_.address,
                   absl::StatusCodeToString(head.status().code()),
                   Printable(std::string(head.status().message())));
    }
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    ++enrollments_;
  }
  spdlog::info("transport: enrolled agent_id={} durable_seq={}", identity_.agent_id,
               head->durable_seq);
  if (head->durable_seq < spool_->acked_seq()) {
    spdlog::error(
        "transport: collector's durable_seq={} is behind acked_seq={}; acked batches "
        "are gone from the collector",
        head->durable_seq, spool_->acked_seq());
  }
  spool_->AckThrough(head->durable_seq);
  if (!enrolled_once_) {
    enrolled_once_ = true;
    if (on_first_enrollment_) on_first_enrollment_(*head);
  }
  Stream(*stub, got_ack);
}

void Publisher::Stream(tripline::v1::Ingest::StubInterface& stub, bool* got_ack) {
  grpc::ClientContext context;
  context.AddMetadata(kAgentIdMetadata, identity_.agent_id);
  // Read the generation before anything can interrupt this stream, then check for a stop that
  // came before it.
  const uint64_t generation = spool_->generation();
  if (!SetCall(&context)) {
    SetCall(nullptr);
    return;
  }
  std::unique_ptr<
      grpc::ClientReaderWriterInterface<tripline::v1::SignedBatch, tripline::v1::PublishAck>>
      stream = stub.Publish(&context);
  {
    absl::MutexLock lock(&mu_);
    ++connections_;
  }
  const uint64_t first = spool_->acked_seq() + 1;
  spdlog::info("transport: connected address={} resume_seq={} unacked={}", options_.address, first,
               spool_->size());

  std::atomic<bool> acked{false};
  std::thread reader([&] {
    tripline::v1::PublishAck ack;
    while (stream->Read(&ack)) {
      spool_->AckThrough(ack.durable_seq());
      acked.store(true);
    }
    spool_->Interrupt();  // the stream is over: wake the writer
  });

  uint64_t next = first;
  uint64_t sent = 0;
  for (;;) {
    next = std::max(next, spool_->acked_seq() + 1);
    std::optional<SealedBatch> batch = spool_->WaitForSendable(next, options_.window, generation);
    if (!batch) break;
    if (!stream->Write(*batch->signed_batch)) break;
    next = batch->seq + 1;
    ++sent;
  }
  context.TryCancel();
  reader.join();
  grpc::Status status = stream->Finish();
  SetCall(nullptr);
  *got_ack = acked.load();
  bool stopping;
  {
    absl::MutexLock lock(&mu_);
    stopping = stopping_;
  }
  if (stopping) {
    spdlog::info("transport: disconnected reason=shutdown sent={} acked_seq={}", sent,
                 spool_->acked_seq());
  } else {
    spdlog::warn("transport: disconnected reason={} message=\"{}\" sent={} acked_seq={}",
                 CodeName(status.error_code()), Printable(status.error_message()), sent,
                 spool_->acked_seq());
  }
}

}  // namespace tripline::agent
