#include "agent/fim/baseline_store.h"

#include "absl/strings/str_format.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::agent {
namespace {

const std::vector<std::string>& Migrations() {
  static const std::vector<std::string> kMigrations = {
      "CREATE TABLE fim_roots(path BLOB PRIMARY KEY, fingerprint BLOB NOT NULL,"
      " scanned_unix_ns INTEGER NOT NULL) WITHOUT ROWID;"
      "CREATE TABLE fim_files(path BLOB PRIMARY KEY, state BLOB NOT NULL) WITHOUT ROWID;",
      // Rows of version 1 have no inode until the daemon's next start-up scan replaces them.
      "ALTER TABLE fim_files ADD COLUMN device INTEGER;"
      "ALTER TABLE fim_files ADD COLUMN inode INTEGER;"
      "CREATE INDEX fim_files_inode ON fim_files(inode);",
      // Changes the baseline holds whose events may not have reached a durable batch yet
      // (fim_delivery.h), and roots left to rescan because the spool had no room.
      "CREATE TABLE fim_pending(id INTEGER PRIMARY KEY AUTOINCREMENT, event BLOB NOT NULL);"
      "CREATE TABLE fim_dirty(path BLOB PRIMARY KEY) WITHOUT ROWID;",
  };
  return kMigrations;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BaselineStore>> BaselineStore::Open(const std::string& path) {
  // Not durable per commit: losing the last commits in a power cut only means their changes are
  // reported again after the restart, never that a change goes unreported.
  ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(path, /*durable=*/false));
  return Setup(std::move(db));
}

absl::StatusOr<std::unique_ptr<BaselineStore>> BaselineStore::OpenInMemory() {
  ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(":memory:", /*durable=*/false));
  return Setup(std::move(db));
}

absl::StatusOr<std::unique_ptr<BaselineStore>> BaselineStore::Setup(
    std::unique_ptr<Database> db) {
  RETURN_IF_ERROR(db->Migrate(Migrations()));
  RETURN_IF_ERROR(db->Exec(absl::StrFormat("PRAGMA cache_size=-%d", kCacheKiB)));
  return std::unique_ptr<BaselineStore>(new BaselineStore(std::move(db)));
}

absl::StatusOr<std::vector<std::pair<std::string, tripline::v1::FileState>>> BaselineStore::Rows(
    Statement st) {
  std::vector<std::pair<std::string, tripline::v1::FileState>> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    std::string path = st.ColumnText(0);
    tripline::v1::FileState state;
    if (!state.ParseFromString(st.ColumnText(1))) {
      return absl::DataLossError(
          absl::StrFormat("%s: stored state of %s does not parse", db_->path(), Printable(path)));
    }
    out.emplace_back(std::move(path), std::move(state));
  }
  return out;
}

absl::StatusOr<Baseline> BaselineStore::LoadScope(const std::vector<std::string>& scope) {
  Baseline out;
  for (const std::string& s : scope) {
    ASSIGN_OR_RETURN(std::optional<tripline::v1::FileState> at, Get(s));
    if (at.has_value()) out.emplace(s, *std::move(at));
    ASSIGN_OR_RETURN(auto under, ListUnder(s));
    for (auto& [path, state] : under) out.emplace(std::move(path), std::move(state));
  }
  return out;
}

absl::StatusOr<std::optional<tripline::v1::FileState>> BaselineStore::Get(const std::string& path) {
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT state FROM fim_files WHERE path = ?1"));
  st.BindBlob(1, path);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::nullopt;
  tripline::v1::FileState state;
  if (!state.ParseFromString(st.ColumnText(0))) {
    return absl::DataLossError(
        absl::StrFormat("%s: stored state of %s does not parse", db_->path(), Printable(path)));
  }
  return state;
}

absl::StatusOr<std::vector<std::pair<std::string, tripline::v1::FileState>>>
BaselineStore::ListUnder(const std::string& dir) {
  // Paths under `dir` are those from "dir/" up to (not including) "dir0": '0' follows '/'.
  std::string low = dir;
  if (low.empty() || low.back() != '/') low += '/';
  std::string high = low;
  high.back() = '0';
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT path, state FROM fim_files WHERE path >= ?1 "
                                              "AND path < ?2 ORDER BY path"));
  st.BindBlob(1, low).BindBlob(2, high);
  return Rows(std::move(st));
}

