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
  };
  return kMigrations;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BaselineStore>> BaselineStore::Open(const std::string& path) {
  // Not durable per commit: losing the last commits in a power cut only means their changes are
  // reported again after the restart, never that a change goes unreported.
  ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(path, /*durable=*/false));
  RETURN_IF_ERROR(db->Migrate(Migrations()));
  return std::unique_ptr<BaselineStore>(new BaselineStore(std::move(db)));
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
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db_.get()));
  RETURN_IF_ERROR(db_->Exec("DELETE FROM fim_files; DELETE FROM fim_roots;"));
  {
    ASSIGN_OR_RETURN(Statement ins,
                     db_->Prepare("INSERT OR REPLACE INTO fim_roots VALUES (?1, ?2, ?3)"));
    for (const FimRoot& r : roots) {
      ins.BindBlob(1, r.path).BindBlob(2, RootFingerprint(r)).Bind(3, now_unix_ns);
      RETURN_IF_ERROR(ins.Run());
    }
  }
  {
    ASSIGN_OR_RETURN(Statement ins,
                     db_->Prepare("INSERT OR REPLACE INTO fim_files VALUES (?1, ?2)"));
    std::string bytes;
    for (const ScannedFile& f : files) {
      f.state.SerializeToString(&bytes);
      ins.BindBlob(1, f.path).BindBlob(2, bytes);
      RETURN_IF_ERROR(ins.Run());
    }
  }
  return txn.Commit();
}

absl::Status BaselineStore::Apply(
    const std::vector<std::pair<std::string, std::optional<tripline::v1::FileState>>>& changes) {
  if (changes.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db_.get()));
  ASSIGN_OR_RETURN(Statement put, db_->Prepare("INSERT OR REPLACE INTO fim_files VALUES (?1, ?2)"));
  ASSIGN_OR_RETURN(Statement del, db_->Prepare("DELETE FROM fim_files WHERE path = ?1"));
  std::string bytes;
  for (const auto& [path, state] : changes) {
    if (state.has_value()) {
      state->SerializeToString(&bytes);
      put.BindBlob(1, path).BindBlob(2, bytes);
      RETURN_IF_ERROR(put.Run());
    } else {
      del.BindBlob(1, path);
      RETURN_IF_ERROR(del.Run());
    }
  }
  return txn.Commit();
}

}  // namespace tripline::agent
