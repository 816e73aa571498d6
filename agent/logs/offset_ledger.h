// Where each tailed log file has been read to, persisted so that a restart — after SIGKILL too —
// neither loses nor repeats a line (state_dir/log-offsets.db, SQLite WAL).
//
// The rule: a file's offset moves only when the batch holding its lines is durable (acked by the
// collector today; in the agent's spool once there is one). To know, after a crash, which of the
// batches that were in flight landed, every sealed batch records — before it can be sent — the
// next_offset of the last line it holds per file ("pending" rows keyed by batch_seq). Durable(N)
// folds the rows of batches <= N into the files' offsets; Recover(D) at start, with D the
// collector's durable_seq from Enroll, does the same for the batches of the previous run that
// landed and forgets the others (their seqs will be reused and their lines are re-read).
//
// A file is (source, device, inode, generation): the generation counts truncations seen while it
// was tailed (copytruncate), so records of lines from before a truncation never move the offset of
// what came after it. The first bytes' digest (fingerprint) tells a reused inode from the file we
// knew, and finds the copy a copytruncate made. A row whose content was truncated away is
// "detached": it remembers how far the run had read (`detached_at`) so the lines between the
// durable offset and that point can be read again from the copy after a crash.
//
// journald sources work the same way with the entry cursor (LogEvent.journal_cursor) in place of
// the offset.
//
// Threads: thread-safe (one mutex around the connection): the tailer thread tracks files, the
// batcher thread records sealed batches, the transport's reader thread reports durable seqs.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "platform/store/sqlite.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

inline constexpr char kLogOffsetsFile[] = "log-offsets.db";
inline constexpr size_t kFingerprintBytes = 256;

struct FileKey {
  std::string source;
  uint64_t device = 0;
  uint64_t inode = 0;
  uint64_t generation = 0;
  bool operator==(const FileKey&) const = default;
};

enum class FileRowState { kLive = 0, kRetired = 1, kDetached = 2 };

struct FileRow {
  FileKey key;
  std::string path;         // where it was last seen
  std::string fingerprint;  // Blake2b256 of the first fingerprint_len bytes
  uint64_t fingerprint_len = 0;
  uint64_t offset = 0;  // durable: every line before it is in a durable batch
  FileRowState state = FileRowState::kLive;
  uint64_t detached_at = 0;
};

// A file of a source's directory the tailer has accounted for (see "family" in log_tailer.h):
// followed, or rotated, copied or compressed content it must not read as new.
struct FamilyMember {
  uint64_t device = 0;
  uint64_t inode = 0;
  std::string fingerprint;  // Blake2b256 of the first fingerprint_len bytes when accounted for
  uint64_t fingerprint_len = 0;
};

class OffsetLedger {
 public:
  // Opens (creating) `path`. Fails naming the file when it cannot be opened or migrated.
  static absl::StatusOr<std::unique_ptr<OffsetLedger>> Open(const std::string& path);

  // At start, once the durable seq is known: batches <= durable_seq landed, later ones did not.
  absl::Status Recover(uint64_t durable_seq);

  // Batch `seq` was sealed: records per file the next_offset of its last line. Must return
  // before the batch can be sent. Batches without log events record nothing.
  absl::Status RecordSealed(uint64_t seq, const tripline::v1::EventBatch& batch);

  // Every batch up to `seq` is durable: moves the files' offsets; drops retired rows no pending
  // batch names any more. Lower seqs than seen before are no-ops.
  absl::Status Durable(uint64_t seq);

  // The rows of `source`.
  absl::StatusOr<std::vector<FileRow>> Files(const std::string& source);

  // Inserts or replaces the row of `row.key` (offset included).
  absl::Status Put(const FileRow& row);
  // Updates path and fingerprint of a row (the offset stays).
  absl::Status UpdateIdentity(const FileKey& key, const std::string& path,
                              const std::string& fingerprint, uint64_t fingerprint_len);
  // Marks a row retired (read to its end and closed) or detached (see above).
  absl::Status SetState(const FileKey& key, FileRowState state, uint64_t detached_at = 0);
  // Deletes a row and its pending records.
  absl::Status Forget(const FileKey& key);

  // The durable journal cursor of a journald source ("" when none yet).
  absl::StatusOr<std::string> JournalCursor(const std::string& source);

  // Whether `source` has started before (files found then start at the configured place; files
  // found later are new and read from their beginning).
  absl::StatusOr<bool> SourceStarted(const std::string& source);
  absl::Status MarkSourceStarted(const std::string& source);

  // The files of `source`'s directories already accounted for, so that one found after a restart
  // that is not among them (a log rotated away before any run opened it) is read, and the others
  // are not read again.
  // nullopt when no run has recorded the family yet (a new source, or a ledger written by a
  // version without families): then what is in the directories is old and is not read.
  absl::StatusOr<std::optional<std::vector<FamilyMember>>> Family(const std::string& source);
  absl::Status MarkFamilyTracked(const std::string& source);
  absl::Status AddToFamily(const std::string& source, const FamilyMember& member);
  absl::Status RemoveFromFamily(const std::string& source, uint64_t device, uint64_t inode);

 private:
  explicit OffsetLedger(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  absl::Status FoldLocked(uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
  uint64_t durable_seq_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tripline::agent
