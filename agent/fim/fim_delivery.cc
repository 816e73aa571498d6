#include "agent/fim/fim_delivery.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::agent {
namespace {

const std::vector<std::string>& Migrations() {
  static const std::vector<std::string> kMigrations = {
      "CREATE TABLE fim_sealed(batch_seq INTEGER PRIMARY KEY, last_id INTEGER NOT NULL);"
      "CREATE TABLE fim_delivered(k INTEGER PRIMARY KEY CHECK (k = 0), through INTEGER NOT NULL);"
      "INSERT INTO fim_delivered VALUES (0, 0);",
  };
  return kMigrations;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FimDelivery>> FimDelivery::Open(const std::string& path) {
  // Not synchronous per commit, like the baseline file: see the header for a power loss.
  ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(path, /*durable=*/false));
  RETURN_IF_ERROR(db->Migrate(Migrations()));
  std::unique_ptr<FimDelivery> out(new FimDelivery(std::move(db)));
  absl::MutexLock lock(&out->mu_);
  RETURN_IF_ERROR(out->Load());
  return out;
}

absl::Status FimDelivery::Load() {
  {
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT through FROM fim_delivered WHERE k = 0"));
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return absl::DataLossError(absl::StrFormat("%s: no delivered row", db_->path()));
    delivered_ = static_cast<uint64_t>(st.ColumnInt(0));
  }
  max_known_ = delivered_;
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("SELECT batch_seq, last_id FROM fim_sealed ORDER BY batch_seq"));
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    const uint64_t seq = static_cast<uint64_t>(st.ColumnInt(0));
    const uint64_t last = static_cast<uint64_t>(st.ColumnInt(1));
    sealed_.emplace_back(seq, last);
    max_known_ = std::max(max_known_, last);
  }
  return absl::OkStatus();
}

absl::Status FimDelivery::StoreDelivered(uint64_t through, uint64_t prune_through_seq) {
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db_.get()));
  {
    ASSIGN_OR_RETURN(Statement st,
                     db_->Prepare("UPDATE fim_delivered SET through = ?1 WHERE k = 0"));
    st.Bind(1, static_cast<int64_t>(through));
    RETURN_IF_ERROR(st.Run());
  }
  ASSIGN_OR_RETURN(Statement del, db_->Prepare("DELETE FROM fim_sealed WHERE batch_seq <= ?1"));
  del.Bind(1, static_cast<int64_t>(std::min<uint64_t>(prune_through_seq, INT64_MAX)));
  RETURN_IF_ERROR(del.Run());
  return txn.Commit();
}

absl::Status FimDelivery::Recover(uint64_t landed_seq) {
  absl::MutexLock lock(&mu_);
  if (recovered_) return absl::OkStatus();
  uint64_t through = delivered_;
  for (const auto& [seq, last] : sealed_) {
    if (seq <= landed_seq) through = std::max(through, last);
  }
  // Batches after landed_seq never landed and their seqs will be reused: forget them all.
  RETURN_IF_ERROR(StoreDelivered(through, UINT64_MAX));
  spdlog::info("fim: delivery recovered landed_seq={} delivered_through={} forgotten_batches={}",
               landed_seq, through,
               std::count_if(sealed_.begin(), sealed_.end(),
                             [&](const auto& s) { return s.first > landed_seq; }));
  sealed_.clear();
  delivered_ = through;
  durable_seq_ = std::max(durable_seq_, landed_seq);
  recovered_ = true;
  return absl::OkStatus();
}

bool FimDelivery::recovered() const {
  absl::MutexLock lock(&mu_);
  return recovered_;
}

void FimDelivery::Offering(uint64_t id, int64_t time_unix_ns) {
  absl::MutexLock lock(&mu_);
  offered_.emplace_back(id, time_unix_ns);
  max_known_ = std::max(max_known_, id);
}

void FimDelivery::Withdraw(uint64_t id) {
  absl::MutexLock lock(&mu_);
  if (!offered_.empty() && offered_.back().first == id) offered_.pop_back();
}

absl::Status FimDelivery::RecordSealed(uint64_t seq, const tripline::v1::EventBatch& batch) {
  absl::MutexLock lock(&mu_);
  uint64_t last = 0;
  for (const tripline::v1::Event& e : batch.events()) {
    if (!e.has_file()) continue;
    // FIM is the only producer of FileEvents, and offers them in order: the next one offered is
    // this one. The event time tells if that ever stops holding (it then names no id, and the
    // change may be reported again after a crash, never lost).
    while (!offered_.empty() && offered_.front().second != e.time_unix_ns()) {
      // Its event never reached a batch: from here on this run names no id past it, so it and
      // the ones after it are offered again after a restart (reported twice, never lost).
      spdlog::error(
          "fim: batch_seq={} does not hold pending change id={}, offered next; changes "
          "from it on may be reported again after a restart",
          seq, offered_.front().first);
      cap_ = std::min(cap_, offered_.front().first - 1);
      offered_.pop_front();
    }
    if (offered_.empty()) continue;
    last = offered_.front().first;
    offered_.pop_front();
  }
  last = std::min(last, cap_);
  if (last == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT OR REPLACE INTO fim_sealed VALUES (?1, ?2)"));
  st.Bind(1, static_cast<int64_t>(seq)).Bind(2, static_cast<int64_t>(last));
  RETURN_IF_ERROR(st.Run());
  sealed_.emplace_back(seq, last);
  return absl::OkStatus();
}

absl::Status FimDelivery::Durable(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  if (seq <= durable_seq_) return absl::OkStatus();
  durable_seq_ = seq;
  uint64_t through = 0;
  size_t n = 0;
  while (n < sealed_.size() && sealed_[n].first <= seq) through = sealed_[n++].second;
  if (n == 0) return absl::OkStatus();
  through = std::max(through, delivered_);
  RETURN_IF_ERROR(StoreDelivered(through, seq));
  sealed_.erase(sealed_.begin(), sealed_.begin() + static_cast<ptrdiff_t>(n));
  delivered_ = through;
  return absl::OkStatus();
}

uint64_t FimDelivery::delivered_through() const {
  absl::MutexLock lock(&mu_);
  return delivered_;
}

uint64_t FimDelivery::max_known_id() const {
  absl::MutexLock lock(&mu_);
  return max_known_;
}

}  // namespace tripline::agent
