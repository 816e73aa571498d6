#include "platform/fs/dir_walk.h"

#include <dirent.h>
#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "platform/fs/unique_fd.h"
#include "platform/runtime/errno_status.h"

namespace tripline {
namespace {

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

class Walker {
 public:
  Walker(const WalkOptions& options, const std::function<WalkAction(const WalkEntry&)>& visit,
         const std::function<void(const std::string&, const absl::Status&)>& on_error)
      : options_(options), visit_(visit), on_error_(on_error) {}

  // Lists the directory open at `fd` (ownership taken) whose path is `path`.
  void List(UniqueFd fd, const std::string& path, int depth) {
    DIR* raw = ::fdopendir(fd.get());
    if (raw == nullptr) {
      on_error_(path, ErrnoStatus(errno, "fdopendir", path));
      return;
    }
    fd.release();  // now owned by the DIR
    std::unique_ptr<DIR, DirCloser> dir(raw);
    const int dfd = ::dirfd(raw);
    for (;;) {
      errno = 0;
      struct dirent* ent = ::readdir(raw);
      if (ent == nullptr) {
        if (errno != 0) on_error_(path, ErrnoStatus(errno, "readdir", path));
        return;
      }
      const char* name = ent->d_name;
      if (std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0) continue;
      std::string child = JoinPath(path, name);
      struct stat st;
      if (::fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        // Vanished between readdir and stat: not an error worth reporting.
        if (errno != ENOENT) on_error_(child, ErrnoStatus(errno, "stat", child));
        continue;
      }
      WalkAction action = visit_(WalkEntry{child, dfd, name, st, depth + 1});
      if (!S_ISDIR(st.st_mode) || action != WalkAction::kContinue || !options_.recursive) {
        continue;
      }
      if (depth + 1 >= kMaxWalkDepth) {
        on_error_(child,
                  absl::ResourceExhaustedError("directory nesting deeper than the walk limit"));
        continue;
      }
      int cfd = ::openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (cfd < 0) {
        if (errno != ENOENT) on_error_(child, ErrnoStatus(errno, "open", child));
        continue;
      }
      List(UniqueFd(cfd), child, depth + 1);
    }
  }

 private:
  const WalkOptions& options_;
  const std::function<WalkAction(const WalkEntry&)>& visit_;
  const std::function<void(const std::string&, const absl::Status&)>& on_error_;
};

}  // namespace

std::string JoinPath(const std::string& dir, std::string_view name) {
  std::string out = dir;
  if (out.empty() || out.back() != '/') out += '/';
  out.append(name.data(), name.size());
  return out;
}

absl::Status WalkTree(
    const std::string& root, const WalkOptions& options,
    const std::function<WalkAction(const WalkEntry&)>& visit,
    const std::function<void(const std::string&, const absl::Status&)>& on_error) {
  struct stat st;
  if (::fstatat(AT_FDCWD, root.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoStatus(errno, "stat", root);
  }
  WalkAction action = visit(WalkEntry{root, AT_FDCWD, root.c_str(), st, 0});
  if (!S_ISDIR(st.st_mode) || action != WalkAction::kContinue) return absl::OkStatus();
  int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    on_error(root, ErrnoStatus(errno, "open", root));
    return absl::OkStatus();
  }
  Walker walker(options, visit, on_error);
  walker.List(UniqueFd(fd), root, 0);
  return absl::OkStatus();
}

}  // namespace tripline
