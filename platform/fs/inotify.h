// A thin RAII wrapper over one Linux inotify instance: the fd is non-blocking and close-on-exec,
// watches are added by path, and the kernel's variable-length records are parsed with bounds
// checks into InotifyEvent values (names are bytes, never assumed to be UTF-8).
//
// Threads: not thread-safe; one owner thread reads events and adds/removes watches. fd() may be
// handed to poll() by that thread.
#pragma once

#include <sys/inotify.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "platform/fs/unique_fd.h"

namespace tripline {

struct InotifyEvent {
  int wd = -1;          // -1 for IN_Q_OVERFLOW
  uint32_t mask = 0;    // IN_* bits
  uint32_t cookie = 0;  // pairs IN_MOVED_FROM with IN_MOVED_TO
  std::string name;     // entry name inside the watched directory; empty for the directory itself
};

class Inotify {
 public:
  // A new inotify instance (IN_NONBLOCK | IN_CLOEXEC). Fails with the errno reason (e.g. EMFILE
  // when the per-user instance limit is reached).
  static absl::StatusOr<Inotify> Create();

  Inotify(Inotify&&) = default;
  Inotify& operator=(Inotify&&) = default;

  // Adds (or updates) a watch on `path` with `mask`; returns its watch descriptor. Fails with
  // ResourceExhausted when the user's watch limit is reached (ENOSPC), NotFound for a vanished
  // path, and so on; the message names the path.
  absl::StatusOr<int> AddWatch(const std::string& path, uint32_t mask);

  // Removes a watch; a watch the kernel already dropped is not an error.
  void RemoveWatch(int wd);

  // Appends every event queued now to `out` without blocking (nothing queued: ok, nothing
  // appended). Malformed records (impossible lengths) end the read with an Internal error.
  absl::Status ReadEvents(std::vector<InotifyEvent>* out);

  int fd() const { return fd_.get(); }

 private:
  explicit Inotify(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace tripline
