// The agent's link to the collector: Enroll, then one Publish bidi stream that carries the
// Spool's batches in order (only those already fdatasync'd) and brings back PublishAcks.
//
// Per connection: a fresh channel; Enroll (learns durable_seq: acked batches are dropped and the
// stream resumes at the first unacked seq); the stream with metadata "tripline-agent-id"; at most
// `window` unacked batches in flight. Any failure ends the connection and a new one follows after
// a jittered exponential backoff (backoff_initial doubling up to backoff_max; reset when an ack
// arrives). Enrollment refusals (PERMISSION_DENIED, FAILED_PRECONDITION, UNAUTHENTICATED: bad
// token, key conflict) are logged at error level with the collector's message and retried every
// backoff_max: an operator may fix them, so the agent never exits over them.
//
// Threads: Start() runs the sender thread (enrolls, opens streams, writes batches); each stream
// also has a reader thread (acks -> Spool::AckThrough) that lives no longer than the stream.
// Stop() cancels whatever call is in progress and joins both. The Spool is the only state shared
// with the batcher.
//
// Before the first connection the spool's acked seq may lag the collector (acks after the last
// cursor write): Enroll's durable_seq is acked into the spool first, then handed to
// on_first_enrollment, so a chain that starts from the collector's head continues it.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/spool/spool.h"
#include "agent/identity/agent_identity.h"
#include "grpcpp/grpcpp.h"
#include "platform/net/grpc_credentials.h"

namespace tripline::agent {

struct PublisherOptions {
  std::string address;  // host:port
  ClientTlsOptions tls;
  uint64_t window = 64;
  absl::Duration backoff_initial = absl::Milliseconds(200);
  absl::Duration backoff_max = absl::Seconds(30);
  absl::Duration enroll_timeout = absl::Seconds(10);
};

class Publisher {
 public:
  // Called once, on the sender thread, after the first successful Enroll: where the chain goes on.
  using FirstEnrollmentFn = std::function<void(const ChainHead&)>;

  // `identity` and `spool` outlive the publisher.
  Publisher(const AgentIdentity& identity, Spool* spool, PublisherOptions options,
            FirstEnrollmentFn on_first_enrollment);
  ~Publisher();  // Stop()
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Builds the channel credentials (fails naming an unreadable CA/cert/key file) and starts the
  // sender thread. The collector need not be up: connecting is retried forever.
  absl::Status Start();

  // True once every batch pushed so far has been acked; false at `deadline`.
  bool WaitForAcks(absl::Time deadline);

  // Cancels the call in progress, joins the threads. Idempotent.
  void Stop();

  // Completed enrollments and opened streams so far (for tests and status).
  uint64_t enrollments() const;
  uint64_t connections() const;

 private:
  void Run();
  // Enroll then one stream; returns when the stream ends. Sets *got_ack when any ack arrived.
  void Connect(bool* got_ack, absl::Duration* next_delay);
  void Stream(tripline::v1::Ingest::StubInterface& stub, bool* got_ack);
  absl::Duration Backoff(int failures);
  // Waits `delay` or until Stop(); false when stopping.
  bool SleepUnlessStopping(absl::Duration delay);
  // Registers the context of the call in progress so Stop() can cancel it; false when stopping.
  bool SetCall(grpc::ClientContext* context);

  // Constant after construction (credentials set by Start() before the thread runs).
  const AgentIdentity& identity_;
  Spool* const spool_;
  const PublisherOptions options_;
  const FirstEnrollmentFn on_first_enrollment_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;

  // Owned by the sender thread.
  std::mt19937_64 rng_;
  bool enrolled_once_ = false;
  std::thread thread_;

  mutable absl::Mutex mu_;
  absl::CondVar stop_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* call_ ABSL_GUARDED_BY(mu_) = nullptr;  // the call in progress, not owned
  uint64_t enrollments_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t connections_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tripline::agent
