#include "collector/ingest/store_writer.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "collector/incidents/incident_recorder.h"
#include "google/protobuf/descriptor.h"
#include "platform/crypto/batch_signature.h"
#include "platform/crypto/digest.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {
namespace {

using tripline::v1::Event;
using tripline::v1::FileEvent;

const char* EventKind(const Event& e) {
  switch (e.body_case()) {
    case Event::kFile: return "file";
    case Event::kLog: return "log";
    case Event::kAgent: return "agent";
    default: return "unknown";
  }
}

// The change's enum name in lower case ("modified"); computed once per value, not per event.
const std::string& ChangeName(const Event& e) {
  static const std::string kNone;
  static const auto* const kNames = [] {
    auto* names = new std::vector<std::string>();
    const google::protobuf::EnumDescriptor* d = FileEvent::Change_descriptor();
    for (int i = 0; i < d->value_count(); ++i) {
      const int n = d->value(i)->number();
      if (n < 0 || n > 255) continue;
      if (static_cast<size_t>(n) >= names->size()) names->resize(static_cast<size_t>(n) + 1);
      (*names)[static_cast<size_t>(n)] = absl::AsciiStrToLower(d->value(i)->name());
    }
    return names;
  }();
  if (!e.has_file()) return kNone;
  const int n = static_cast<int>(e.file().change());
  if (n < 0 || static_cast<size_t>(n) >= kNames->size()) return kNone;
  return (*kNames)[static_cast<size_t>(n)];
}

const std::string& EventPath(const Event& e) {
  static const std::string kNone;
  return e.has_file() ? e.file().path() : e.has_log() ? e.log().path() : kNone;
}

}  // namespace

StoreWriter::StoreWriter(CollectorStore* store, AgentRegistry* registry,
                         std::shared_ptr<const RuleSet> rules, Options options, const Clock& clock,
                         std::function<void()> on_actions_queued)
    : store_(store),
      registry_(registry),
      options_(options),
      clock_(clock),
      on_actions_queued_(std::move(on_actions_queued)),
      rules_(std::move(rules)) {}

StoreWriter::~StoreWriter() { Stop(); }

void StoreWriter::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Run(); });
}

bool StoreWriter::Submit(WriteItem& item) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || capped_ >= options_.max_queue) return false;
    ++capped_;
    queued_bytes_.fetch_add(item.batch_bytes.size(), std::memory_order_relaxed);
    queue_.push_back(std::move(item));
  }
  cv_.notify_one();
  return true;
}

void StoreWriter::SubmitUrgent(WriteItem item) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      queue_.push_back(std::move(item));
      cv_.notify_one();
      return;
    }
  }
  if (item.done) {
    WriteResult r;
    r.status = absl::UnavailableError("the collector is shutting down");
    item.done(r);
  }
}

void StoreWriter::SetRules(std::shared_ptr<const RuleSet> rules) {
  std::lock_guard<std::mutex> lock(mu_);
  rules_ = std::move(rules);
}

std::shared_ptr<const RuleSet> StoreWriter::rules() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rules_;
}

void StoreWriter::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void StoreWriter::Run() {
  for (;;) {
    std::deque<WriteItem> group;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything is answered
      while (!queue_.empty() && group.size() < options_.max_group) {
        WriteItem& front = queue_.front();
        if (front.kind == WriteItem::Kind::kBatch || front.kind == WriteItem::Kind::kDuplicate) {
          --capped_;
        }
        group.push_back(std::move(front));
        queue_.pop_front();
      }
    }
    size_t bytes = 0;
    for (const WriteItem& item : group) bytes += item.batch_bytes.size();
    CommitGroup(group);
    group.clear();  // the parsed batches go before the budget says they have
    queued_bytes_.fetch_sub(bytes, std::memory_order_relaxed);
  }
}

