#include "agent/fim/tree_scan.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "platform/crypto/digest.h"
#include "platform/fs/unique_fd.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

void WriteFile(const std::string& path, const std::string& contents) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, contents.data(), contents.size()), static_cast<ssize_t>(contents.size()));
  ASSERT_EQ(::close(fd), 0);
}

// A root with default options at `path`, changed by `edit`.
FimRoot MakeRoot(std::string path, const std::function<void(FimRoot&)>& edit = nullptr) {
  FimRoot r;
  r.path = std::move(path);
  if (edit) edit(r);
  return r;
}

const ScannedFile* Find(const ScanResult& r, const std::string& path) {
  for (const ScannedFile& f : r.files) {
    if (f.path == path) return &f;
  }
  return nullptr;
}

class TreeScanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.Sub("root");
    ASSERT_EQ(::mkdir(root_.c_str(), 0755), 0);
  }
  ScanResult Scan(FimRoot r, int threads = 0) {
    r.path = root_;
    roots_ = {r};
    TreeScanOptions opts;
    opts.threads = threads;
    return ScanTrees(roots_, AllRoots(roots_), opts);
  }

  testing::TempDir dir_;
  std::string root_;
  std::vector<FimRoot> roots_;
};

TEST_F(TreeScanTest, RecordsEveryEntrySortedWithHashesAndLinkTargets) {
  const std::string big(1 << 20, 'b');  // over the size hashed by a separate task
  WriteFile(root_ + "/small", "s");
  ASSERT_EQ(::mkdir((root_ + "/d").c_str(), 0755), 0);
  WriteFile(root_ + "/d/big", big);
  ASSERT_EQ(::symlink("/etc/passwd", (root_ + "/link").c_str()), 0);
  ScanResult r = Scan(FimRoot());
  ASSERT_EQ(r.files.size(), 5u);  // root, d, d/big, link, small
  EXPECT_TRUE(std::is_sorted(r.files.begin(), r.files.end(),
                             [](const auto& a, const auto& b) { return a.path < b.path; }));
  EXPECT_EQ(Find(r, root_ + "/small")->state.sha256(), Sha256("s"));
  EXPECT_EQ(Find(r, root_ + "/d/big")->state.sha256(), Sha256(big));
  EXPECT_EQ(Find(r, root_ + "/d/big")->state.size(), big.size());
  const ScannedFile* link = Find(r, root_ + "/link");
  EXPECT_TRUE(S_ISLNK(link->state.mode()));
  EXPECT_EQ(link->state.link_target(), "/etc/passwd");
  EXPECT_TRUE(link->state.sha256().empty());  // not followed
  EXPECT_EQ(r.bytes_hashed, big.size() + 1);
  EXPECT_TRUE(r.errors.empty());
}

TEST_F(TreeScanTest, OneThreadAndManyFindTheSame) {
  for (int d = 0; d < 8; ++d) {
    const std::string dir = root_ + "/d" + std::to_string(d);
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    for (int f = 0; f < 50; ++f) {
      WriteFile(dir + "/f" + std::to_string(f), std::string(f * 10000, static_cast<char>('a' + d)));
    }
  }
  ScanResult one = Scan(FimRoot(), 1);
  ScanResult many = Scan(FimRoot(), 4);
  ASSERT_EQ(one.files.size(), 1u + 8 * 51);
  ASSERT_EQ(one.files.size(), many.files.size());
  for (size_t i = 0; i < one.files.size(); ++i) {
    EXPECT_EQ(one.files[i].path, many.files[i].path);
    EXPECT_EQ(one.files[i].state.sha256(), many.files[i].state.sha256());
  }
  EXPECT_EQ(one.bytes_hashed, many.bytes_hashed);
}

