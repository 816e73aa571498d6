// Where each enrolled agent's chain stands, in memory, so the Publish path never waits on the
// database: the pinned public key, the durable tip (last committed batch: seq and ChainDigest) and
// the accepted tip (last batch handed to the store writer, committed or not). Accept() advances
// the accepted tip atomically, so two streams of one agent can never both accept the same seq.
// Thread-safe: one mutex over the map, held only for map operations.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "collector/store/collector_store.h"

namespace tripline::collector {

class AgentRegistry {
 public:
  // Loads every agent's key and durable tip from `store`.
  absl::Status Load(CollectorStore* store);

  // The pinned key of `agent_id`, or nullopt when it is not enrolled.
  std::optional<std::string> PublicKey(const std::string& agent_id) const;
  // The durable seq of `agent_id` (0 when unknown).
  uint64_t DurableSeq(const std::string& agent_id) const;

  // After an enrollment commit: the agent with its key and durable tip (a no-op for a known agent
  // with the same key).
  void Enrolled(const std::string& agent_id, const std::string& public_key, uint64_t durable_seq,
                const std::string& durable_digest);

  // After an operator-approved re-enrollment commit: `agent_id` is verified with `public_key` from
  // now on (streams opened before keep the key they started with until they end).
  void Rekeyed(const std::string& agent_id, const std::string& public_key);

  enum class Verdict {
    kAccept,     // batch_seq == accepted + 1 and prev_digest matches: hand it to the writer
    kDuplicate,  // batch_seq <= accepted: already have it
    kGap,        // batch_seq > accepted + 1
    kFork,       // right seq, but prev_digest is not the digest of the batch before
    kUnknown,    // not enrolled
  };
  struct Decision {
    Verdict verdict;
    uint64_t expected_seq = 0;  // accepted + 1
  };
  // Decides on a verified, parsed batch; on kAccept the accepted tip becomes (batch_seq,
  // batch_digest).
  Decision Accept(const std::string& agent_id, uint64_t batch_seq, const std::string& prev_digest,
                  const std::string& batch_digest);

  // After a commit: the durable tip moves to (seq, digest) unless it is already past it.
  void Committed(const std::string& agent_id, uint64_t seq, const std::string& digest);
  // After a failed commit: the accepted tip falls back to the durable one, so the agent's resend
  // is accepted again.
  void RollBack(const std::string& agent_id);

 private:
  struct Chain {
    std::string public_key;
    uint64_t durable_seq = 0;
    std::string durable_digest;
    uint64_t accepted_seq = 0;
    std::string accepted_digest;
  };
  mutable std::mutex mu_;
  std::map<std::string, Chain> chains_;  // guarded by mu_
};

}  // namespace tripline::collector