void StoreWriter::CommitGroup(std::deque<WriteItem>& group) {
  std::shared_ptr<const RuleSet> rules = this->rules();
  std::vector<WriteResult> results(group.size());
  bool actions_queued = false;
  absl::Status st;
  {
    absl::StatusOr<CollectorStore::Writer> w = store_->BeginWrite();
    st = w.status();
    for (size_t i = 0; st.ok() && i < group.size(); ++i) {
      st = Apply(*w, group[i], *rules, &results[i], &actions_queued);
    }
    if (st.ok()) st = w->Commit();
  }
  if (!st.ok()) {
    spdlog::error("store: commit of {} item(s) failed: {}", group.size(), st.ToString());
    thresholds_.Clear();  // its incident ids and windows may name what was rolled back
    absl::Status failed = absl::UnavailableError(
        absl::StrFormat("the collector could not store the batch (%s); retry", st.message()));
    for (size_t i = 0; i < group.size(); ++i) {
      if (group[i].kind == WriteItem::Kind::kBatch) registry_->RollBack(group[i].agent_id);
    }
    for (size_t i = 0; i < group.size(); ++i) {
      results[i] = WriteResult{failed, registry_->DurableSeq(group[i].agent_id), ""};
      if (group[i].done) group[i].done(results[i]);
    }
    return;
  }
  // Durable now: move the in-memory tips, then answer in queue order.
  for (size_t i = 0; i < group.size(); ++i) {
    const WriteItem& item = group[i];
    if (item.kind == WriteItem::Kind::kBatch && results[i].status.ok()) {
      registry_->Committed(item.agent_id, item.batch->batch_seq(), item.batch_digest);
    } else if (item.kind == WriteItem::Kind::kEnroll && results[i].status.ok()) {
      registry_->Enrolled(item.agent_id, item.public_key, results[i].durable_seq,
                          results[i].durable_digest);
      if (item.rekeyed) registry_->Rekeyed(item.agent_id, item.public_key);
    }
  }
  for (size_t i = 0; i < group.size(); ++i) {
    if (group[i].kind != WriteItem::Kind::kEnroll) {
      results[i].durable_seq = registry_->DurableSeq(group[i].agent_id);
    }
    if (group[i].done) group[i].done(results[i]);
  }
  if (actions_queued && on_actions_queued_) on_actions_queued_();
}

