#include "agent/fim/one_shot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>

#include "gtest/gtest.h"
#include "platform/crypto/digest.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

// A root with default options at `path`, changed by `edit`.
FimRoot MakeRoot(std::string path, const std::function<void(FimRoot&)>& edit = nullptr) {
  FimRoot r;
  r.path = std::move(path);
  if (edit) edit(r);
  return r;
}

void WriteFile(const std::string& path, const std::string& contents) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, contents.data(), contents.size()), static_cast<ssize_t>(contents.size()));
  ASSERT_EQ(::close(fd), 0);
}

class OneShotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.Sub("root");
    ASSERT_EQ(::mkdir(root_.c_str(), 0755), 0);
    options_.baseline_path = dir_.Sub("fim-baseline.db");
  }
  std::string P(const std::string& name) const { return root_ + "/" + name; }

  // path -> "added" / "removed" / "changed:attr,attr"
  std::map<std::string, std::string> Check() {
    absl::StatusOr<CheckReport> report = RunCheck(options_, SystemClock());
    EXPECT_TRUE(report.ok()) << report.status();
    std::map<std::string, std::string> out;
    if (!report.ok()) return out;
    for (const FileChange& c : report->changes) {
      std::string what = c.kind == FileChange::kAdded     ? "added"
                         : c.kind == FileChange::kRemoved ? "removed"
                                                          : "changed:";
      std::vector<std::string_view> attrs = c.attrs;
      if (c.after.inode() != c.before.inode() &&
          (c.path.ends_with("/symlink") || c.path.ends_with("/becomes-dir"))) {
        // A name removed and made again may or may not get its freed inode back.
        attrs.erase(std::find(attrs.begin(), attrs.end(), "inode"));
      }
      for (size_t i = 0; i < attrs.size(); ++i) {
        what += (i ? "," : "") + std::string(attrs[i]);
      }
      out[c.path] = what;
    }
    return out;
  }

  testing::TempDir dir_;
  std::string root_;
  OneShotOptions options_;
};

TEST_F(OneShotTest, CheckWithoutABaselineSaysToScanFirst) {
  options_.roots = {MakeRoot(root_)};
  absl::StatusOr<CheckReport> report = RunCheck(options_, SystemClock());
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(report.status()));
  EXPECT_NE(report.status().message().find("tripline-agent scan"), std::string::npos);
}

TEST_F(OneShotTest, UnchangedTreeChecksClean) {
  WriteFile(P("a"), "a");
  options_.roots = {MakeRoot(root_)};
  absl::StatusOr<ScanReport> scan = RunScan(options_, SystemClock());
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_EQ(scan->files, 2u);
  EXPECT_TRUE(Check().empty());
  absl::StatusOr<CheckReport> report = RunCheck(options_, SystemClock());
  ASSERT_TRUE(report.ok());
  EXPECT_NE(CheckReportText(*report).find("no changes: 0 added, 0 removed, 0 changed"),
            std::string::npos);
}

