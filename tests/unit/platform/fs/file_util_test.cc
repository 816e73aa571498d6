#include "platform/fs/file_util.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace tripline {
namespace {

TEST(FileUtil, AtomicWriteReplacesContentsWithMode) {
  testing::TempDir dir;
  const std::string path = dir.Sub("f");
  ASSERT_TRUE(WriteFileAtomic(path, "one", 0600).ok());
  ASSERT_TRUE(WriteFileAtomic(path, "two", 0640).ok());
  EXPECT_EQ(*ReadFileToString(path), "two");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
}

TEST(FileUtil, ReadRefusesFilesOverTheLimitAndNamesMissingOnes) {
  testing::TempDir dir;
  const std::string path = dir.Sub("f");
  ASSERT_TRUE(WriteFileAtomic(path, std::string(100, 'x'), 0600).ok());
  EXPECT_EQ(ReadFileToString(path, 99).status().code(), absl::StatusCode::kResourceExhausted);
  auto missing = ReadFileToString(dir.Sub("nope"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("ENOENT"), std::string::npos) << missing.status();
}

TEST(FileUtil, MakeDirsCreatesParentsAndRefusesAFile) {
  testing::TempDir dir;
  EXPECT_TRUE(MakeDirs(dir.Sub("a/b/c"), 0700).ok());
  EXPECT_TRUE(MakeDirs(dir.Sub("a/b/c"), 0700).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("file"), "x", 0600).ok());
  EXPECT_FALSE(MakeDirs(dir.Sub("file"), 0700).ok());
}

}  // namespace
}  // namespace tripline
