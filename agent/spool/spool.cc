#include "agent/spool/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "platform/crypto/batch_signature.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/errno_status.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::agent {
namespace {

constexpr size_t kHeaderBytes = 8;      // u32 length | u32 masked crc32c
constexpr size_t kSeqBytes = 8;         // payload starts with the batch seq
constexpr uint32_t kMaxRecordBytes = 64u << 20;  // far above any batch (the collector caps 4 MiB)
constexpr char kCursorMagic[] = "TLSPOOL1";
constexpr char kCursorName[] = "cursor";
constexpr char kSegmentPrefix[] = "segment-";
constexpr char kSegmentSuffix[] = ".log";

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string SegmentName(uint64_t first_seq) {
  return absl::StrFormat("%s%020d%s", kSegmentPrefix, first_seq, kSegmentSuffix);
}

// Parses "segment-<20 digits>.log"; nullopt for any other name.
std::optional<uint64_t> ParseSegmentName(const std::string& name) {
  const size_t prefix = sizeof(kSegmentPrefix) - 1, suffix = sizeof(kSegmentSuffix) - 1;
  if (name.size() != prefix + 20 + suffix || name.compare(0, prefix, kSegmentPrefix) != 0 ||
      name.compare(name.size() - suffix, suffix, kSegmentSuffix) != 0) {
    return std::nullopt;
  }
  uint64_t v = 0;
  for (size_t i = prefix; i < prefix + 20; ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  return v;
}

absl::Status SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, "open", dir);
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, "fsync", dir);
  return absl::OkStatus();
}

int64_t NowNanos() { return absl::ToUnixNanos(absl::Now()); }

uint32_t Crc32cPortable(uint32_t c, std::string_view data) {
  static const std::array<uint32_t, 256> table = MakeCrcTable();
  for (unsigned char b : data) c = table[(c ^ b) & 0xff] ^ (c >> 8);
  return c;
}

#if defined(__x86_64__)
// SSE4.2's crc32 instruction computes CRC-32C: 8 bytes per instruction instead of one table
// lookup per byte (the record CRC was a tenth of the agent's CPU with the table).
__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(uint32_t c, std::string_view data) {
  const char* p = data.data();
  size_t n = data.size();
  uint64_t c64 = c;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c64 = __builtin_ia32_crc32di(c64, v);
  }
  c = static_cast<uint32_t>(c64);
  for (; n > 0; ++p, --n) c = __builtin_ia32_crc32qi(c, static_cast<unsigned char>(*p));
  return c;
}
#endif

}  // namespace

uint32_t Crc32c(std::string_view data) {
#if defined(__x86_64__)
  static const bool hardware = __builtin_cpu_supports("sse4.2");
  if (hardware) return Crc32cSse42(0xFFFFFFFFu, data) ^ 0xFFFFFFFFu;
#endif
  return Crc32cPortable(0xFFFFFFFFu, data) ^ 0xFFFFFFFFu;
}

uint32_t MaskCrc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

ssize_t SpoolIo::Pwrite(int fd, const void* buf, size_t n, off_t offset) {
  return ::pwrite(fd, buf, n, offset);
}
int SpoolIo::Fdatasync(int fd) { return ::fdatasync(fd); }
SpoolIo* SpoolIo::Default() {
  static SpoolIo io;
  return &io;
}

Spool::Spool(SpoolOptions options)
    : options_(std::move(options)), io_(options_.io != nullptr ? options_.io : SpoolIo::Default()) {}

Spool::~Spool() { Close(); }

absl::StatusOr<std::unique_ptr<Spool>> Spool::Open(SpoolOptions options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("spool: no directory given");
  options.max_bytes = std::max<uint64_t>(options.max_bytes, 1);
  options.segment_bytes =
      std::clamp<uint64_t>(options.segment_bytes, 1, std::max<uint64_t>(options.max_bytes / 4, 1));
  RETURN_IF_ERROR(MakeDirs(options.dir, 0700));
  std::unique_ptr<Spool> spool(new Spool(std::move(options)));
  RETURN_IF_ERROR(spool->Replay());
  spool->commit_thread_ = std::thread([s = spool.get()] { s->CommitLoop(); });
  return spool;
}

