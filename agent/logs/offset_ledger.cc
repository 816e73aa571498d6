#include "agent/logs/offset_ledger.h"

#include <map>
#include <tuple>

#include "platform/runtime/status_macros.h"

namespace tripline::agent {
namespace {

const std::vector<std::string> kMigrations = {R"sql(
CREATE TABLE files (
  source      TEXT NOT NULL,
  device      INTEGER NOT NULL,
  inode       INTEGER NOT NULL,
  generation  INTEGER NOT NULL,
  path        BLOB NOT NULL,
  fingerprint BLOB NOT NULL,
  fingerprint_len INTEGER NOT NULL,
  offset      INTEGER NOT NULL,
  state       INTEGER NOT NULL DEFAULT 0,
  detached_at INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (source, device, inode, generation)
) WITHOUT ROWID;
CREATE TABLE pending (
  batch_seq   INTEGER NOT NULL,
  source      TEXT NOT NULL,
  device      INTEGER NOT NULL,
  inode       INTEGER NOT NULL,
  generation  INTEGER NOT NULL,
  next_offset INTEGER NOT NULL,
  PRIMARY KEY (batch_seq, source, device, inode, generation)
) WITHOUT ROWID;
CREATE TABLE sources (name TEXT PRIMARY KEY) WITHOUT ROWID;
)sql",
                                              R"sql(
CREATE TABLE journal_cursors (source TEXT PRIMARY KEY, cursor TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE journal_pending (
  batch_seq INTEGER NOT NULL,
  source    TEXT NOT NULL,
  cursor    TEXT NOT NULL,
  PRIMARY KEY (batch_seq, source)
) WITHOUT ROWID;
)sql",
                                              R"sql(
CREATE TABLE family (
  source      TEXT NOT NULL,
  device      INTEGER NOT NULL,
  inode       INTEGER NOT NULL,
  fingerprint BLOB NOT NULL,
  fingerprint_len INTEGER NOT NULL,
  PRIMARY KEY (source, device, inode)
) WITHOUT ROWID;
CREATE TABLE family_sources (name TEXT PRIMARY KEY) WITHOUT ROWID;
)sql"};

int64_t I(uint64_t v) { return static_cast<int64_t>(v); }

}  // namespace

absl::StatusOr<std::unique_ptr<OffsetLedger>> OffsetLedger::Open(const std::string& path) {
  // synchronous=NORMAL: a commit is in the WAL when it returns, so it survives the process being
  // killed; a power cut may lose the last commits (then lines are re-read, never skipped, because
  // the offsets only ever lag).
  ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(path, /*durable=*/false));
  RETURN_IF_ERROR(db->Migrate(kMigrations));
  return std::unique_ptr<OffsetLedger>(new OffsetLedger(std::move(db)));
}

absl::Status OffsetLedger::FoldLocked(uint64_t seq) {
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db_.get()));
  ASSIGN_OR_RETURN(Statement last, db_->PrepareCached(R"sql(
      SELECT source, device, inode, generation, next_offset FROM pending p
      WHERE batch_seq <= ?1 AND batch_seq = (
        SELECT MAX(batch_seq) FROM pending q WHERE q.batch_seq <= ?1 AND q.source = p.source
          AND q.device = p.device AND q.inode = p.inode AND q.generation = p.generation))sql"));
  ASSIGN_OR_RETURN(Statement update, db_->PrepareCached(
      "UPDATE files SET offset = ?5 WHERE source = ?1 AND device = ?2 AND inode = ?3 AND "
      "generation = ?4"));
  last.Bind(1, I(seq));
  for (;;) {
    ASSIGN_OR_RETURN(bool row, last.Step());
    if (!row) break;
    update.Bind(1, last.ColumnText(0))
        .Bind(2, last.ColumnInt(1))
        .Bind(3, last.ColumnInt(2))
        .Bind(4, last.ColumnInt(3))
        .Bind(5, last.ColumnInt(4));
    RETURN_IF_ERROR(update.Run());
    update.Reset();
  }
  ASSIGN_OR_RETURN(Statement del, db_->PrepareCached("DELETE FROM pending WHERE batch_seq <= ?1"));
  RETURN_IF_ERROR(del.Bind(1, I(seq)).Run());
  ASSIGN_OR_RETURN(Statement cursors, db_->PrepareCached(R"sql(
      INSERT OR REPLACE INTO journal_cursors (source, cursor)
      SELECT source, cursor FROM journal_pending p WHERE batch_seq = (
        SELECT MAX(batch_seq) FROM journal_pending q WHERE q.batch_seq <= ?1
          AND q.source = p.source))sql"));
  RETURN_IF_ERROR(cursors.Bind(1, I(seq)).Run());
  ASSIGN_OR_RETURN(Statement del_cursors,
                   db_->PrepareCached("DELETE FROM journal_pending WHERE batch_seq <= ?1"));
  RETURN_IF_ERROR(del_cursors.Bind(1, I(seq)).Run());
  ASSIGN_OR_RETURN(Statement prune, db_->PrepareCached(
      "DELETE FROM files WHERE (state = 1 OR (state = 2 AND offset >= detached_at)) AND NOT "
      "EXISTS (SELECT 1 FROM pending p WHERE p.source = files.source AND p.device = files.device "
      "AND p.inode = files.inode AND p.generation = files.generation)"));
  RETURN_IF_ERROR(prune.Run());
  RETURN_IF_ERROR(txn.Commit());
  durable_seq_ = std::max(durable_seq_, seq);
  return absl::OkStatus();
}

absl::Status OffsetLedger::Recover(uint64_t durable_seq) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(FoldLocked(durable_seq));
  // Never landed; their seqs are about to be reused.
  RETURN_IF_ERROR(db_->Exec("DELETE FROM journal_pending"));
  return db_->Exec("DELETE FROM pending");
}

