#include "agent/fim/file_state.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "platform/crypto/digest.h"
#include "platform/fs/unique_fd.h"
#include "platform/runtime/errno_status.h"

namespace tripline::agent {
namespace {

std::string ErrnoNote(const char* op, int err) {
  return absl::StrFormat("%s: %s (%s)", op, strerror(err), ErrnoName(err));
}

int64_t Nanos(const struct timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// 256 KiB reads: few syscalls per large file, still cheap per thread.
constexpr size_t kReadChunk = 256 * 1024;

std::string TooLargeNote(int64_t size, int64_t max) {
  return absl::StrFormat("not hashed: %d bytes is over max_hash_bytes %d", size, max);
}

struct AttrName {
  const char* name;
  uint32_t bit;
};
constexpr AttrName kAttrNames[] = {
    {"size", kAttrSize},   {"mode", kAttrMode},   {"owner", kAttrOwner}, {"mtime", kAttrMtime},
    {"ctime", kAttrCtime}, {"inode", kAttrInode}, {"links", kAttrLinks}, {"sha256", kAttrSha256},
};

// Hashes the open regular file `fd` into `out`. The first chunk is read with RWF_NOWAIT, which
// fails with EAGAIN unless it is in the page cache: a file that was not cached has its pages
// dropped afterwards, so a scan neither evicts what the host had cached nor leaves its own reads.
void HashOpenFile(int fd, int64_t size, int64_t max_hash_bytes, FileStateRead* out) {
  thread_local std::vector<char> buf(kReadChunk);
  Sha256Hasher hasher;
  uint64_t total = 0;
  bool was_cached = true;
  if (size > static_cast<int64_t>(kReadChunk)) ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  struct iovec iov = {buf.data(), buf.size()};
  ssize_t first = ::preadv2(fd, &iov, 1, 0, RWF_NOWAIT);
  if (first < 0) {
    was_cached = false;  // EAGAIN (not cached), or no RWF_NOWAIT here: read normally below
  } else if (first > 0) {
    hasher.Update(buf.data(), static_cast<size_t>(first));
    total = static_cast<uint64_t>(first);
  }
  auto drop = [&] {
    if (!was_cached) ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  };
  const bool short_first = first > 0 && static_cast<size_t>(first) < buf.size();
  // A small file read whole by the first call needs no second read to find its end: a file that
  // grew meanwhile is caught by the caller's fstat after hashing.
  const bool whole = short_first && first == size;
  while (!whole) {
    ssize_t r = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(total));
    if (r < 0) {
      if (errno == EINTR) continue;
      out->note = ErrnoNote("read", errno);
      drop();
      return;
    }
    if (r == 0) break;
    if (short_first) was_cached = false;  // the cached part ended before the file did
    hasher.Update(buf.data(), static_cast<size_t>(r));
    total += static_cast<uint64_t>(r);
    if (total > static_cast<uint64_t>(max_hash_bytes)) {
      out->note = "not hashed: file grew over max_hash_bytes while being read";
      drop();
      return;
    }
  }
  drop();
  out->state.set_sha256(hasher.Finish());
  out->bytes_hashed = total;
}

}  // namespace

tripline::v1::FileState StateFromStat(const struct stat& st) {
  tripline::v1::FileState s;
  s.set_size(static_cast<uint64_t>(st.st_size));
  s.set_mode(st.st_mode);
  s.set_uid(st.st_uid);
  s.set_gid(st.st_gid);
  s.set_mtime_ns(Nanos(st.st_mtim));
  s.set_ctime_ns(Nanos(st.st_ctim));
  s.set_inode(st.st_ino);
  s.set_device(st.st_dev);
  s.set_nlink(st.st_nlink);
  return s;
}

absl::StatusOr<uint32_t> ParseFileAttrs(const std::vector<std::string>& names) {
  uint32_t bits = 0;
  for (const std::string& n : names) {
    bool found = false;
    for (const AttrName& a : kAttrNames) {
      if (n == a.name) {
        bits |= a.bit;
        found = true;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "unknown attribute '%s' (expected size, mode, owner, mtime, ctime, inode, links, "
          "sha256)",
          n));
    }
  }
  return bits;
}