absl::Status Spool::Replay() {
  absl::MutexLock lock(&mu_);
  const std::string cursor_path = options_.dir + "/" + kCursorName;
  struct stat st;
  if (::stat(cursor_path.c_str(), &st) == 0) {
    ASSIGN_OR_RETURN(std::string c, ReadFileToString(cursor_path, 4096));
    const size_t magic = sizeof(kCursorMagic) - 1;
    bool ok = c.size() >= magic + 8 + 1 + 4 && c.compare(0, magic, kCursorMagic) == 0;
    size_t digest_len = ok ? static_cast<unsigned char>(c[magic + 8]) : 0;
    ok = ok && (digest_len == 0 || digest_len == 32) && c.size() == magic + 8 + 1 + digest_len + 4;
    ok = ok && GetU32(c.data() + c.size() - 4) ==
                   MaskCrc(Crc32c(std::string_view(c.data(), c.size() - 4)));
    if (!ok) {
      return absl::DataLossError(absl::StrFormat(
          "spool cursor %s is corrupt; move the spool directory aside to start afresh (batches in "
          "it would then be resent or lost)",
          cursor_path));
    }
    acked_seq_ = cursor_seq_ = GetU64(c.data() + magic);
    acked_digest_ = c.substr(magic + 9, digest_len);
  } else if (errno != ENOENT) {
    return ErrnoStatus(errno, "stat", cursor_path);
  }

  std::vector<std::pair<uint64_t, std::string>> found;
  {
    DIR* d = ::opendir(options_.dir.c_str());
    if (d == nullptr) return ErrnoStatus(errno, "open directory", options_.dir);
    while (struct dirent* ent = ::readdir(d)) {
      std::string name = ent->d_name;
      if (std::optional<uint64_t> first = ParseSegmentName(name)) {
        found.emplace_back(*first, options_.dir + "/" + name);
      }
    }
    ::closedir(d);
  }
  std::sort(found.begin(), found.end());
  for (size_t i = 0; i < found.size(); ++i) {
    RETURN_IF_ERROR(ReplaySegment(found[i].second, found[i].first, i + 1 == found.size()));
  }
  // Segments holding only acked batches go now (the cursor that says so is already durable).
  DeleteAckedSegmentsLocked();
  if (!entries_.empty() && entries_.front().seq > acked_seq_ + 1) {
    return absl::DataLossError(absl::StrFormat(
        "spool %s: batches %d..%d are missing (acked through %d, first spooled %d)", options_.dir,
        acked_seq_ + 1, entries_.front().seq - 1, acked_seq_, entries_.front().seq));
  }
  if (head_seq_ == 0 && !acked_digest_.empty()) {
    head_seq_ = acked_seq_;
    head_digest_ = acked_digest_;
  }
  if (head_seq_ < acked_seq_) {  // the collector was ahead of what this spool ever held
    head_seq_ = acked_seq_;
    head_digest_ = acked_digest_;
  }
  written_seq_ = committed_seq_ = head_seq_;
  if (head_seq_ != 0 && !head_digest_.empty()) {
    recovery_.head = SpoolHead{head_seq_, head_digest_};
  }
  recovery_.acked_seq = acked_seq_;
  recovery_.records = entries_.size();
  return absl::OkStatus();
}