absl::Status StoreWriter::Apply(CollectorStore::Writer& w, WriteItem& item, const RuleSet& rules,
                                WriteResult* result, bool* actions_queued) {
  const int64_t now = clock_.NowUnixNanos();
  switch (item.kind) {
    case WriteItem::Kind::kEnroll: {
      ASSIGN_OR_RETURN(std::optional<AgentRecord> known, w.GetAgent(item.agent_id));
      if (known) {
        if (known->public_key != item.public_key) {
          ASSIGN_OR_RETURN(std::optional<ActionRecord> reenroll,
                           w.PendingAction(kReenrollActionKind, item.agent_id));
          const std::string keys =
              absl::StrFormat("pinned key %s, offered key %s", ToHex(known->public_key),
                              ToHex(item.public_key));
          if (!reenroll) {
            result->status = absl::FailedPreconditionError(absl::StrFormat(
                "agent %s is enrolled with another key; an operator must allow it with "
                "`triplinectl agents reenroll %s`",
                item.agent_id, item.agent_id));
            ASSIGN_OR_RETURN(
                RecordOutcome outcome,
                RecordIntegrityFailure(
                    w, item.agent_id,
                    absl::StrFormat("enrollment with a new key refused (%s, hostname %s)", keys,
                                    Printable(item.hostname, 64)),
                    now));
            spdlog::warn(
                "ingest: enrollment refused agent={}: another key is pinned; incident={}",
                Printable(item.agent_id), outcome.incident_id);
            return absl::OkStatus();
          }
          RETURN_IF_ERROR(w.SetAgentKey(item.agent_id, item.public_key, item.hostname,
                                        item.version, now));
          reenroll->status = "done";
          reenroll->updated_ns = now;
          reenroll->result = absl::StrFormat("%s; the chain goes on from batch %d", keys,
                                             known->durable_seq);
          RETURN_IF_ERROR(w.UpdateAction(*reenroll));
          item.rekeyed = true;
          spdlog::warn("ingest: re-enrolled agent={} with a new key (allowed by {}, action {})",
                       Printable(item.agent_id), reenroll->actor, reenroll->id);
          result->durable_seq = known->durable_seq;
          result->durable_digest = known->durable_digest;
          return absl::OkStatus();
        }
        RETURN_IF_ERROR(w.UpdateAgentMeta(item.agent_id, item.hostname, item.version));
        result->durable_seq = known->durable_seq;
        result->durable_digest = known->durable_digest;
        return absl::OkStatus();
      }
      AgentRecord a;
      a.agent_id = item.agent_id;
      a.public_key = item.public_key;
      a.hostname = item.hostname;
      a.version = item.version;
      a.enrolled_ns = now;
      a.durable_seq = 0;
      a.durable_digest = GenesisDigest();
      RETURN_IF_ERROR(w.InsertAgent(a));
      spdlog::info("ingest: enrolled agent={} hostname={}", Printable(item.agent_id),
                   Printable(item.hostname));
      result->durable_seq = 0;
      result->durable_digest = a.durable_digest;
      return absl::OkStatus();
    }
    case WriteItem::Kind::kBatch: {
      const tripline::v1::EventBatch& batch = *item.batch;
      RETURN_IF_ERROR(w.InsertBatch(item.agent_id, batch.batch_seq(), item.batch_bytes,
                                    item.signature, now));
      if (item.event_spans.size() != static_cast<size_t>(batch.events_size())) {
        return absl::InternalError(absl::StrFormat(
            "batch %d of agent %s: %d event spans for %d events", batch.batch_seq(),
            Printable(item.agent_id), item.event_spans.size(), batch.events_size()));
      }
      for (int i = 0; i < batch.events_size(); ++i) {
        const Event& e = batch.events(i);
        if (e.has_agent() && e.agent().kind() == tripline::v1::AgentEvent::HEARTBEAT) {
          // Kept in the signed batch, not as an event row: 1,440 rows a day per agent would
          // bury the events people look for. The agent's row shows the latest.
          RETURN_IF_ERROR(w.RecordHeartbeat(item.agent_id, e.time_unix_ns(),
                                            e.agent().spool_batches(), e.agent().spool_bytes()));
          continue;
        }
        const auto [offset, length] = item.event_spans[static_cast<size_t>(i)];
        const std::string_view bytes(item.batch_bytes.data() + offset, length);
        ASSIGN_OR_RETURN(int64_t event_id,
                         w.InsertEvent(item.agent_id, batch.batch_seq(), e.seq(),
                                       e.time_unix_ns(), EventKind(e), EventPath(e),
                                       ChangeName(e), bytes, now));
        for (const Rule* rule : rules.Match(e)) {
          ASSIGN_OR_RETURN(RecordOutcome outcome,
                           RecordRuleMatch(w, *rule, item.agent_id, event_id, e,
                                           options_.auto_respond, now));
          if (outcome.opened) {
            spdlog::warn("incident: opened id={} rule={} agent={} severity={}: {}",
                         outcome.incident_id, rule->id, Printable(item.agent_id), rule->severity,
                         DescribeEvent(e));
          }
          *actions_queued = *actions_queued || outcome.isolation_queued;
        }
        for (auto& [rule, fields] : rules.MatchLog(e)) {
          const int64_t t = e.time_unix_ns() > 0 ? e.time_unix_ns() : now;
          LogRuleOutcome o = thresholds_.Observe(*rule, item.agent_id, event_id, t, fields);
          if (o.kind == LogRuleOutcome::Kind::kNothing) continue;
          ASSIGN_OR_RETURN(RecordOutcome outcome,
                           RecordLogRuleOutcome(w, *rule, item.agent_id, o, event_id, e, fields,
                                                options_.auto_respond, now));
          if (outcome.opened) {
            thresholds_.Opened(*rule, item.agent_id, o.group, outcome.incident_id, t);
            spdlog::warn("incident: opened id={} rule={} agent={} severity={}: {} {}",
                         outcome.incident_id, rule->id, Printable(item.agent_id), rule->severity,
                         DescribeEvent(e), o.group);
          }
          *actions_queued = *actions_queued || outcome.isolation_queued;
        }
      }
      RETURN_IF_ERROR(
          w.AdvanceAgentChain(item.agent_id, batch.batch_seq(), item.batch_digest, now));
      return absl::OkStatus();
    }
    case WriteItem::Kind::kDuplicate: {
      // A resend carries the same bytes; other bytes under a seq already stored are a fork of
      // history (a replay of altered batches, or an agent that lost its spool and re-sealed).
      if (item.batch_digest.empty() || item.batch == nullptr) return absl::OkStatus();
      const uint64_t seq = item.batch->batch_seq();
      ASSIGN_OR_RETURN(std::optional<std::string> stored, w.GetBatchBytes(item.agent_id, seq));
      if (!stored || ChainDigest(*stored) == item.batch_digest) return absl::OkStatus();
      const std::string reason = absl::StrFormat(
          "chain fork: batch %d arrived again with other contents than the batch %d already "
          "stored",
          seq, seq);
      ASSIGN_OR_RETURN(RecordOutcome outcome,
                       RecordIntegrityFailure(w, item.agent_id, reason, now));
      spdlog::error("incident: integrity id={} agent={}: {}", outcome.incident_id,
                    Printable(item.agent_id), reason);
      result->status = absl::DataLossError(reason);
      return absl::OkStatus();
    }
    case WriteItem::Kind::kIntegrity: {
      ASSIGN_OR_RETURN(RecordOutcome outcome,
                       RecordIntegrityFailure(w, item.agent_id, item.reason, now));
      spdlog::error("incident: integrity id={} agent={}: {}", outcome.incident_id,
                    Printable(item.agent_id), item.reason);
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

}  // namespace tripline::collector