absl::Status OffsetLedger::RecordSealed(uint64_t seq, const tripline::v1::EventBatch& batch) {
  // Per file, the last line's next_offset. A batch holds long runs of lines of one file: only a
  // change of file costs a map lookup.
  using Key = std::tuple<std::string_view, uint64_t, uint64_t, uint64_t>;
  std::map<Key, uint64_t> last;
  std::map<std::string, std::string> last_cursor;
  const tripline::v1::LogEvent* run = nullptr;  // the previous file line
  for (const tripline::v1::Event& e : batch.events()) {
    if (!e.has_log()) continue;
    const tripline::v1::LogEvent& l = e.log();
    if (!l.journal_cursor().empty()) {
      last_cursor[l.source()] = l.journal_cursor();
    } else if (l.inode() != 0) {
      if (run == nullptr || run->inode() != l.inode() || run->device() != l.device() ||
          run->generation() != l.generation() || run->source() != l.source()) {
        if (run != nullptr) {
          last[Key{run->source(), run->device(), run->inode(), run->generation()}] =
              run->next_offset();
        }
      }
      run = &l;
    }
  }
  if (run != nullptr) {
    last[Key{run->source(), run->device(), run->inode(), run->generation()}] = run->next_offset();
  }
  if (last.empty() && last_cursor.empty()) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db_.get()));
  ASSIGN_OR_RETURN(Statement insert, db_->PrepareCached(
      "INSERT OR REPLACE INTO pending (batch_seq, source, device, inode, generation, "
      "next_offset) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
  for (const auto& [key, next] : last) {
    insert.Bind(1, I(seq))
        .Bind(2, std::get<0>(key))
        .Bind(3, I(std::get<1>(key)))
        .Bind(4, I(std::get<2>(key)))
        .Bind(5, I(std::get<3>(key)))
        .Bind(6, I(next));
    RETURN_IF_ERROR(insert.Run());
    insert.Reset();
  }
  ASSIGN_OR_RETURN(Statement cursor, db_->PrepareCached(
      "INSERT OR REPLACE INTO journal_pending (batch_seq, source, cursor) VALUES (?1, ?2, ?3)"));
  for (const auto& [source, c] : last_cursor) {
    RETURN_IF_ERROR(cursor.Bind(1, I(seq)).Bind(2, source).Bind(3, c).Run());
    cursor.Reset();
  }
  return txn.Commit();
}

absl::StatusOr<std::string> OffsetLedger::JournalCursor(const std::string& source) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement q,
                   db_->PrepareCached("SELECT cursor FROM journal_cursors WHERE source = ?1"));
  q.Bind(1, source);
  ASSIGN_OR_RETURN(bool row, q.Step());
  return row ? q.ColumnText(0) : std::string();
}

absl::Status OffsetLedger::Durable(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  if (seq <= durable_seq_) return absl::OkStatus();
  return FoldLocked(seq);
}

absl::StatusOr<std::vector<FileRow>> OffsetLedger::Files(const std::string& source) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement q, db_->PrepareCached(
      "SELECT device, inode, generation, path, fingerprint, fingerprint_len, offset, state, "
      "detached_at FROM files WHERE source = ?1 ORDER BY device, inode, generation"));
  q.Bind(1, source);
  std::vector<FileRow> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    FileRow r;
    r.key = FileKey{source, static_cast<uint64_t>(q.ColumnInt(0)),
                    static_cast<uint64_t>(q.ColumnInt(1)), static_cast<uint64_t>(q.ColumnInt(2))};
    r.path = q.ColumnText(3);
    r.fingerprint = q.ColumnText(4);
    r.fingerprint_len = static_cast<uint64_t>(q.ColumnInt(5));
    r.offset = static_cast<uint64_t>(q.ColumnInt(6));
    r.state = static_cast<FileRowState>(q.ColumnInt(7));
    r.detached_at = static_cast<uint64_t>(q.ColumnInt(8));
    out.push_back(std::move(r));
  }
  return out;
}