absl::Status Spool::ReplaySegment(const std::string& path, uint64_t first_seq, bool last) {
  auto fd = std::make_shared<UniqueFd>(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd->valid()) return ErrnoStatus(errno, "open", path);
  struct stat st;
  if (::fstat(fd->get(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrFormat("spool %s is not a regular file", path));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  std::string data(size, '\0');
  for (uint64_t got = 0; got < size;) {
    ssize_t n = ::pread(fd->get(), data.data() + got, size - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "read", path);
    if (n == 0) {
      data.resize(got);
      break;
    }
    got += static_cast<uint64_t>(n);
  }

  Segment seg;
  seg.first_seq = first_seq;
  seg.path = path;
  seg.fd = fd;
  uint64_t expected = first_seq;
  if (head_seq_ != 0 && first_seq != head_seq_ + 1 && first_seq > acked_seq_ + 1) {
    return absl::DataLossError(absl::StrFormat(
        "spool %s starts at batch %d but the segment before ends at %d", path, first_seq,
        head_seq_));
  }
  size_t off = 0;
  std::string bad;
  while (off < data.size()) {
    if (data.size() - off < kHeaderBytes) {
      bad = "a record header is cut short";
      break;
    }
    const uint32_t len = GetU32(data.data() + off);
    const uint32_t crc = GetU32(data.data() + off + 4);
    if (len < kSeqBytes || len > kMaxRecordBytes || data.size() - off - kHeaderBytes < len) {
      bad = absl::StrFormat("a record of %d bytes does not fit", len);
      break;
    }
    std::string_view payload(data.data() + off + kHeaderBytes, len);
    if (MaskCrc(Crc32c(payload)) != crc) {
      bad = "a record's crc32c does not match";
      break;
    }
    const uint64_t seq = GetU64(payload.data());
    tripline::v1::SignedBatch sb;
    if (seq != expected || !sb.ParseFromArray(payload.data() + kSeqBytes,
                                              static_cast<int>(len - kSeqBytes))) {
      bad = absl::StrFormat("record for batch %d (expected %d) does not hold a signed batch", seq,
                            expected);
      break;
    }
    head_seq_ = seq;
    head_digest_ = ChainDigest(sb.batch());
    if (seq > acked_seq_) {
      entries_.push_back(Entry{seq, fd, off + kHeaderBytes, len, crc, nullptr});
    }
    seg.last_seq = seq;
    ++expected;
    off += kHeaderBytes + len;
  }
  if (!bad.empty()) {
    if (!last) {
      return absl::DataLossError(absl::StrFormat(
          "spool %s offset %d: %s, and later segments follow; move the spool directory aside to "
          "start afresh",
          path, off, bad));
    }
    // A crash in the middle of an append: cut the torn record, keep everything before it.
    recovery_.dropped_tail_bytes = data.size() - off;
    spdlog::warn("spool: dropping torn tail file={} offset={} bytes={} reason=\"{}\"", path, off,
                 data.size() - off, bad);
    if (::ftruncate(fd->get(), static_cast<off_t>(off)) != 0) {
      return ErrnoStatus(errno, "truncate", path);
    }
    if (io_->Fdatasync(fd->get()) != 0) return ErrnoStatus(errno, "fdatasync", path);
  }
  seg.size = off;
  bytes_ += off;
  segments_.push_back(std::move(seg));
  return absl::OkStatus();
}

absl::Status Spool::OpenNewSegmentLocked(uint64_t first_seq) {
  Segment seg;
  seg.first_seq = first_seq;
  seg.path = options_.dir + "/" + SegmentName(first_seq);
  seg.fd = std::make_shared<UniqueFd>(
      ::open(seg.path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!seg.fd->valid()) return ErrnoStatus(errno, "create", seg.path);
  RETURN_IF_ERROR(SyncDir(options_.dir));  // the new name must survive a crash like its records
  segments_.push_back(std::move(seg));
  return absl::OkStatus();
}

absl::Status Spool::WriteCursor(uint64_t acked_seq, const std::string& digest) {
  std::string c = kCursorMagic;
  PutU64(&c, acked_seq);
  c.push_back(static_cast<char>(digest.size()));
  c += digest;
  PutU32(&c, MaskCrc(Crc32c(c)));
  return WriteFileAtomic(options_.dir + "/" + kCursorName, c, 0600);
}

void Spool::DeleteAckedSegmentsLocked(bool include_active) {
  // The segment being written stays, unless it is full (or `include_active`) and fully acked.
  size_t deletable = 0;
  while (deletable < segments_.size()) {
    const Segment& s = segments_[deletable];
    const bool is_last = deletable + 1 == segments_.size();
    const bool acked = s.last_seq != 0 ? s.last_seq <= acked_seq_ : s.first_seq <= acked_seq_;
    if (!acked || (is_last && !include_active && s.size < options_.segment_bytes)) break;
    ++deletable;
  }
  if (deletable == 0) return;
  if (cursor_seq_ < acked_seq_) {
    if (absl::Status st = WriteCursor(acked_seq_, AckedDigestLocked()); !st.ok()) {
      spdlog::error("spool: cannot persist the acked cursor, keeping acked segments: {}",
                    st.ToString());
      return;
    }
    cursor_seq_ = acked_seq_;
  }
  for (size_t i = 0; i < deletable; ++i) {
    const Segment& s = segments_.front();
    if (::unlink(s.path.c_str()) != 0 && errno != ENOENT) {
      spdlog::error("spool: cannot delete acked segment: {}",
                    ErrnoStatus(errno, "unlink", s.path).ToString());
      return;
    }
    spdlog::debug("spool: deleted acked segment file={} last_seq={}", s.path, s.last_seq);
    bytes_ -= s.size;
    segments_.pop_front();
  }
}

void Spool::BeginPressureLocked(const std::string& why) {
  if (pressure_since_) return;
  pressure_since_ = NowNanos();
  pressure_why_ = why;
  ++pressure_episodes_;
  spdlog::warn("spool: back-pressure, sealing paused dir={} bytes={} cap={} unacked={} reason=\"{}\"",
               options_.dir, bytes_, options_.max_bytes, entries_.size(), why);
}

void Spool::EndPressureLocked() {
  if (!pressure_since_) return;
  const int64_t ms = (NowNanos() - *pressure_since_) / 1000000;
  notices_.push_back(PressureNotice{
      *pressure_since_,
      absl::StrFormat("spool back-pressure for %d ms (%s); events waited, none were dropped", ms,
                      pressure_why_)});
  spdlog::info("spool: back-pressure over after_ms={} bytes={}", ms, bytes_);
  pressure_since_.reset();
}

bool Spool::Push(SealedBatch batch) {
  std::string record(kHeaderBytes, '\0');
  PutU64(&record, batch.seq);
  if (!batch.signed_batch->AppendToString(&record)) {
    spdlog::error("spool: cannot serialize batch_seq={}", batch.seq);  // out of memory
    return false;
  }
  const uint32_t len = static_cast<uint32_t>(record.size() - kHeaderBytes);
  const uint32_t crc = MaskCrc(Crc32c(std::string_view(record).substr(kHeaderBytes)));
  std::memcpy(record.data(), &len, 4);  // little endian hosts only (x86-64, arm64)
  std::memcpy(record.data() + 4, &crc, 4);
  absl::MutexLock lock(&mu_);
  const uint64_t expected = std::max(head_seq_, acked_seq_) + 1;
  if (batch.seq <= acked_seq_) {
    // The collector's chain is past this seq although the spool's was not: the state directory
    // came back from a backup, or the spool was moved aside. The collector holds other bytes
    // under this seq, so sending would only be refused as a fork.
    spdlog::error("spool: batch_seq={} is at or below the collector's durable_seq={}; its events "
                  "cannot be delivered on this chain (state directory restored from a backup?)",
                  batch.seq, acked_seq_);
    return true;
  }
  if (batch.seq != expected) {
    if (batch.seq < expected || !entries_.empty()) {
      spdlog::error("spool: batch_seq={} pushed out of order, expected {}", batch.seq, expected);
      return false;
    }
    // Nothing unacked here and the chain starts further on: the collector's head, which the
    // batcher was started from, covers everything before it.
    spdlog::info("spool: chain continues at batch_seq={} (spool head was {})", batch.seq,
                 expected - 1);
    tripline::v1::EventBatch parsed;
    acked_seq_ = batch.seq - 1;
    acked_digest_ = parsed.ParseFromString(batch.signed_batch->batch()) ? parsed.prev_digest() : "";
    acked_entry_.reset();
  }
  for (;;) {
    if (closing_) return false;
    if (bytes_ > 0 && bytes_ + record.size() > options_.max_bytes && entries_.empty()) {
      // Everything is acked but the segment being written still counts: start a new one.
      DeleteAckedSegmentsLocked(/*include_active=*/true);
    }
    if (bytes_ > 0 && bytes_ + record.size() > options_.max_bytes) {
      BeginPressureLocked(absl::StrFormat("spool at its cap of %d bytes with %d unacked batches",
                                          options_.max_bytes, entries_.size()));
      if (non_blocking_) return false;
      changed_.WaitWithTimeout(&mu_, options_.retry_interval);
      continue;
    }
    if (!segments_.empty() && segments_.back().size == 0 &&
        segments_.back().first_seq != batch.seq) {
      // An empty segment named for another seq (the chain jumped): a record here would not match
      // the file's name on replay.
      if (::unlink(segments_.back().path.c_str()) == 0 || errno == ENOENT) segments_.pop_back();
    }
    const bool contiguous = segments_.empty() || segments_.back().last_seq == 0 ||
                            segments_.back().last_seq + 1 == batch.seq;
    if (!contiguous) {
      // The chain jumped past this spool (the collector's head was further on): everything here
      // is acked, so the old segments go, and the new seq starts a segment of its own.
      DeleteAckedSegmentsLocked(/*include_active=*/true);
    }
    if (segments_.empty() || segments_.back().size >= options_.segment_bytes ||
        (segments_.back().last_seq != 0 && segments_.back().last_seq + 1 != batch.seq)) {
      if (absl::Status st = OpenNewSegmentLocked(batch.seq); !st.ok()) {
        BeginPressureLocked(std::string(st.message()));
        spdlog::error("spool: {}", st.ToString());
        if (non_blocking_) return false;
        changed_.WaitWithTimeout(&mu_, options_.retry_interval);
        continue;
      }
    }
    Segment& seg = segments_.back();
    size_t done = 0;
    int err = 0;
    while (done < record.size()) {
      ssize_t n = io_->Pwrite(seg.fd->get(), record.data() + done, record.size() - done,
                              static_cast<off_t>(seg.size + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        err = n < 0 ? errno : ENOSPC;
        break;
      }
      done += static_cast<size_t>(n);
    }
    if (err != 0) {
      // Leave no partial record behind: the next attempt writes at the same offset.
      if (::ftruncate(seg.fd->get(), static_cast<off_t>(seg.size)) != 0) {
        spdlog::error("spool: {}", ErrnoStatus(errno, "truncate", seg.path).ToString());
      }
      const absl::Status st = ErrnoStatus(err, "write", seg.path);
      if (!pressure_since_) spdlog::error("spool: {}", st.ToString());
      BeginPressureLocked(std::string(st.message()));
      if (non_blocking_) return false;
      changed_.WaitWithTimeout(&mu_, options_.retry_interval);
      continue;
    }
    Entry e{batch.seq, seg.fd, seg.size + kHeaderBytes, len, crc, nullptr};
    if (cached_bytes_ + len <= options_.max_cached_bytes) {
      e.cached = std::move(batch.signed_batch);
      cached_bytes_ += len;
    }
    entries_.push_back(std::move(e));
    seg.size += record.size();
    seg.last_seq = batch.seq;
    bytes_ += record.size();
    head_seq_ = written_seq_ = batch.seq;
    head_digest_.clear();  // known from the entry when needed (AckedDigestLocked)
    if (std::find(to_sync_.begin(), to_sync_.end(), seg.fd) == to_sync_.end()) {
      to_sync_.push_back(seg.fd);
    }
    EndPressureLocked();
    changed_.SignalAll();
    commit_wanted_.Signal();
    return true;
  }
}

void Spool::CommitLoop() {
  for (;;) {
    std::vector<std::shared_ptr<UniqueFd>> fds;
    uint64_t target;
    {
      absl::MutexLock lock(&mu_);
      while (!closing_ && written_seq_ == committed_seq_) commit_wanted_.Wait(&mu_);
      if (written_seq_ == committed_seq_) return;  // closing, and everything is synced
      fds.swap(to_sync_);
      target = written_seq_;
    }
    int err = 0;
    for (const auto& fd : fds) {
      if (io_->Fdatasync(fd->get()) != 0) err = errno;
    }
    if (err == 0) {
      {
        absl::MutexLock lock(&mu_);
        committed_seq_ = std::max(committed_seq_, target);
        if (commit_failed_) spdlog::info("spool: fdatasync works again committed_seq={}", target);
        commit_failed_ = false;
        changed_.SignalAll();
        sendable_.SignalAll();
      }
      NotifyDurable(target);
      continue;
    }
    absl::MutexLock lock(&mu_);
    // Not durable: nothing past committed_seq_ is sent. Retry (the next write may fail too and
    // put the batcher under back-pressure); stop retrying only when closing.
    if (!commit_failed_) {
      spdlog::error("spool: {} ; batches after {} wait",
                    ErrnoStatus(err, "fdatasync", options_.dir).ToString(), committed_seq_);
    }
    commit_failed_ = true;
    for (auto& fd : fds) {
      if (std::find(to_sync_.begin(), to_sync_.end(), fd) == to_sync_.end()) to_sync_.push_back(fd);
    }
    if (closing_) return;
    changed_.WaitWithTimeout(&mu_, options_.retry_interval);
  }
}

void Spool::SetDurableListener(DurableFn fn) {
  absl::MutexLock lock(&durable_mu_);
  on_durable_ = std::move(fn);
}

void Spool::NotifyDurable(uint64_t seq) {
  absl::MutexLock lock(&durable_mu_);
  if (seq <= notified_seq_) return;
  notified_seq_ = seq;
  if (on_durable_) on_durable_(seq);
}

void Spool::AckThrough(uint64_t durable_seq) {
  NotifyDurable(durable_seq);  // acked by the collector: durable whether or not synced here
  absl::MutexLock lock(&mu_);
  if (durable_seq <= acked_seq_) return;
  // The acked batch's ChainDigest goes into the cursor, which is written once per segment: it is
  // computed then (AckedDigestLocked), not for every ack.
  std::optional<Entry> acked;
  while (!entries_.empty() && entries_.front().seq <= durable_seq) {
    Entry& e = entries_.front();
    if (e.seq == durable_seq) acked = e;
    if (e.cached) cached_bytes_ -= e.length;
    entries_.pop_front();
  }
  acked_seq_ = durable_seq;
  acked_entry_ = std::move(acked);
  acked_digest_.clear();
  if (!acked_entry_ && durable_seq == head_seq_) acked_digest_ = head_digest_;
  if (head_seq_ < acked_seq_) {
    // The collector is ahead of this spool (its tail was torn, or it was moved aside): the chain
    // goes on from the collector's head, which the caller learns from Enroll.
    head_seq_ = written_seq_ = acked_seq_;
    head_digest_.clear();
    committed_seq_ = std::max(committed_seq_, acked_seq_);
  }
  DeleteAckedSegmentsLocked();
  changed_.SignalAll();
  sendable_.SignalAll();
}

const std::string& Spool::AckedDigestLocked() {
  if (acked_entry_) {
    if (acked_entry_->cached) {
      acked_digest_ = ChainDigest(acked_entry_->cached->batch());
    } else if (std::optional<SealedBatch> b = ReadBack(*acked_entry_)) {
      acked_digest_ = ChainDigest(b->signed_batch->batch());
    }
    acked_entry_.reset();
  }
  return acked_digest_;
}

std::optional<SealedBatch> Spool::ReadBack(const Entry& e) {
  std::string payload(e.length, '\0');
  size_t got = 0;
  while (got < e.length) {
    ssize_t n = ::pread(e.fd->get(), payload.data() + got, e.length - got,
                        static_cast<off_t>(e.offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  auto sb = std::make_shared<tripline::v1::SignedBatch>();
  if (got != e.length || MaskCrc(Crc32c(payload)) != e.crc || GetU64(payload.data()) != e.seq ||
      !sb->ParseFromArray(payload.data() + kSeqBytes, static_cast<int>(e.length - kSeqBytes))) {
    spdlog::error("spool: batch_seq={} cannot be read back from {} (offset {}): the file changed "
                  "under the agent",
                  e.seq, options_.dir, e.offset);
    return std::nullopt;
  }
  return SealedBatch{e.seq, std::move(sb)};
}

std::optional<SealedBatch> Spool::WaitForSendable(uint64_t seq, uint64_t window,
                                                  uint64_t generation) {
  Entry e;
  {
    absl::MutexLock lock(&mu_);
    for (;;) {
      if (generation_ != generation) return std::nullopt;
      if (seq <= committed_seq_ && seq <= acked_seq_ + window && !entries_.empty() &&
          entries_.front().seq <= seq && entries_.back().seq >= seq) {
        e = entries_[seq - entries_.front().seq];  // seqs are contiguous
        break;
      }
      sendable_.Wait(&mu_);
    }
  }
  if (e.cached) return SealedBatch{e.seq, e.cached};
  return ReadBack(e);
}

uint64_t Spool::Interrupt() {
  absl::MutexLock lock(&mu_);
  ++generation_;
  changed_.SignalAll();
  sendable_.SignalAll();
  return generation_;
}

uint64_t Spool::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

bool Spool::WaitUntilEmpty(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  while (!entries_.empty()) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) return entries_.empty();
  }
  return true;
}

bool Spool::WaitUntilCommitted(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  while (committed_seq_ < written_seq_) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) return committed_seq_ >= written_seq_;
  }
  return true;
}

void Spool::SetNonBlocking() {
  absl::MutexLock lock(&mu_);
  non_blocking_ = true;
  changed_.SignalAll();
}

std::optional<PressureNotice> Spool::TakePressureNotice() {
  absl::MutexLock lock(&mu_);
  if (notices_.empty()) return std::nullopt;
  PressureNotice n = std::move(notices_.front());
  notices_.pop_front();
  return n;
}

void Spool::Close() {
  {
    absl::MutexLock lock(&mu_);
    if (closing_ && !commit_thread_.joinable()) return;
    closing_ = true;
    changed_.SignalAll();
    commit_wanted_.Signal();
    sendable_.SignalAll();
  }
  if (commit_thread_.joinable()) commit_thread_.join();
  absl::MutexLock lock(&mu_);
  if (cursor_seq_ < acked_seq_ && !AckedDigestLocked().empty()) {
    if (absl::Status st = WriteCursor(acked_seq_, acked_digest_); st.ok()) {
      cursor_seq_ = acked_seq_;
    } else {
      spdlog::warn("spool: cannot persist the acked cursor at close: {}", st.ToString());
    }
  }
}

uint64_t Spool::acked_seq() const {
  absl::MutexLock lock(&mu_);
  return acked_seq_;
}
uint64_t Spool::committed_seq() const {
  absl::MutexLock lock(&mu_);
  return committed_seq_;
}
size_t Spool::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}
uint64_t Spool::bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}
uint64_t Spool::pressure_episodes() const {
  absl::MutexLock lock(&mu_);
  return pressure_episodes_;
}

bool Spool::under_pressure() const {
  absl::MutexLock lock(&mu_);
  return pressure_since_.has_value();
}

}  // namespace tripline::agent
