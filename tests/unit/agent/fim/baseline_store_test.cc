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

TEST(BaselineStore, WritesAreReadBackBeforeCommitAndKeptAfter) {
  testing::TempDir dir;
  const std::string db = dir.Sub("b.db");
  {
    auto store = BaselineStore::Open(db);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Replace({MakeRoot("/etc")}, {Scanned("/etc/a", File("a"))}, 1).ok());
    ASSERT_TRUE((*store)->Put("/etc/b", File("b")).ok());
    ASSERT_TRUE((*store)->Erase("/etc/a").ok());
    auto b = (*store)->Get("/etc/b");
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_TRUE(b->has_value());
    EXPECT_EQ((*b)->sha256(), Sha256("b"));
    auto a = (*store)->Get("/etc/a");
    ASSERT_TRUE(a.ok());
    EXPECT_FALSE(a->has_value());
    ASSERT_TRUE((*store)->Commit().ok());
  }
  auto store = BaselineStore::Open(db);
  ASSERT_TRUE(store.ok());
  absl::StatusOr<Baseline> loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->size(), 1u);
  EXPECT_EQ(loaded->at("/etc/b").sha256(), Sha256("b"));
}

TEST(BaselineStore, UncommittedWritesAreNotInTheFile) {
  testing::TempDir dir;
  const std::string db = dir.Sub("b.db");
  {
    auto store = BaselineStore::Open(db);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Replace({MakeRoot("/etc")}, {Scanned("/etc/a", File("a"))}, 1).ok());
    ASSERT_TRUE((*store)->Put("/etc/b", File("b")).ok());
  }
  auto store = BaselineStore::Open(db);
  ASSERT_TRUE(store.ok());
  absl::StatusOr<Baseline> loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->size(), 1u);
  EXPECT_EQ(loaded->count("/etc/b"), 0u);
}

TEST(BaselineStore, ListUnderTakesTheSubtreeAndNotItsNeighbours) {
  auto store = BaselineStore::OpenInMemory();
  ASSERT_TRUE(store.ok()) << store.status();
  for (const char* p : {"/etc/a", "/etc/a/x", "/etc/a/y/z", "/etc/a0", "/etc/a.d/x", "/etc/ab",
                        "/etc/a-b/x", "/etc"}) {
    ASSERT_TRUE((*store)->Put(p, File(p)).ok());
  }
  auto under = (*store)->ListUnder("/etc/a");
  ASSERT_TRUE(under.ok()) << under.status();
  std::vector<std::string> paths;
  for (const auto& [p, s] : *under) paths.push_back(p);
  EXPECT_EQ(paths, (std::vector<std::string>{"/etc/a/x", "/etc/a/y/z"}));
  auto all = (*store)->ListUnder("/");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 8u);
  auto scope = (*store)->LoadScope({"/etc/a", "/etc/ab"});
  ASSERT_TRUE(scope.ok());
  EXPECT_EQ(scope->size(), 4u);  // /etc/a, /etc/a/x, /etc/a/y/z, /etc/ab
  EXPECT_EQ(scope->count("/etc/a0"), 0u);
}

TEST(BaselineStore, FindInodeReturnsEveryNameOfTheInode) {
  auto store = BaselineStore::OpenInMemory();
  ASSERT_TRUE(store.ok());
  FileState one = File("x");
  one.set_device(7);
  one.set_inode(1234);
  FileState other_dev = one;
  other_dev.set_device(8);
  ASSERT_TRUE((*store)->Put("/etc/link2", one).ok());
  ASSERT_TRUE((*store)->Put("/etc/link1", one).ok());
  ASSERT_TRUE((*store)->Put("/mnt/same-inode-other-fs", other_dev).ok());
  ASSERT_TRUE((*store)->Replace({MakeRoot("/srv")}, {Scanned("/srv/l", one)}, 1).ok());
  ASSERT_TRUE((*store)->Put("/srv/m", one).ok());
  auto found = (*store)->FindInode(7, 1234);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 2u);
  EXPECT_EQ((*found)[0].first, "/srv/l");
  EXPECT_EQ((*found)[1].first, "/srv/m");
}

TEST(BaselineStore, AVersion1FileIsMigratedAndKeepsItsStates) {
  testing::TempDir dir;
  const std::string db = dir.Sub("v1.db");
  {
    // The schema version 1 wrote, with one row.
    auto raw = Database::Open(db, false);
    ASSERT_TRUE(raw.ok());
    ASSERT_TRUE((*raw)
                    ->Exec("CREATE TABLE fim_roots(path BLOB PRIMARY KEY, fingerprint BLOB NOT "
                           "NULL, scanned_unix_ns INTEGER NOT NULL) WITHOUT ROWID;"
                           "CREATE TABLE fim_files(path BLOB PRIMARY KEY, state BLOB NOT NULL) "
                           "WITHOUT ROWID; PRAGMA user_version=1;")
                    .ok());
    std::string bytes;
    File("old").SerializeToString(&bytes);
    auto ins = (*raw)->Prepare("INSERT INTO fim_files VALUES (?1, ?2)");
    ASSERT_TRUE(ins.ok());
    ins->BindBlob(1, "/etc/old").BindBlob(2, bytes);
    ASSERT_TRUE(ins->Run().ok());
  }
  auto store = BaselineStore::Open(db);
  ASSERT_TRUE(store.ok()) << store.status();
  auto old = (*store)->Get("/etc/old");
  ASSERT_TRUE(old.ok()) << old.status();
  ASSERT_TRUE(old->has_value());
  EXPECT_EQ((*old)->sha256(), Sha256("old"));
  ASSERT_TRUE((*store)->Put("/etc/new", File("new")).ok());
  ASSERT_TRUE((*store)->Commit().ok());
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
