// The agent's on-disk spool: every sealed batch is appended here before it is sent, and stays until
// the collector acks it, so no crash of the agent, the collector or the network loses a batch.
//
// Layout (docs/spool.md): a directory of segment files `segment-<first seq, 20 digits>.log`, each a
// sequence of records `u32 length | u32 masked crc32c | payload`, payload = `u64 batch_seq | serialized
// SignedBatch` (little endian), and a `cursor` file (acked seq and the ChainDigest of that batch),
// replaced atomically. Batch seqs are contiguous across records and segments.
//
// Durability: Push() writes the record (page cache) and returns; the commit thread fdatasyncs
// whatever has been written since its last pass (group commit) and only then makes the records
// sendable, so the collector never holds a batch the spool could lose. A segment fully acked is
// deleted after the cursor naming its last seq is durable. Open() replays the segments: a torn or
// corrupt record at the end of the last segment (a crash mid-append) is truncated away together
// with nothing before it; a bad record anywhere else is DataLoss and the spool refuses to open.
//
// Back-pressure: when the records not yet deleted reach max_bytes, or a write fails (ENOSPC, EIO),
// Push() blocks (retrying a failed write every retry_interval) until acks free space; it never drops
// a batch except after SetNonBlocking() (process shutdown: what is spooled survives anyway). Each
// such episode leaves a PressureNotice for the batcher to report as an AgentEvent.
//
// Threads: one pusher (the batcher thread), one commit thread (owned), any number of readers
// (sender: WaitForSendable; stream reader: AckThrough). mu_ guards the index; the pusher alone
// writes segment files, the commit thread alone syncs them.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "platform/fs/unique_fd.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

struct SealedBatch {
  uint64_t seq = 0;
  std::shared_ptr<const tripline::v1::SignedBatch> signed_batch;
};

// The system calls the spool makes on segment files, so tests can fail them (ENOSPC on the Nth
// write, EIO on fdatasync). Each returns 0 / the byte count, or -1 with errno set.
class SpoolIo {
 public:
  virtual ~SpoolIo() = default;
  virtual ssize_t Pwrite(int fd, const void* buf, size_t n, off_t offset);
  virtual int Fdatasync(int fd);
  static SpoolIo* Default();
};

struct SpoolOptions {
  std::string dir;
  uint64_t max_bytes = uint64_t{256} << 20;     // cap on segment bytes not yet deleted
  uint64_t segment_bytes = uint64_t{16} << 20;  // a segment is closed once it reaches this
  uint64_t max_cached_bytes = uint64_t{32} << 20;  // batches kept in memory for sending
  absl::Duration retry_interval = absl::Seconds(1);  // after a failed write or sync
  SpoolIo* io = nullptr;                             // nullptr: the real system calls
};

// Where the chain stands in the spool: the last batch sealed (or, when every batch was acked and
// deleted, the last acked one).
struct SpoolHead {
  uint64_t seq = 0;
  std::string digest;  // ChainDigest of that batch's bytes
};

// What Open() found, for the log and for deciding where the chain goes on.
struct SpoolRecovery {
  std::optional<SpoolHead> head;  // nullopt: a fresh spool, nothing was ever sealed here
  uint64_t acked_seq = 0;         // from the cursor
  uint64_t records = 0;           // unacked batches found
  uint64_t dropped_tail_bytes = 0;  // torn or corrupt tail cut from the last segment
};

// A back-pressure episode: when it began and a sentence for the AgentEvent.
struct PressureNotice {
  int64_t time_unix_ns = 0;
  std::string message;
};

class Spool {
 public:
  // Creates `options.dir` if needed (0700), replays it and starts the commit thread. Errors name
  // the file: unreadable directory or segment, a corrupt record before the tail (DataLoss), a cursor
  // that does not parse (DataLoss).
  static absl::StatusOr<std::unique_ptr<Spool>> Open(SpoolOptions options);
  ~Spool();  // Close()
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  const SpoolRecovery& recovery() const { return recovery_; }

  // Appends `batch` (its seq must be head + 1; a seq at or below the acked seq cannot be delivered
  // on this chain: logged as an error and not spooled). Blocks at the cap or while writes fail,
  // unless SetNonBlocking() was called: then a batch that cannot be written is dropped and false
  // returned.
  bool Push(SealedBatch batch);

  // The collector has committed everything up to `durable_seq`: forget those batches, persist the
  // cursor and delete fully acked segments. Lower values than already acked are ignored.
  void AckThrough(uint64_t durable_seq);

  // Waits until batch `seq` is committed to disk and seq <= acked_seq() + window, and returns it;
  // nullopt as soon as Interrupt() has moved the generation past `generation`, or when the record
  // cannot be read back (logged).
  std::optional<SealedBatch> WaitForSendable(uint64_t seq, uint64_t window, uint64_t generation);

  // Wakes every WaitForSendable caller holding an older generation; returns the new generation.
  uint64_t Interrupt();
  uint64_t generation() const;

