// The FIM baseline on disk: one SQLite file (fim-baseline.db in the agent's state dir) holding
// the last known state of every file under the configured roots, and for each root the options it
// was taken with. The daemon replaces it after its start-up scan and then keeps it current with
// every change it reports, so a restart reports exactly what changed while the agent was down;
// `tripline-agent scan` writes it and `tripline-agent check` reads it.
//
// The daemon keeps no copy of it in memory: it looks paths up here as events come (SQLite's page
// cache is bounded, see kCacheKiB), writes changes into a transaction it commits after each batch
// of events, and loads a part into memory only for the length of a rescan's comparison.
//
// Schema (PRAGMA user_version 3):
//   fim_roots(path BLOB PRIMARY KEY, fingerprint BLOB, scanned_unix_ns INTEGER)
//   fim_files(path BLOB PRIMARY KEY, state BLOB,   -- state: a serialized tripline.v1.FileState
//             device INTEGER, inode INTEGER)      -- indexed: the other names of a hard link
//   fim_pending(id INTEGER PRIMARY KEY AUTOINCREMENT, event BLOB)  -- a serialized Event whose
//             change the baseline holds, not yet known to be in a durable batch (fim_delivery.h)
//   fim_dirty(path BLOB PRIMARY KEY)  -- roots to rescan: changes there went unreported while the
//             spool had no room
//
// Threads: one owner; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/fim/fim_root.h"
#include "agent/fim/tree_scan.h"
#include "platform/store/sqlite.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

// Path -> last known state.
using Baseline = std::unordered_map<std::string, tripline::v1::FileState>;

// The name of the baseline file inside the agent's state directory.
inline constexpr char kBaselineFileName[] = "fim-baseline.db";

class BaselineStore {
 public:
  // Opens (creating, migrating) the baseline file at `path`.
  static absl::StatusOr<std::unique_ptr<BaselineStore>> Open(const std::string& path);

  // A baseline held by SQLite in memory (still far more compact than a map of states): for a
  // daemon without a usable baseline file.
  static absl::StatusOr<std::unique_ptr<BaselineStore>> OpenInMemory();

  // Root path -> fingerprint (RootFingerprint) of the options its stored baseline was taken with.
  absl::StatusOr<std::unordered_map<std::string, std::string>> LoadRoots();

  // Every stored file state. A row that does not parse is an error naming the path.
  absl::StatusOr<Baseline> Load();

  // Replaces every file and root row with `files` (taken with `roots`, at `now_unix_ns`) and
  // clears the dirty roots, in one transaction with the writes already open (pending rows).
  absl::Status Replace(const std::vector<FimRoot>& roots, const std::vector<ScannedFile>& files,
                       int64_t now_unix_ns);

  // Upserts (state) or deletes (nullopt) each path, in one transaction.
  absl::Status Apply(
      const std::vector<std::pair<std::string, std::optional<tripline::v1::FileState>>>& changes);

  // The stored states at or under any of `scope`, for a comparison with a scan (DiffBaseline).
  absl::StatusOr<Baseline> LoadScope(const std::vector<std::string>& scope);

  // One path's stored state; nullopt when there is none.
  absl::StatusOr<std::optional<tripline::v1::FileState>> Get(const std::string& path);

  // Every stored path strictly under `dir`, with its state, sorted by path.
  absl::StatusOr<std::vector<std::pair<std::string, tripline::v1::FileState>>> ListUnder(
      const std::string& dir);

  // Every stored path whose state has this device and inode, sorted by path.
  absl::StatusOr<std::vector<std::pair<std::string, tripline::v1::FileState>>> FindInode(
      uint64_t device, uint64_t inode);

  // Upserts or deletes one path inside the open write transaction (begun by the first write
  // after a Commit); Get and the other reads see it at once, the file at Commit().
  absl::Status Put(const std::string& path, const tripline::v1::FileState& state);
  absl::Status Erase(const std::string& path);
  absl::Status Commit();

  // Pending events (fim_delivery.h). AddPending stores `event` inside the open write transaction
  // and returns its id (above every id used before, across runs); PendingAfter lists the rows
  // after `after` in id order; ErasePendingThrough drops the rows up to `id` (in the write
  // transaction); EnsurePendingIdsAbove makes the next id exceed `id` (committed at once).
  absl::StatusOr<uint64_t> AddPending(const tripline::v1::Event& event);
  absl::StatusOr<std::vector<std::pair<uint64_t, tripline::v1::Event>>> PendingAfter(uint64_t after,
                                                                                     size_t limit);
  absl::Status ErasePendingThrough(uint64_t id);
  absl::Status EnsurePendingIdsAbove(uint64_t id);
  absl::StatusOr<uint64_t> MaxPendingId();  // 0 when there are none

  // Dirty roots: marked and cleared inside the write transaction.
  absl::Status MarkDirty(const std::string& root);
  absl::Status ClearDirty(const std::string& root);
  absl::StatusOr<std::vector<std::string>> LoadDirty();

  const std::string& path() const { return db_->path(); }

 private:
  // SQLite's page cache per baseline (KiB): lookups touch a few pages of a B-tree, and the
  // file is read through the OS page cache anyway.
  static constexpr int kCacheKiB = 1024;

  explicit BaselineStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  static absl::StatusOr<std::unique_ptr<BaselineStore>> Setup(std::unique_ptr<Database> db);
  absl::Status BeginWrite();
  absl::Status ReplaceRows(const std::vector<FimRoot>& roots, const std::vector<ScannedFile>& files,
                           int64_t now_unix_ns);
  absl::StatusOr<std::vector<std::pair<std::string, tripline::v1::FileState>>> Rows(Statement st);
  std::unique_ptr<Database> db_;
  std::optional<Transaction> txn_;
};

}  // namespace tripline::agent