absl::StatusOr<std::vector<std::pair<std::string, tripline::v1::FileState>>>
BaselineStore::FindInode(uint64_t device, uint64_t inode) {
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT path, state FROM fim_files WHERE inode = ?1 "
                                              "AND device = ?2 ORDER BY path"));
  st.Bind(1, static_cast<int64_t>(inode)).Bind(2, static_cast<int64_t>(device));
  return Rows(std::move(st));
}

absl::Status BaselineStore::BeginWrite() {
  if (txn_.has_value()) return absl::OkStatus();
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db_.get()));
  txn_.emplace(std::move(txn));
  return absl::OkStatus();
}

absl::Status BaselineStore::Put(const std::string& path, const tripline::v1::FileState& state) {
  RETURN_IF_ERROR(BeginWrite());
  ASSIGN_OR_RETURN(Statement put,
                   db_->Prepare("INSERT OR REPLACE INTO fim_files VALUES (?1, ?2, ?3, ?4)"));
  std::string bytes;
  state.SerializeToString(&bytes);
  put.BindBlob(1, path).BindBlob(2, bytes);
  put.Bind(3, static_cast<int64_t>(state.device())).Bind(4, static_cast<int64_t>(state.inode()));
  return put.Run();
}

absl::Status BaselineStore::Erase(const std::string& path) {
  RETURN_IF_ERROR(BeginWrite());
  ASSIGN_OR_RETURN(Statement del, db_->Prepare("DELETE FROM fim_files WHERE path = ?1"));
  del.BindBlob(1, path);
  return del.Run();
}

absl::Status BaselineStore::Commit() {
  if (!txn_.has_value()) return absl::OkStatus();
  Transaction txn = std::move(*txn_);
  txn_.reset();
  return txn.Commit();
}

absl::StatusOr<std::unordered_map<std::string, std::string>> BaselineStore::LoadRoots() {
  std::unordered_map<std::string, std::string> out;
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT path, fingerprint FROM fim_roots"));
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out[st.ColumnText(0)] = st.ColumnText(1);
  }
  return out;
}

absl::StatusOr<Baseline> BaselineStore::Load() {
  Baseline out;
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT path, state FROM fim_files"));
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    std::string path = st.ColumnText(0);
    tripline::v1::FileState state;
    if (!state.ParseFromString(st.ColumnText(1))) {
      return absl::DataLossError(
          absl::StrFormat("%s: stored state of %s does not parse", db_->path(), Printable(path)));
    }
    out.emplace(std::move(path), std::move(state));
  }
  return out;
}

absl::Status BaselineStore::Replace(const std::vector<FimRoot>& roots,
                                    const std::vector<ScannedFile>& files, int64_t now_unix_ns) {
  // Joins the open write transaction (the pending rows of the changes this replacement
  // reports): both are committed together or not at all.
  RETURN_IF_ERROR(BeginWrite());
  absl::Status st = ReplaceRows(roots, files, now_unix_ns);
  if (!st.ok()) {
    txn_.reset();  // rolls back: the stored baseline stays as it was
    return st;
  }
  return Commit();
}