  // True once nothing is waiting for an ack; false at `deadline`.
  bool WaitUntilEmpty(absl::Time deadline);

  // True once every batch pushed so far is on disk (fdatasync'd); false at `deadline`.
  bool WaitUntilCommitted(absl::Time deadline);

  // `fn(seq)` is called, in order and never concurrently, each time more batches are durable:
  // fdatasync'd in the spool (they will reach the collector whatever happens to this process) or
  // acked by the collector. Log offsets move on it. Set before the first Push.
  using DurableFn = std::function<void(uint64_t seq)>;
  void SetDurableListener(DurableFn fn);

  // From now on Push never blocks (shutdown).
  void SetNonBlocking();

  // The oldest back-pressure notice not yet taken, if any.
  std::optional<PressureNotice> TakePressureNotice();

  // Syncs what is written, persists the cursor and stops the commit thread. Idempotent.
  void Close();

  uint64_t acked_seq() const;
  uint64_t committed_seq() const;
  size_t size() const;  // batches not yet acked
  uint64_t bytes() const;  // segment bytes on disk
  uint64_t pressure_episodes() const;
  // True while Push is held back by the cap or a failing write (a back-pressure episode).
  bool under_pressure() const;

 private:
  struct Segment {
    uint64_t first_seq = 0;
    uint64_t last_seq = 0;  // 0 while empty
    std::string path;
    std::shared_ptr<UniqueFd> fd;
    uint64_t size = 0;
  };
  struct Entry {
    uint64_t seq = 0;
    std::shared_ptr<UniqueFd> fd;
    uint64_t offset = 0;  // of the payload
    uint32_t length = 0;  // of the payload
    uint32_t crc = 0;     // masked crc32c of the payload
    std::shared_ptr<const tripline::v1::SignedBatch> cached;
  };

  explicit Spool(SpoolOptions options);
  absl::Status Replay();
  absl::Status ReplaySegment(const std::string& path, uint64_t first_seq, bool last);
  absl::Status OpenNewSegmentLocked(uint64_t first_seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteCursor(uint64_t acked_seq, const std::string& digest);
  void DeleteAckedSegmentsLocked(bool include_active = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void BeginPressureLocked(const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndPressureLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CommitLoop();
  void NotifyDurable(uint64_t seq);
  std::optional<SealedBatch> ReadBack(const Entry& e);
  // The ChainDigest of the acked batch, computed from acked_entry_ on first use.
  const std::string& AckedDigestLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const SpoolOptions options_;
  SpoolIo* const io_;
  SpoolRecovery recovery_;  // set by Open()
  absl::Mutex durable_mu_;  // orders listener calls
  DurableFn on_durable_ ABSL_GUARDED_BY(durable_mu_);
  uint64_t notified_seq_ ABSL_GUARDED_BY(durable_mu_) = 0;

  mutable absl::Mutex mu_;
  absl::CondVar changed_;  // signalled on every push, commit, ack, interrupt and mode change
  // Narrower wake-ups, so a batch costs no futile context switches: the commit thread waits for
  // writes (push, close), senders for what makes a batch sendable (commit, ack, interrupt).
  absl::CondVar commit_wanted_;
  absl::CondVar sendable_;
  std::deque<Segment> segments_ ABSL_GUARDED_BY(mu_);  // oldest first; back() is written to
  std::deque<Entry> entries_ ABSL_GUARDED_BY(mu_);     // unacked batches, contiguous seqs
  std::vector<std::shared_ptr<UniqueFd>> to_sync_ ABSL_GUARDED_BY(mu_);  // written, not synced
  uint64_t head_seq_ ABSL_GUARDED_BY(mu_) = 0;      // last pushed
  std::string head_digest_ ABSL_GUARDED_BY(mu_);
  uint64_t written_seq_ ABSL_GUARDED_BY(mu_) = 0;   // last written to a segment
  uint64_t committed_seq_ ABSL_GUARDED_BY(mu_) = 0;  // last fdatasync'd
  uint64_t acked_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::string acked_digest_ ABSL_GUARDED_BY(mu_);  // valid unless acked_entry_ is set
  std::optional<Entry> acked_entry_ ABSL_GUARDED_BY(mu_);  // the acked batch, digest not taken
  uint64_t cursor_seq_ ABSL_GUARDED_BY(mu_) = 0;    // as persisted
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t cached_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool non_blocking_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool commit_failed_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<int64_t> pressure_since_ ABSL_GUARDED_BY(mu_);
  std::string pressure_why_ ABSL_GUARDED_BY(mu_);
  std::deque<PressureNotice> notices_ ABSL_GUARDED_BY(mu_);
  uint64_t pressure_episodes_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread commit_thread_;
};

// CRC-32C (Castagnoli) of `data`, and LevelDB's mask for CRCs stored next to the data they cover.
uint32_t Crc32c(std::string_view data);
uint32_t MaskCrc(uint32_t crc);

}  // namespace tripline::agent
