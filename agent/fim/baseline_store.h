// The FIM baseline on disk: one SQLite file (fim-baseline.db in the agent's state dir) holding
// the last known state of every file under the configured roots, and for each root the options it
// was taken with. The daemon replaces it after its start-up scan and then keeps it current with
// every change it reports, so a restart reports exactly what changed while the agent was down;
// `tripline-agent scan` writes it and `tripline-agent check` reads it.
//
// Schema (PRAGMA user_version 1):
//   fim_roots(path BLOB PRIMARY KEY, fingerprint BLOB, scanned_unix_ns INTEGER)
//   fim_files(path BLOB PRIMARY KEY, state BLOB)   -- state: a serialized tripline.v1.FileState
//
// Threads: one owner; not thread-safe.
#pragma once

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

  // Root path -> fingerprint (RootFingerprint) of the options its stored baseline was taken with.
  absl::StatusOr<std::unordered_map<std::string, std::string>> LoadRoots();

  // Every stored file state. A row that does not parse is an error naming the path.
  absl::StatusOr<Baseline> Load();

  // Replaces everything with `files` (taken with `roots`, at `now_unix_ns`), in one transaction.
  absl::Status Replace(const std::vector<FimRoot>& roots, const std::vector<ScannedFile>& files,
                       int64_t now_unix_ns);

  // Upserts (state) or deletes (nullopt) each path, in one transaction.
  absl::Status Apply(
      const std::vector<std::pair<std::string, std::optional<tripline::v1::FileState>>>& changes);

  const std::string& path() const { return db_->path(); }

 private:
  explicit BaselineStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  std::unique_ptr<Database> db_;
};

}  // namespace tripline::agent