absl::Status BaselineStore::ReplaceRows(const std::vector<FimRoot>& roots,
                                        const std::vector<ScannedFile>& files,
                                        int64_t now_unix_ns) {
  RETURN_IF_ERROR(
      db_->Exec("DELETE FROM fim_files; DELETE FROM fim_roots; DELETE FROM fim_dirty;"));
  {
    ASSIGN_OR_RETURN(Statement ins,
                     db_->Prepare("INSERT OR REPLACE INTO fim_roots VALUES (?1, ?2, ?3)"));
    for (const FimRoot& r : roots) {
      ins.BindBlob(1, r.path).BindBlob(2, RootFingerprint(r)).Bind(3, now_unix_ns);
      RETURN_IF_ERROR(ins.Run());
    }
  }
  ASSIGN_OR_RETURN(Statement ins,
                   db_->Prepare("INSERT OR REPLACE INTO fim_files VALUES (?1, ?2, ?3, ?4)"));
  std::string bytes;
  for (const ScannedFile& f : files) {
    f.state.SerializeToString(&bytes);
    ins.BindBlob(1, f.path).BindBlob(2, bytes);
    ins.Bind(3, static_cast<int64_t>(f.state.device()))
        .Bind(4, static_cast<int64_t>(f.state.inode()));
    RETURN_IF_ERROR(ins.Run());
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> BaselineStore::AddPending(const tripline::v1::Event& event) {
  RETURN_IF_ERROR(BeginWrite());
  ASSIGN_OR_RETURN(Statement ins, db_->PrepareCached("INSERT INTO fim_pending(event) VALUES (?1)"));
  std::string bytes;
  event.SerializeToString(&bytes);
  ins.BindBlob(1, bytes);
  RETURN_IF_ERROR(ins.Run());
  return static_cast<uint64_t>(db_->LastInsertId());
}

absl::StatusOr<std::vector<std::pair<uint64_t, tripline::v1::Event>>> BaselineStore::PendingAfter(
    uint64_t after, size_t limit) {
  ASSIGN_OR_RETURN(Statement st, db_->PrepareCached("SELECT id, event FROM fim_pending WHERE id > "
                                                    "?1 ORDER BY id LIMIT ?2"));
  st.Bind(1, static_cast<int64_t>(after)).Bind(2, static_cast<int64_t>(limit));
  std::vector<std::pair<uint64_t, tripline::v1::Event>> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    const uint64_t id = static_cast<uint64_t>(st.ColumnInt(0));
    tripline::v1::Event ev;
    if (!ev.ParseFromString(st.ColumnText(1))) {
      return absl::DataLossError(
          absl::StrFormat("%s: pending event id=%d does not parse", db_->path(), id));
    }
    out.emplace_back(id, std::move(ev));
  }
  return out;
}

absl::Status BaselineStore::ErasePendingThrough(uint64_t id) {
  RETURN_IF_ERROR(BeginWrite());
  ASSIGN_OR_RETURN(Statement del, db_->PrepareCached("DELETE FROM fim_pending WHERE id <= ?1"));
  del.Bind(1, static_cast<int64_t>(std::min<uint64_t>(id, INT64_MAX)));
  return del.Run();
}

absl::Status BaselineStore::EnsurePendingIdsAbove(uint64_t id) {
  if (id == 0) return absl::OkStatus();
  RETURN_IF_ERROR(BeginWrite());
  {
    ASSIGN_OR_RETURN(Statement up, db_->Prepare("UPDATE sqlite_sequence SET seq = max(seq, ?1) "
                                                "WHERE name = 'fim_pending'"));
    up.Bind(1, static_cast<int64_t>(id));
    RETURN_IF_ERROR(up.Run());
  }
  if (db_->Changes() == 0) {
    ASSIGN_OR_RETURN(
        Statement ins,
        db_->Prepare("INSERT INTO sqlite_sequence(name, seq) VALUES ('fim_pending', ?1)"));
    ins.Bind(1, static_cast<int64_t>(id));
    RETURN_IF_ERROR(ins.Run());
  }
  return Commit();
}

absl::StatusOr<uint64_t> BaselineStore::MaxPendingId() {
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT COALESCE(MAX(id), 0) FROM fim_pending"));
  ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? static_cast<uint64_t>(st.ColumnInt(0)) : 0;
}

absl::Status BaselineStore::MarkDirty(const std::string& root) {
  RETURN_IF_ERROR(BeginWrite());
  ASSIGN_OR_RETURN(Statement ins, db_->Prepare("INSERT OR IGNORE INTO fim_dirty VALUES (?1)"));
  ins.BindBlob(1, root);
  return ins.Run();
}

absl::Status BaselineStore::ClearDirty(const std::string& root) {
  RETURN_IF_ERROR(BeginWrite());
  ASSIGN_OR_RETURN(Statement del, db_->Prepare("DELETE FROM fim_dirty WHERE path = ?1"));
  del.BindBlob(1, root);
  return del.Run();
}

absl::StatusOr<std::vector<std::string>> BaselineStore::LoadDirty() {
  std::vector<std::string> out;
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT path FROM fim_dirty ORDER BY path"));
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(st.ColumnText(0));
  }
  return out;
}

absl::Status BaselineStore::Apply(
    const std::vector<std::pair<std::string, std::optional<tripline::v1::FileState>>>& changes) {
  if (changes.empty()) return absl::OkStatus();
  for (const auto& [path, state] : changes) {
    RETURN_IF_ERROR(state.has_value() ? Put(path, *state) : Erase(path));
  }
  return Commit();
}

}  // namespace tripline::agent
