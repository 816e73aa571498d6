#include "agent/fim/file_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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

FileStateRead ReadFileStateAt(int dir_fd, const char* name, int64_t max_hash_bytes,
                              const struct stat* known) {
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
  if (!S_ISREG(st.st_mode)) return out;
  if (st.st_size > max_hash_bytes) {
    out.note = absl::StrFormat("not hashed: %d bytes is over max_hash_bytes %d", st.st_size,
                               max_hash_bytes);
    return out;
  }

  // O_NONBLOCK: a FIFO swapped in after the stat must not hang us. O_NOATIME needs ownership or
  // CAP_FOWNER; without them, open again without it.
  const int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
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
  if (!S_ISREG(fst.st_mode)) {  // replaced between stat and open
    out.state = StateFromStat(fst);
    return out;
  }
  out.state = StateFromStat(fst);  // describe what we hash
  if (fst.st_size > max_hash_bytes) {
    out.note = absl::StrFormat("not hashed: %d bytes is over max_hash_bytes %d", fst.st_size,
                               max_hash_bytes);
    return out;
  }
  Sha256Hasher hasher;
  char buf[64 * 1024];
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(file.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      out.note = ErrnoNote("read", errno);
      return out;
    }
    if (n == 0) break;
    hasher.Update(buf, static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
    if (total > static_cast<uint64_t>(max_hash_bytes)) {  // grew while we read
      out.note = "not hashed: file grew over max_hash_bytes while being read";
      return out;
    }
  }
  ::posix_fadvise(file.get(), 0, 0, POSIX_FADV_DONTNEED);
  out.state.set_sha256(hasher.Finish());
  out.bytes_hashed = total;
  return out;
}

StateChange CompareStates(const tripline::v1::FileState& before,
                          const tripline::v1::FileState& after) {
  const bool both_hashed = !before.sha256().empty() && !after.sha256().empty();
  const bool content_differs =
      (before.mode() & S_IFMT) != (after.mode() & S_IFMT) || before.inode() != after.inode() ||
      before.device() != after.device() || before.size() != after.size() ||
      before.link_target() != after.link_target() ||
      (both_hashed ? before.sha256() != after.sha256() : before.mtime_ns() != after.mtime_ns());
  // A directory's mtime moves with every entry added or removed: those are reported as their own
  // events, so directories compare without contents.
  if (content_differs &&
      !((before.mode() & S_IFMT) == S_IFDIR && (after.mode() & S_IFMT) == S_IFDIR &&
        before.inode() == after.inode() && before.device() == after.device())) {
    return StateChange::kContent;
  }
  if (before.mode() != after.mode() || before.uid() != after.uid() || before.gid() != after.gid() ||
      ((before.mode() & S_IFMT) != S_IFDIR && before.nlink() != after.nlink())) {
    return StateChange::kAttrib;
  }
  return StateChange::kNone;
}

}  // namespace tripline::agent