// Whether the first page of `path` is in the page cache (mincore: asking starts no read, which
// a RWF_NOWAIT read would).
bool FirstPageCached(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  void* map = ::mmap(nullptr, page, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (map == MAP_FAILED) return true;
  unsigned char vec = 0;
  const bool cached = ::mincore(map, page, &vec) == 0 && (vec & 1) != 0;
  ::munmap(map, page);
  return cached;
}

TEST_F(TreeScanTest, FilesNotInThePageCacheAreHashedAndLeaveNoPagesBehind) {
  // More small files than one read-ahead batch, and large ones hashed by separate tasks.
  std::vector<std::pair<std::string, std::string>> files;
  for (int f = 0; f < 40; ++f) {
    files.emplace_back(root_ + "/s" + std::to_string(f), std::string(100 + f * 997, 'a' + f % 26));
  }
  for (int f = 0; f < 3; ++f) {
    files.emplace_back(root_ + "/big" + std::to_string(f),
                       std::string((3 << 20) + f * 4096 + 7, 'A' + f));
  }
  std::set<std::string> evicted;
  for (const auto& [path, contents] : files) {
    WriteFile(path, contents);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_EQ(::fdatasync(fd.get()), 0);
    ASSERT_EQ(::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
    // A filesystem whose pages cannot be dropped (tmpfs) still checks the hashes below.
    if (!FirstPageCached(path)) evicted.insert(path);
  }
  ScanResult r = Scan(FimRoot(), 2);
  ASSERT_EQ(r.files.size(), 1 + files.size());
  for (const auto& [path, contents] : files) {
    const ScannedFile* f = Find(r, path);
    ASSERT_NE(f, nullptr) << path;
    EXPECT_EQ(f->state.sha256(), Sha256(contents)) << path;
    EXPECT_EQ(f->state.size(), contents.size()) << path;
    if (evicted.count(path) != 0) {
      EXPECT_FALSE(FirstPageCached(path)) << path << ": the scan left its pages cached";
    }
  }
  EXPECT_TRUE(r.errors.empty());
}

TEST_F(TreeScanTest, ExcludesNonRecursiveAndNoHashOptionsApply) {
  ASSERT_EQ(::mkdir((root_ + "/cache").c_str(), 0755), 0);
  WriteFile(root_ + "/cache/x", "x");
  WriteFile(root_ + "/a.swp", "x");
  ASSERT_EQ(::mkdir((root_ + "/sub").c_str(), 0755), 0);
  WriteFile(root_ + "/sub/deep", "d");
  WriteFile(root_ + "/kept", "k");

  ScanResult r = Scan(MakeRoot("", [&](FimRoot& o) { o.exclude = {"*.swp", root_ + "/cache"}; }));
  EXPECT_EQ(Find(r, root_ + "/cache"), nullptr);
  EXPECT_EQ(Find(r, root_ + "/cache/x"), nullptr);
  EXPECT_EQ(Find(r, root_ + "/a.swp"), nullptr);
  EXPECT_NE(Find(r, root_ + "/sub/deep"), nullptr);

  r = Scan(MakeRoot("", [](FimRoot& o) { o.recursive = false; }));
  EXPECT_NE(Find(r, root_ + "/sub"), nullptr);
  EXPECT_EQ(Find(r, root_ + "/sub/deep"), nullptr);

  r = Scan(MakeRoot("", [](FimRoot& o) { o.attrs = kAttrSize | kAttrMode; }));
  ASSERT_NE(Find(r, root_ + "/kept"), nullptr);
  EXPECT_TRUE(Find(r, root_ + "/kept")->state.sha256().empty());
  EXPECT_EQ(r.bytes_hashed, 0u);
}

TEST_F(TreeScanTest, FileOverMaxHashBytesIsRecordedWithANote) {
  WriteFile(root_ + "/huge", std::string(5000, 'h'));
  ScanResult r = Scan(MakeRoot("", [](FimRoot& o) { o.max_hash_bytes = 4096; }));
  const ScannedFile* f = Find(r, root_ + "/huge");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->state.size(), 5000u);
  EXPECT_TRUE(f->state.sha256().empty());
  EXPECT_NE(f->note.find("max_hash_bytes"), std::string::npos) << f->note;
}

TEST_F(TreeScanTest, PathsLongerThanPathMaxAreScanned) {
  // 24 levels of 200-byte names: about 4.8 KB of path, more than PATH_MAX (4096). Built with
  // mkdirat relative to each level, as a full path could not be used.
  const std::string name(200, 'n');
  UniqueFd fd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  std::string path = root_;
  for (int i = 0; i < 24; ++i) {
    ASSERT_EQ(::mkdirat(fd.get(), name.c_str(), 0755), 0);
    fd = UniqueFd(::openat(fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    path += "/" + name;
  }
  int f = ::openat(fd.get(), "deep", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(f, 0);
  ASSERT_EQ(::write(f, "deep", 4), 4);
  ::close(f);
  ScanResult r = Scan(FimRoot());
  const ScannedFile* deep = Find(r, path + "/deep");
  ASSERT_NE(deep, nullptr);
  EXPECT_GT(deep->path.size(), 4096u);
  EXPECT_EQ(deep->state.sha256(), Sha256("deep"));
  // TempDir removes by path, which fails past PATH_MAX: take it apart level by level.
  std::vector<UniqueFd> chain;
  chain.push_back(UniqueFd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)));
  for (int i = 0; i < 24; ++i) {
    chain.push_back(
        UniqueFd(::openat(chain.back().get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)));
  }
  ASSERT_EQ(::unlinkat(chain.back().get(), "deep", 0), 0);
  for (int i = 23; i >= 0; --i) {
    ASSERT_EQ(::unlinkat(chain[static_cast<size_t>(i)].get(), name.c_str(), AT_REMOVEDIR), 0);
  }
}

// Root reads everything, so the scan runs as nobody (65534) in a child process. Reading
// "public" (owned by root) also takes the O_NOATIME -> EPERM -> plain open path.
TEST_F(TreeScanTest, UnreadableEntriesAreRecordedWithTheReasonAndTheScanGoesOn) {
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  WriteFile(root_ + "/public", "p");
  WriteFile(root_ + "/secret", "s");
  ASSERT_EQ(::chmod((root_ + "/secret").c_str(), 0600), 0);
  ASSERT_EQ(::mkdir((root_ + "/locked").c_str(), 0700), 0);
  WriteFile(root_ + "/locked/inner", "i");
  WriteFile(root_ + "/z-after", "z");
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    std::vector<FimRoot> roots = {MakeRoot(root_)};
    TreeScanOptions opts;
    opts.threads = 2;
    ScanResult r = ScanTrees(roots, AllRoots(roots), opts);
    std::string out;
    for (const ScannedFile& f : r.files) {
      out += "F\t" + f.path + "\t" + ToHex(f.state.sha256()) + "\t" + f.note + "\n";
    }
    for (const ScanError& e : r.errors) out += "E\t" + e.path + "\t" + e.message + "\n";
    size_t off = 0;
    while (off < out.size()) {
      ssize_t n = ::write(fds[1], out.data() + off, out.size() - off);
      if (n <= 0) ::_exit(3);
      off += static_cast<size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  EXPECT_NE(text.find("F\t" + root_ + "/public\t" + ToHex(Sha256("p")) + "\t\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("F\t" + root_ + "/secret\t\topen: Permission denied (EACCES)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("F\t" + root_ + "/locked\t"), std::string::npos) << text;
  EXPECT_NE(text.find("E\t" + root_ + "/locked\topen " + root_ + "/locked: Permission denied"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find(root_ + "/locked/inner"), std::string::npos) << text;
  EXPECT_NE(text.find("F\t" + root_ + "/z-after\t" + ToHex(Sha256("z"))), std::string::npos)
      << text;
}

// Real mounts, made in a child process's own mount namespace (gone when it exits): a tmpfs below
// the root (another filesystem) and a bind mount of the root inside itself (a directory loop).
TEST_F(TreeScanTest, OtherFilesystemsAndBindMountLoopsAreRecordedNotDescended) {
  ASSERT_EQ(::mkdir((root_ + "/mnt").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((root_ + "/loop").c_str(), 0755), 0);
  WriteFile(root_ + "/top", "t");
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    if (::unshare(CLONE_NEWNS) != 0) ::_exit(10);
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ::_exit(11);
    if (::mount("tmpfs", (root_ + "/mnt").c_str(), "tmpfs", 0, "size=1m") != 0) ::_exit(12);
    const std::string inside = root_ + "/mnt/inside";
    int f = ::open(inside.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0 || ::write(f, "i", 1) != 1) ::_exit(13);
    ::close(f);
    if (::mount(root_.c_str(), (root_ + "/loop").c_str(), nullptr, MS_BIND, nullptr) != 0) {
      ::_exit(14);
    }
    std::string out;
    for (bool one_fs : {true, false}) {
      std::vector<FimRoot> roots = {
          MakeRoot(root_, [&](FimRoot& o) { o.one_filesystem = one_fs; })};
      ScanResult r = ScanTrees(roots, AllRoots(roots), TreeScanOptions{});
      out += one_fs ? "one_filesystem\n" : "any_filesystem\n";
      for (const ScannedFile& sf : r.files) out += "F\t" + sf.path + "\n";
      for (const ScanError& e : r.errors) out += "E\t" + e.path + "\t" + e.message + "\n";
    }
    if (::write(fds[1], out.data(), out.size()) != static_cast<ssize_t>(out.size())) ::_exit(15);
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child exit " << status;
  const size_t split = text.find("any_filesystem\n");
  ASSERT_NE(split, std::string::npos) << text;
  const std::string one_fs = text.substr(0, split);
  const std::string any_fs = text.substr(split);

  for (const std::string& t : {one_fs, any_fs}) {
    EXPECT_NE(t.find("F\t" + root_ + "/top\n"), std::string::npos) << t;
    EXPECT_NE(t.find("F\t" + root_ + "/mnt\n"), std::string::npos) << t;
    EXPECT_NE(t.find("F\t" + root_ + "/loop\n"), std::string::npos) << t;
    EXPECT_EQ(t.find(root_ + "/loop/"), std::string::npos) << t;  // the loop is not followed
    EXPECT_NE(t.find("E\t" + root_ + "/loop\tdirectory loop"), std::string::npos) << t;
  }
  EXPECT_EQ(one_fs.find(root_ + "/mnt/inside"), std::string::npos) << one_fs;
  EXPECT_NE(one_fs.find("E\t" + root_ + "/mnt\tanother filesystem"), std::string::npos) << one_fs;
  EXPECT_NE(any_fs.find("F\t" + root_ + "/mnt/inside\n"), std::string::npos) << any_fs;
}

TEST_F(TreeScanTest, MissingStartIsAnErrorNamingIt) {
  roots_ = {MakeRoot(dir_.Sub("absent"))};
  ScanResult r = ScanTrees(roots_, AllRoots(roots_), TreeScanOptions{});
  EXPECT_TRUE(r.files.empty());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].path, dir_.Sub("absent"));
  EXPECT_NE(r.errors[0].message.find("ENOENT"), std::string::npos) << r.errors[0].message;
}

TEST_F(TreeScanTest, EveryDirectoryIsAnnouncedBeforeItIsListed) {
  ASSERT_EQ(::mkdir((root_ + "/a").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((root_ + "/a/b").c_str(), 0755), 0);
  std::mutex mu;
  std::set<std::string> announced;
  // A file created from the callback must be found: it exists before the listing starts.
  roots_ = {MakeRoot(root_)};
  TreeScanOptions opts;
  opts.on_directory = [&](size_t root, const std::string& dir) {
    EXPECT_EQ(root, 0u);
    std::lock_guard<std::mutex> lock(mu);
    announced.insert(dir);
    WriteFile(dir + "/made-on-announce", "m");
  };
  ScanResult r = ScanTrees(roots_, AllRoots(roots_), opts);
  EXPECT_EQ(announced, (std::set<std::string>{root_, root_ + "/a", root_ + "/a/b"}));
  for (const std::string& d : announced) {
    EXPECT_NE(Find(r, d + "/made-on-announce"), nullptr) << d;
  }
}

}  // namespace
}  // namespace tripline::agent