// The scripted change set: each kind of change an attacker or an admin makes is reported with the
// attributes that show it.
TEST_F(OneShotTest, EveryScriptedChangeIsReportedWithItsAttributes) {
  WriteFile(P("content"), "original");
  WriteFile(P("mode"), "m");
  WriteFile(P("owner"), "o");
  WriteFile(P("renamed"), "r");
  WriteFile(P("deleted"), "d");
  WriteFile(P("linked"), "l");
  ASSERT_EQ(::symlink("/etc/passwd", P("symlink").c_str()), 0);
  WriteFile(P("becomes-dir"), "f");
  WriteFile(P("longer"), "12345");
  WriteFile(P("sneaky"), "aaaa");
  options_.roots = {MakeRoot(root_)};
  ASSERT_TRUE(RunScan(options_, SystemClock()).ok());

  WriteFile(P("content"), "tampered");  // same length: only the hash shows it
  ASSERT_EQ(::chmod(P("mode").c_str(), 04755), 0);
  ASSERT_EQ(::chown(P("owner").c_str(), 1234, 5678), 0);
  ASSERT_EQ(::rename(P("renamed").c_str(), P("renamed.new").c_str()), 0);
  ASSERT_EQ(::unlink(P("deleted").c_str()), 0);
  ASSERT_EQ(::link(P("linked").c_str(), P("hardlink").c_str()), 0);
  ASSERT_EQ(::unlink(P("symlink").c_str()), 0);
  ASSERT_EQ(::symlink("/etc/shadow", P("symlink").c_str()), 0);
  ASSERT_EQ(::unlink(P("becomes-dir").c_str()), 0);
  ASSERT_EQ(::mkdir(P("becomes-dir").c_str(), 0755), 0);
  const std::string non_utf8 = P("caf\xe9\xff");
  WriteFile(non_utf8, "bytes");
  WriteFile(P("longer"), "123456");
  struct stat before;
  ASSERT_EQ(::stat(P("sneaky").c_str(), &before), 0);
  WriteFile(P("sneaky"), "bbbb");  // same size, then the mtime put back as `touch -r` does
  struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, P("sneaky").c_str(), times, 0), 0);

  std::map<std::string, std::string> got = Check();
  std::map<std::string, std::string> want = {
      {P("content"), "changed:sha256"},
      {P("mode"), "changed:mode"},
      {P("owner"), "changed:owner"},
      {P("renamed"), "removed"},
      {P("renamed.new"), "added"},
      {P("deleted"), "removed"},
      {P("linked"), "changed:links"},
      {P("hardlink"), "added"},
      {P("symlink"), "changed:target"},
      {P("becomes-dir"), "changed:type,size,mode,links"},
      {non_utf8, "added"},
      {P("longer"), "changed:size,sha256"},
      {P("sneaky"), "changed:sha256"},
  };
  EXPECT_EQ(got, want);

  absl::StatusOr<CheckReport> report = RunCheck(options_, SystemClock());
  ASSERT_TRUE(report.ok());
  const std::string text = CheckReportText(*report);
  EXPECT_NE(text.find("changed: " + P("mode") + " (mode)\n  mode: 0644 -> 4755\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("  owner: 0:0 -> 1234:5678\n"), std::string::npos) << text;
  EXPECT_NE(text.find("added: " + root_ + "/caf\\xe9\\xff\n"), std::string::npos) << text;
  EXPECT_NE(text.find("changes: 3 added, 2 removed, 8 changed;"), std::string::npos) << text;
  const std::string json = CheckReportJson(*report);
  EXPECT_NE(json.find("\"summary\":{\"added\":3,\"removed\":2,\"changed\":8,"), std::string::npos)
      << json;
  EXPECT_NE(json.find("\"attributes\":[\"mode\"]"), std::string::npos);
}

TEST_F(OneShotTest, TimesAreComparedWhenARootAsksForThem) {
  WriteFile(P("f"), "same");
  options_.roots = {MakeRoot(root_, [](FimRoot& o) { o.attrs = kAllAttrs; })};
  ASSERT_TRUE(RunScan(options_, SystemClock()).ok());
  struct timespec times[2] = {{1, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, P("f").c_str(), times, 0), 0);
  EXPECT_EQ(Check(), (std::map<std::string, std::string>{{P("f"), "changed:mtime,ctime"}}));
}

TEST_F(OneShotTest, ChangedRootOptionsAreAWarningNotSilence) {
  WriteFile(P("f"), "x");
  options_.roots = {MakeRoot(root_)};
  ASSERT_TRUE(RunScan(options_, SystemClock()).ok());
  options_.roots[0].exclude = {"nothing-matches"};
  absl::StatusOr<CheckReport> report = RunCheck(options_, SystemClock());
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report->warnings.size(), 1u);
  EXPECT_NE(report->warnings[0].find("options"), std::string::npos);
}

}  // namespace
}  // namespace tripline::agent
