// Who the agent is to the collector: its id, its Ed25519 key (state_dir/agent.key, 0600, created
// atomically on first start), the enrollment token it presents, and the Enroll call that tells it
// where its batch chain stands at the collector.
//
// The token and the secret key are never logged and never put in a Status message.
// Threads: an AgentIdentity is immutable after LoadAgentIdentity and may be shared read-only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "platform/crypto/signing_key.h"
#include "tripline/v1/ingest.grpc.pb.h"

namespace tripline::agent {

// The program version reported in Enroll and in AgentEvents.
const std::string& AgentVersion();

struct AgentIdentity {
  std::string agent_id;
  std::unique_ptr<SigningKey> key;  // never null
  std::string enrollment_token;     // secret
  std::string hostname;
  // On EC2 (agent_id from IMDS): the instance identity document and its signature, sent with
  // every Enroll (agent/identity/instance_metadata.h). Empty off EC2.
  std::string identity_document;
  std::string identity_signature;
};

// Creates `state_dir` (0700) if missing, loads or creates state_dir/agent.key, reads the token
// file (trailing whitespace trimmed; an empty token is an error). Errors name the file and reason,
// never the token.
absl::StatusOr<AgentIdentity> LoadAgentIdentity(const std::string& agent_id,
                                                const std::string& state_dir,
                                                const std::string& enrollment_token_file);

// Where the agent's chain continues: the next batch is durable_seq + 1 with prev_digest =
// durable_digest. A fresh enrollment is {0, 32 zero bytes}.
struct ChainHead {
  uint64_t durable_seq = 0;
  std::string durable_digest;
};

// One Enroll call with `timeout`. On failure the Status carries the gRPC code (UNAVAILABLE,
// PERMISSION_DENIED, FAILED_PRECONDITION, ... as the same absl code) and the collector's message.
// `context` lets another thread cancel the call (TryCancel); it must be fresh.
absl::StatusOr<ChainHead> Enroll(tripline::v1::Ingest::StubInterface& stub,
                                 const AgentIdentity& identity, grpc::ClientContext* context,
                                 absl::Duration timeout);

}  // namespace tripline::agent