absl::Status OffsetLedger::Put(const FileRow& row) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement q, db_->PrepareCached(
      "INSERT OR REPLACE INTO files (source, device, inode, generation, path, fingerprint, "
      "fingerprint_len, offset, state, detached_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
      "?10)"));
  q.Bind(1, row.key.source)
      .Bind(2, I(row.key.device))
      .Bind(3, I(row.key.inode))
      .Bind(4, I(row.key.generation))
      .BindBlob(5, row.path)
      .BindBlob(6, row.fingerprint)
      .Bind(7, I(row.fingerprint_len))
      .Bind(8, I(row.offset))
      .Bind(9, static_cast<int64_t>(row.state))
      .Bind(10, I(row.detached_at));
  return q.Run();
}

absl::Status OffsetLedger::UpdateIdentity(const FileKey& key, const std::string& path,
                                          const std::string& fingerprint,
                                          uint64_t fingerprint_len) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement q, db_->PrepareCached(
      "UPDATE files SET path = ?5, fingerprint = ?6, fingerprint_len = ?7 WHERE source = ?1 AND "
      "device = ?2 AND inode = ?3 AND generation = ?4"));
  q.Bind(1, key.source)
      .Bind(2, I(key.device))
      .Bind(3, I(key.inode))
      .Bind(4, I(key.generation))
      .BindBlob(5, path)
      .BindBlob(6, fingerprint)
      .Bind(7, I(fingerprint_len));
  return q.Run();
}

absl::Status OffsetLedger::SetState(const FileKey& key, FileRowState state,
                                    uint64_t detached_at) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement q, db_->PrepareCached(
      "UPDATE files SET state = ?5, detached_at = ?6 WHERE source = ?1 AND device = ?2 AND "
      "inode = ?3 AND generation = ?4"));
  q.Bind(1, key.source)
      .Bind(2, I(key.device))
      .Bind(3, I(key.inode))
      .Bind(4, I(key.generation))
      .Bind(5, static_cast<int64_t>(state))
      .Bind(6, I(detached_at));
  return q.Run();
}

absl::Status OffsetLedger::Forget(const FileKey& key) {
  absl::MutexLock lock(&mu_);
  for (const char* table : {"files", "pending"}) {
    ASSIGN_OR_RETURN(Statement q, db_->PrepareCached(std::string("DELETE FROM ") + table +
                                               " WHERE source = ?1 AND device = ?2 AND inode = "
                                               "?3 AND generation = ?4"));
    q.Bind(1, key.source).Bind(2, I(key.device)).Bind(3, I(key.inode)).Bind(4, I(key.generation));
    RETURN_IF_ERROR(q.Run());
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> OffsetLedger::SourceStarted(const std::string& source) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement q, db_->PrepareCached("SELECT 1 FROM sources WHERE name = ?1"));
  q.Bind(1, source);
  return q.Step();
}

absl::Status OffsetLedger::MarkSourceStarted(const std::string& source) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement q, db_->PrepareCached("INSERT OR IGNORE INTO sources (name) VALUES (?1)"));
  return q.Bind(1, source).Run();
}

absl::StatusOr<std::optional<std::vector<FamilyMember>>> OffsetLedger::Family(
    const std::string& source) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement tracked,
                   db_->PrepareCached("SELECT 1 FROM family_sources WHERE name = ?1"));
  tracked.Bind(1, source);
  ASSIGN_OR_RETURN(bool known, tracked.Step());
  if (!known) return std::optional<std::vector<FamilyMember>>();
  ASSIGN_OR_RETURN(Statement q, db_->PrepareCached(
      "SELECT device, inode, fingerprint, fingerprint_len FROM family WHERE source = ?1"));
  q.Bind(1, source);
  std::vector<FamilyMember> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    FamilyMember m;
    m.device = static_cast<uint64_t>(q.ColumnInt(0));
    m.inode = static_cast<uint64_t>(q.ColumnInt(1));
    m.fingerprint = q.ColumnText(2);
    m.fingerprint_len = static_cast<uint64_t>(q.ColumnInt(3));
    out.push_back(std::move(m));
  }
  return std::optional<std::vector<FamilyMember>>(std::move(out));
}

absl::Status OffsetLedger::MarkFamilyTracked(const std::string& source) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement q,
                   db_->PrepareCached("INSERT OR IGNORE INTO family_sources (name) VALUES (?1)"));
  return q.Bind(1, source).Run();
}

absl::Status OffsetLedger::AddToFamily(const std::string& source, const FamilyMember& member) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement q, db_->PrepareCached(
      "INSERT OR REPLACE INTO family (source, device, inode, fingerprint, fingerprint_len) "
      "VALUES (?1, ?2, ?3, ?4, ?5)"));
  return q.Bind(1, source)
      .Bind(2, I(member.device))
      .Bind(3, I(member.inode))
      .BindBlob(4, member.fingerprint)
      .Bind(5, I(member.fingerprint_len))
      .Run();
}

absl::Status OffsetLedger::RemoveFromFamily(const std::string& source, uint64_t device,
                                            uint64_t inode) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement q, db_->PrepareCached(
      "DELETE FROM family WHERE source = ?1 AND device = ?2 AND inode = ?3"));
  return q.Bind(1, source).Bind(2, I(device)).Bind(3, I(inode)).Run();
}

}  // namespace tripline::agent
