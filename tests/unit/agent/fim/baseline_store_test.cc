#include "agent/fim/baseline_store.h"

#include <sys/stat.h>

#include <functional>

#include "agent/fim/baseline_diff.h"
#include "gtest/gtest.h"
#include "platform/crypto/digest.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

using tripline::v1::FileState;

// A root with default options at `path`, changed by `edit`.
FimRoot MakeRoot(std::string path, const std::function<void(FimRoot&)>& edit = nullptr) {
  FimRoot r;
  r.path = std::move(path);
  if (edit) edit(r);
  return r;
}

FileState File(const std::string& contents, uint32_t perm = 0644) {
  FileState s;
  s.set_mode(S_IFREG | perm);
  s.set_size(contents.size());
  s.set_inode(contents.size() + 100);
  s.set_nlink(1);
  s.set_sha256(Sha256(contents));
  return s;
}

ScannedFile Scanned(const std::string& path, const FileState& s) {
  return ScannedFile{path, 0, s, ""};
}

TEST(BaselineStore, ReplaceThenReopenLoadsTheSameStatesAndRoots) {
  testing::TempDir dir;
  const std::string db = dir.Sub("fim-baseline.db");
  std::vector<FimRoot> roots = {MakeRoot("/etc"), MakeRoot("/usr/bin")};
  {
    auto store = BaselineStore::Open(db);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)
                    ->Replace(roots,
                              {Scanned("/etc/passwd", File("root:x:0:0")),
                               Scanned(std::string("/etc/caf\xe9", 9), File("bytes"))},
                              42)
                    .ok());
  }
  auto store = BaselineStore::Open(db);
  ASSERT_TRUE(store.ok());
  absl::StatusOr<Baseline> loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_EQ(loaded->at("/etc/passwd").sha256(), Sha256("root:x:0:0"));
  EXPECT_EQ(loaded->at(std::string("/etc/caf\xe9", 9)).sha256(), Sha256("bytes"));
  auto fps = (*store)->LoadRoots();
  ASSERT_TRUE(fps.ok());
  EXPECT_EQ(fps->at("/etc"), RootFingerprint(roots[0]));
  EXPECT_EQ(fps->at("/usr/bin"), RootFingerprint(roots[1]));
}

TEST(BaselineStore, ApplyUpsertsAndDeletes) {
  testing::TempDir dir;
  auto store = BaselineStore::Open(dir.Sub("b.db"));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)
                  ->Replace({MakeRoot("/etc")},
                            {Scanned("/etc/a", File("a")), Scanned("/etc/b", File("b"))}, 1)
                  .ok());
  ASSERT_TRUE((*store)
                  ->Apply({{"/etc/a", File("a2")}, {"/etc/b", std::nullopt}, {"/etc/c", File("c")}})
                  .ok());
  absl::StatusOr<Baseline> loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_EQ(loaded->at("/etc/a").sha256(), Sha256("a2"));
  EXPECT_EQ(loaded->count("/etc/b"), 0u);
  EXPECT_EQ(loaded->at("/etc/c").sha256(), Sha256("c"));
}

TEST(BaselineStore, AFileThatIsNotABaselineIsRefusedNamingIt) {
  testing::TempDir dir;
  const std::string path = dir.Sub("junk.db");
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("this is not an SQLite database, just text long enough to look like a header", f);
  std::fclose(f);
  auto store = BaselineStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find(path), std::string::npos) << store.status();
}

TEST(RootFingerprint, ChangesWithEveryOptionThatChangesARecord) {
  FimRoot base = MakeRoot("/etc");
  const std::string fp = RootFingerprint(base);
  FimRoot r = base;
  r.recursive = false;
  EXPECT_NE(RootFingerprint(r), fp);
  r = base;
  r.exclude = {"*.swp"};
  EXPECT_NE(RootFingerprint(r), fp);
  r = base;
  r.attrs = kAllAttrs;
  EXPECT_NE(RootFingerprint(r), fp);
  r = base;
  r.max_hash_bytes = 1;
  EXPECT_NE(RootFingerprint(r), fp);
  r = base;
  r.one_filesystem = false;
  EXPECT_NE(RootFingerprint(r), fp);
  EXPECT_EQ(RootFingerprint(base), fp);
}

TEST(DiffBaseline, AddedRemovedAndChangedWithTheirAttributesInsideTheScopeOnly) {
  Baseline before = {{"/etc", FileState()},        {"/etc/same", File("s")},
                     {"/etc/content", File("v1")}, {"/etc/perm", File("p", 0644)},
                     {"/etc/gone", File("g")},     {"/other/untouched", File("o")}};
  before["/etc"].set_mode(S_IFDIR | 0755);
  ScanResult scan;
  FileState dir = before["/etc"];
  dir.set_mtime_ns(123);  // a directory's mtime moves with its entries: not a change
  scan.files = {Scanned("/etc", dir), Scanned("/etc/content", File("v2")),
                Scanned("/etc/new", File("n")), Scanned("/etc/perm", File("p", 0600)),
                Scanned("/etc/same", File("s"))};
  std::vector<FimRoot> roots = {MakeRoot("/etc")};
  std::vector<FileChange> d = DiffBaseline(before, scan, roots, {"/etc"});
  ASSERT_EQ(d.size(), 4u);
  EXPECT_EQ(d[0].path, "/etc/content");
  EXPECT_EQ(d[0].kind, FileChange::kChanged);
  EXPECT_TRUE(d[0].content);
  EXPECT_EQ(d[0].attrs, (std::vector<std::string_view>{"sha256"}));
  EXPECT_EQ(d[1].path, "/etc/gone");
  EXPECT_EQ(d[1].kind, FileChange::kRemoved);
  EXPECT_EQ(d[2].path, "/etc/new");
  EXPECT_EQ(d[2].kind, FileChange::kAdded);
  EXPECT_EQ(d[3].path, "/etc/perm");
  EXPECT_FALSE(d[3].content);
  EXPECT_EQ(d[3].attrs, (std::vector<std::string_view>{"mode"}));
}

}  // namespace
}  // namespace tripline::agent
