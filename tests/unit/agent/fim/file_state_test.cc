#include "agent/fim/file_state.h"

#include <fcntl.h>
#include <unistd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "platform/crypto/digest.h"
#include "platform/fs/file_util.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

using tripline::v1::FileState;

FileState Regular(std::string sha, int64_t mtime) {
  FileState s;
  s.set_mode(S_IFREG | 0644);
  s.set_size(10);
  s.set_inode(7);
  s.set_mtime_ns(mtime);
  s.set_ctime_ns(mtime);
  s.set_nlink(1);
  s.set_sha256(std::move(sha));
  return s;
}

TEST(CompareStates, SameBytesWithNewTimestampsIsNoChange) {
  FileState a = Regular(Sha256("x"), 1);
  FileState b = Regular(Sha256("x"), 2);
  b.set_ctime_ns(99);
  EXPECT_EQ(CompareStates(a, b), StateChange::kNone);
}

TEST(CompareStates, DifferentBytesIsContent) {
  EXPECT_EQ(CompareStates(Regular(Sha256("x"), 1), Regular(Sha256("y"), 1)), StateChange::kContent);
}

TEST(CompareStates, ModeOrOwnerIsAttrib) {
  FileState a = Regular(Sha256("x"), 1);
  FileState b = a;
  b.set_mode(S_IFREG | 0600);
  EXPECT_EQ(CompareStates(a, b), StateChange::kAttrib);
  b = a;
  b.set_uid(1000);
  EXPECT_EQ(CompareStates(a, b), StateChange::kAttrib);
}

TEST(CompareStates, UnhashedAfterComparesByMtime) {
  FileState a = Regular(Sha256("x"), 1);
  FileState b = Regular("", 1);  // e.g. unreadable now
  EXPECT_EQ(CompareStates(a, b), StateChange::kNone);
  b.set_mtime_ns(2);
  EXPECT_EQ(CompareStates(a, b), StateChange::kContent);
  EXPECT_EQ(ChangedAttrs(a, b), (std::vector<std::string_view>{"mtime"}));
}

TEST(CompareStates, AHashWhereThereWasNoneIsAContentChange) {
  // The file was being written (or unreadable) when last read: nothing vouches for its bytes.
  FileState a = Regular("", 1);
  FileState b = Regular(Sha256("x"), 1);
  EXPECT_EQ(CompareStates(a, b), StateChange::kContent);
  EXPECT_EQ(ChangedAttrs(a, b), (std::vector<std::string_view>{"sha256"}));
  EXPECT_EQ(CompareStates(a, b, kAttrSize | kAttrMode), StateChange::kNone);  // hash not compared
}

TEST(CompareStates, DirectoryEntriesChangingIsNotADirectoryChange) {
  FileState a;
  a.set_mode(S_IFDIR | 0755);
  a.set_inode(3);
  a.set_size(4096);
  a.set_nlink(2);
  FileState b = a;
  b.set_size(8192);
  b.set_nlink(3);
  b.set_mtime_ns(5);
  EXPECT_EQ(CompareStates(a, b), StateChange::kNone);
  b.set_inode(4);  // replaced by another directory
  EXPECT_EQ(CompareStates(a, b), StateChange::kContent);
}

TEST(ReadFileState, HashesRegularFilesUpToTheCap) {
  testing::TempDir dir;
  const std::string f = dir.Sub("f");
  ASSERT_TRUE(WriteFileAtomic(f, "hello", 0640).ok());
  FileStateRead r = ReadFileStateAt(AT_FDCWD, f.c_str(), 1024);
  ASSERT_TRUE(r.exists);
  EXPECT_EQ(r.state.sha256(), Sha256("hello"));
  EXPECT_EQ(r.state.size(), 5u);
  EXPECT_EQ(r.state.mode() & 0777, 0640u);
  EXPECT_EQ(r.bytes_hashed, 5u);
  EXPECT_TRUE(r.note.empty());

  r = ReadFileStateAt(AT_FDCWD, f.c_str(), 4);
  ASSERT_TRUE(r.exists);
  EXPECT_TRUE(r.state.sha256().empty());
  EXPECT_EQ(r.state.size(), 5u);
  EXPECT_THAT(r.note, ::testing::HasSubstr("max_hash_bytes"));
}

TEST(ReadFileState, MissingPathDoesNotExist) {
  testing::TempDir dir;
  EXPECT_FALSE(ReadFileStateAt(AT_FDCWD, dir.Sub("nope").c_str(), 1024).exists);
  EXPECT_FALSE(ReadFileStateAt(AT_FDCWD, dir.Sub("nope/deeper").c_str(), 1024).exists);
}

TEST(ReadFileState, FifoIsStatedNotOpened) {
  testing::TempDir dir;
  const std::string fifo = dir.Sub("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  FileStateRead r = ReadFileStateAt(AT_FDCWD, fifo.c_str(), 1024);
  ASSERT_TRUE(r.exists);
  EXPECT_TRUE(S_ISFIFO(r.state.mode()));
  EXPECT_TRUE(r.state.sha256().empty());
}

}  // namespace
}  // namespace tripline::agent
