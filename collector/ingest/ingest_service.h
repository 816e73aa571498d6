// The agent-facing gRPC service (tripline.v1.Ingest) on the callback API: no thread per stream.
//
// Enroll: the enrollment token is compared in constant time (keyed BLAKE2b hashes); the agent id
// and key are checked; with an InstanceIdentityVerifier the EC2 instance identity document and its
// PKCS#7 signature must verify and name the agent id (a refusal is an integrity incident); the
// store writer pins the key of a new agent, confirms a known one, or lets a new key in once when
// an operator ran `triplinectl agents reenroll` (else refused and recorded as an incident).
//
// Publish: one PublishReactor per stream, named by metadata "tripline-agent-id". Per SignedBatch:
// size cap -> signature against the pinned key (before parsing) -> parse -> agent_id equals the
// stream's -> chain: a duplicate (seq already accepted) is acked with the durable seq once what is
// queued before it has committed, after the writer has checked its bytes against the stored batch; the next seq with the right prev_digest goes to the store
// writer, and its ack follows the commit; anything else is recorded as an integrity incident and
// ends the stream. Status codes:
//   UNAUTHENTICATED      stream without an enrolled agent id; batch signature does not verify
//   INVALID_ARGUMENT     a message that is not a SignedBatch; batch bytes are not an EventBatch;
//                        batch_seq 0; signature of wrong size
//   PERMISSION_DENIED    batch names another agent than the stream; wrong enrollment token;
//                        instance identity document missing, forged or naming another instance
//   DATA_LOSS            chain break: a gap in batch_seq, prev_digest not the previous batch's,
//                        or a seq already stored arriving with other bytes (a fork)
//   RESOURCE_EXHAUSTED   batch over 4 MiB (an integrity incident too); the collector's write
//                        queue is full (retry later); a message over the receive cap (gRPC's)
//   UNAVAILABLE          the store failed to commit (retry); the collector is shutting down
//   FAILED_PRECONDITION  Enroll of a known agent id with another key
// At most `max_in_flight` unacked batches per stream: reading pauses until acks catch up.
//
// Threads: reactions run on gRPC's callback threads and never block (the store writer's queue
// is non-blocking); the writer thread calls back into reactors after commits. A reactor lives
// until both gRPC is done with it (OnDone) and the writer has answered all its items.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "collector/ingest/agent_registry.h"
#include "collector/ingest/instance_identity.h"
#include "collector/ingest/store_writer.h"
#include "platform/runtime/clock.h"
#include "tripline/v1/ingest.grpc.pb.h"

namespace tripline::collector {

inline constexpr size_t kMaxBatchBytes = 4 << 20;
// The server's max receive size: a 4 MiB batch, its signature and framing.
inline constexpr int kMaxReceiveBytes = (4 << 20) + (64 << 10);

// Agent ids: 1..128 of [A-Za-z0-9._-].
bool ValidAgentId(const std::string& agent_id);

// Publish is a raw method (ByteBuffer in and out): the reactor parses each message itself, so a
// message that is not a SignedBatch is refused and recorded like any other forgery.
class IngestService final
    : public tripline::v1::Ingest::WithCallbackMethod_Enroll<
          tripline::v1::Ingest::WithRawCallbackMethod_Publish<tripline::v1::Ingest::Service>> {
 public:
  struct Options {
    std::string enrollment_token;  // never logged
    size_t max_in_flight = 128;
    // Null: enrollment does not require an instance identity document (identity.require_document
    // false, for hosts off EC2); a document sent anyway is ignored.
    std::shared_ptr<const InstanceIdentityVerifier> identity;
  };
  // `registry` and `writer` outlive the service (and the server it is registered with).
  IngestService(AgentRegistry* registry, StoreWriter* writer, Options options);

  grpc::ServerUnaryReactor* Enroll(grpc::CallbackServerContext* context,
                                   const tripline::v1::EnrollRequest* request,
                                   tripline::v1::EnrollResponse* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Publish(
      grpc::CallbackServerContext* context) override;

  AgentRegistry* registry() const { return registry_; }
  StoreWriter* writer() const { return writer_; }
  size_t max_in_flight() const { return max_in_flight_; }

 private:
  AgentRegistry* const registry_;
  StoreWriter* const writer_;
  const size_t max_in_flight_;
  const std::shared_ptr<const InstanceIdentityVerifier> identity_;
  const std::string token_key_;   // random, per process
  const std::string token_hash_;  // keyed BLAKE2b of the enrollment token
};

}  // namespace tripline::collector
