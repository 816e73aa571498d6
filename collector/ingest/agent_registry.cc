#include "collector/ingest/agent_registry.h"

#include "platform/runtime/status_macros.h"

namespace tripline::collector {

absl::Status AgentRegistry::Load(CollectorStore* store) {
  ASSIGN_OR_RETURN(std::vector<AgentRecord> agents, store->ListAgents());
  std::lock_guard<std::mutex> lock(mu_);
  chains_.clear();
  for (const AgentRecord& a : agents) {
    Chain c;
    c.public_key = a.public_key;
    c.durable_seq = c.accepted_seq = a.durable_seq;
    c.durable_digest = c.accepted_digest = a.durable_digest;
    chains_.emplace(a.agent_id, std::move(c));
  }
  return absl::OkStatus();
}

std::optional<std::string> AgentRegistry::PublicKey(const std::string& agent_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = chains_.find(agent_id);
  if (it == chains_.end()) return std::nullopt;
  return it->second.public_key;
}

uint64_t AgentRegistry::DurableSeq(const std::string& agent_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = chains_.find(agent_id);
  return it == chains_.end() ? 0 : it->second.durable_seq;
}

void AgentRegistry::Enrolled(const std::string& agent_id, const std::string& public_key,
                             uint64_t durable_seq, const std::string& durable_digest) {
  std::lock_guard<std::mutex> lock(mu_);
  if (chains_.count(agent_id) != 0) return;
  Chain c;
  c.public_key = public_key;
  c.durable_seq = c.accepted_seq = durable_seq;
  c.durable_digest = c.accepted_digest = durable_digest;
  chains_.emplace(agent_id, std::move(c));
}

void AgentRegistry::Rekeyed(const std::string& agent_id, const std::string& public_key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = chains_.find(agent_id);
  if (it != chains_.end()) it->second.public_key = public_key;
}

AgentRegistry::Decision AgentRegistry::Accept(const std::string& agent_id, uint64_t batch_seq,
                                              const std::string& prev_digest,
                                              const std::string& batch_digest) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = chains_.find(agent_id);
  if (it == chains_.end()) return {Verdict::kUnknown, 0};
  Chain& c = it->second;
  const uint64_t expected = c.accepted_seq + 1;
  if (batch_seq < expected) return {Verdict::kDuplicate, expected};
  if (batch_seq > expected) return {Verdict::kGap, expected};
  if (prev_digest != c.accepted_digest) return {Verdict::kFork, expected};
  c.accepted_seq = batch_seq;
  c.accepted_digest = batch_digest;
  return {Verdict::kAccept, expected};
}

void AgentRegistry::Committed(const std::string& agent_id, uint64_t seq,
                              const std::string& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = chains_.find(agent_id);
  if (it == chains_.end() || seq <= it->second.durable_seq) return;
  it->second.durable_seq = seq;
  it->second.durable_digest = digest;
}

void AgentRegistry::RollBack(const std::string& agent_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = chains_.find(agent_id);
  if (it == chains_.end()) return;
  it->second.accepted_seq = it->second.durable_seq;
  it->second.accepted_digest = it->second.durable_digest;
}

}  // namespace tripline::collector
