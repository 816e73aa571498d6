#include "platform/fs/inotify.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "platform/runtime/errno_status.h"

namespace tripline {

absl::StatusOr<Inotify> Inotify::Create() {
  int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "inotify_init1", "");
  return Inotify(UniqueFd(fd));
}

absl::StatusOr<int> Inotify::AddWatch(const std::string& path, uint32_t mask) {
  int wd = ::inotify_add_watch(fd_.get(), path.c_str(), mask);
  if (wd < 0) return ErrnoStatus(errno, "inotify_add_watch", path);
  return wd;
}

void Inotify::RemoveWatch(int wd) { ::inotify_rm_watch(fd_.get(), wd); }

absl::Status Inotify::ReadEvents(std::vector<InotifyEvent>* out) {
  // Large enough for many records; aligned as the kernel's struct requires.
  alignas(struct inotify_event) char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd_.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return absl::OkStatus();
      return ErrnoStatus(errno, "read", "inotify");
    }
    if (n == 0) return absl::OkStatus();
    size_t off = 0;
    const size_t len = static_cast<size_t>(n);
    while (off < len) {
      if (len - off < sizeof(struct inotify_event)) {
        return absl::InternalError(absl::StrFormat("inotify: truncated record at %d", off));
      }
      struct inotify_event header;
      std::memcpy(&header, buf + off, sizeof(header));
      if (header.len > len - off - sizeof(header)) {
        return absl::InternalError(
            absl::StrFormat("inotify: record name of %d bytes overruns", header.len));
      }
      InotifyEvent ev;
      ev.wd = header.wd;
      ev.mask = header.mask;
      ev.cookie = header.cookie;
      if (header.len > 0) {
        const char* name = buf + off + sizeof(header);
        ev.name.assign(name, strnlen(name, header.len));  // NUL-padded
      }
      out->push_back(std::move(ev));
      off += sizeof(header) + header.len;
    }
    if (len < sizeof(buf) / 2) return absl::OkStatus();  // drained for now
  }
}

}  // namespace tripline