FileStateRead ReadFileStateAt(int dir_fd, const char* name, int64_t max_hash_bytes,
                              const struct stat* known, bool hash) {
  FileStateRead out;
  struct stat st;
  if (known != nullptr) {
    st = *known;
  } else if (::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) return out;
    out.exists = true;  // something is there that we may not look at
    out.note = ErrnoNote("stat", err);
    return out;
  }
  out.exists = true;
  out.state = StateFromStat(st);

  if (S_ISLNK(st.st_mode)) {
    char target[4096];
    ssize_t n = ::readlinkat(dir_fd, name, target, sizeof(target));
    if (n < 0) {
      out.note = ErrnoNote("readlink", errno);
    } else {
      out.state.set_link_target(std::string(target, static_cast<size_t>(n)));
    }
    return out;
  }
  if (!S_ISREG(st.st_mode) || !hash) return out;
  if (st.st_size > max_hash_bytes) {
    out.note = TooLargeNote(st.st_size, max_hash_bytes);
    return out;
  }

  // O_NONBLOCK: a FIFO swapped in after the stat must not hang us. O_NOATIME needs ownership or
  // CAP_FOWNER; without them, open again without it.
  const int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
  int fd = ::openat(dir_fd, name, flags | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = ::openat(dir_fd, name, flags);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return FileStateRead{};
    out.note = ErrnoNote("open", err);
    return out;
  }
  UniqueFd file(fd);
  struct stat fst;
  if (::fstat(file.get(), &fst) != 0) {
    out.note = ErrnoNote("fstat", errno);
    return out;
  }
  out.state = StateFromStat(fst);  // describe what we hash (it may have been replaced)
  if (!S_ISREG(fst.st_mode)) return out;
  if (fst.st_size > max_hash_bytes) {
    out.note = TooLargeNote(fst.st_size, max_hash_bytes);
    return out;
  }
  // A file written while we read it is read again (it has usually settled by then); the hash
  // must describe bytes that were on disk together.
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    out.state = StateFromStat(fst);
    out.note.clear();
    out.bytes_hashed = 0;
    HashOpenFile(file.get(), fst.st_size, max_hash_bytes, &out);
    struct stat after;
    if (out.state.sha256().empty() || ::fstat(file.get(), &after) != 0) break;
    if (after.st_size == fst.st_size && Nanos(after.st_mtim) == Nanos(fst.st_mtim) &&
        out.bytes_hashed == static_cast<uint64_t>(fst.st_size)) {
      break;
    }
    out.state = StateFromStat(after);  // without a hash
    out.note = absl::StrFormat("not hashed: changed while being read (%d bytes read, %d now)",
                               out.bytes_hashed, after.st_size);
    out.bytes_hashed = 0;
    if (attempt == kAttempts || after.st_size > max_hash_bytes) break;
    fst = after;
  }
  return out;
}

namespace {

struct Diff {
  std::vector<std::string_view> names;
  bool content = false;
};

Diff DiffStates(const tripline::v1::FileState& before, const tripline::v1::FileState& after,
                uint32_t attrs) {
  Diff d;
  auto add = [&](bool differs, const char* name, bool content) {
    if (!differs) return;
    d.names.push_back(name);
    d.content = d.content || content;
  };
  const uint32_t type_before = before.mode() & S_IFMT;
  const uint32_t type_after = after.mode() & S_IFMT;
  const bool dir = type_before == S_IFDIR && type_after == S_IFDIR;
  const bool reg = type_before == S_IFREG && type_after == S_IFREG;
  const bool both_hashed = !before.sha256().empty() && !after.sha256().empty();
  add(type_before != type_after, "type", true);
  add(before.link_target() != after.link_target(), "target", true);
  add((attrs & kAttrInode) != 0 &&
          (before.inode() != after.inode() || before.device() != after.device()),
      "inode", true);
  add((attrs & kAttrSize) != 0 && !dir && before.size() != after.size(), "size", true);
  // A hash where there was none (the file was being written, or unreadable, when last read) is
  // reported too: nothing vouches that the contents are what they were.
  add((attrs & kAttrSha256) != 0 && reg &&
          (both_hashed ? before.sha256() != after.sha256()
                       : before.sha256().empty() && !after.sha256().empty()),
      "sha256", true);
  const bool mtime_differs = !dir && before.mtime_ns() != after.mtime_ns();
  const bool mtime_fallback = (attrs & kAttrSha256) != 0 && reg && !both_hashed;
  add(mtime_differs && ((attrs & kAttrMtime) != 0 || mtime_fallback), "mtime", mtime_fallback);
  add((attrs & kAttrCtime) != 0 && !dir && before.ctime_ns() != after.ctime_ns(), "ctime", false);
  add((attrs & kAttrMode) != 0 && (before.mode() & 07777) != (after.mode() & 07777), "mode", false);
  add((attrs & kAttrOwner) != 0 && (before.uid() != after.uid() || before.gid() != after.gid()),
      "owner", false);
  add((attrs & kAttrLinks) != 0 && !dir && before.nlink() != after.nlink(), "links", false);
  return d;
}

}  // namespace

std::vector<std::string_view> ChangedAttrs(const tripline::v1::FileState& before,
                                           const tripline::v1::FileState& after, uint32_t attrs) {
  return DiffStates(before, after, attrs).names;
}

StateChange CompareStates(const tripline::v1::FileState& before,
                          const tripline::v1::FileState& after, uint32_t attrs) {
  Diff d = DiffStates(before, after, attrs);
  if (d.names.empty()) return StateChange::kNone;
  return d.content ? StateChange::kContent : StateChange::kAttrib;
}

}  // namespace tripline::agent
