#include "platform/store/sqlite.h"

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace tripline {
namespace {

const std::vector<std::string> kSchema = {
    "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, data BLOB)",
    "ALTER TABLE t ADD COLUMN extra INTEGER NOT NULL DEFAULT 0",
};

TEST(Sqlite, MigratesOnceAndStoresBinaryBlobs) {
  testing::TempDir dir;
  {
    auto db = Database::Open(dir.Sub("s.db"));
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE((*db)->Migrate(kSchema).ok());
    auto ins = (*db)->Prepare("INSERT INTO t(name, data) VALUES (?, ?)");
    ASSERT_TRUE(ins.ok());
    const std::string blob("\0\xff\x01", 3);
    ASSERT_TRUE(ins->Bind(1, std::string_view("a")).BindBlob(2, blob).Run().ok());
  }
  auto db = Database::Open(dir.Sub("s.db"));
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Migrate(kSchema).ok());  // already at version 2: no-op
  auto q = (*db)->Prepare("SELECT data, extra FROM t");
  ASSERT_TRUE(q.ok());
  ASSERT_TRUE(*q->Step());
  EXPECT_EQ(q->ColumnText(0), std::string("\0\xff\x01", 3));
  EXPECT_EQ(q->ColumnInt(1), 0);
}

TEST(Sqlite, RefusesADatabaseNewerThanTheProgram) {
  testing::TempDir dir;
  auto db = Database::Open(dir.Sub("s.db"));
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Migrate(kSchema).ok());
  absl::Status st = (*db)->Migrate({kSchema[0]});
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
}

TEST(Sqlite, TransactionRollsBackUnlessCommitted) {
  testing::TempDir dir;
  auto db = Database::Open(dir.Sub("s.db"));
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Migrate(kSchema).ok());
  {
    auto txn = Transaction::Begin(db->get());
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE((*db)->Exec("INSERT INTO t(name) VALUES ('lost')").ok());
  }
  {
    auto txn = Transaction::Begin(db->get());
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE((*db)->Exec("INSERT INTO t(name) VALUES ('kept')").ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  auto q = (*db)->Prepare("SELECT group_concat(name) FROM t");
  ASSERT_TRUE(q.ok());
  ASSERT_TRUE(*q->Step());
  EXPECT_EQ(q->ColumnText(0), "kept");
}

TEST(Sqlite, ErrorsNameTheDatabase) {
  testing::TempDir dir;
  auto db = Database::Open(dir.Sub("s.db"));
  ASSERT_TRUE(db.ok());
  auto bad = (*db)->Prepare("SELECT * FROM missing");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(dir.Sub("s.db")), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace tripline

namespace tripline {
namespace {

TEST(Database, CachedStatementsAreReusedWithFreshBindings) {
  tripline::testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(dir.Sub("cache.db"));
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE((*db)->Exec("CREATE TABLE t (k INTEGER, v TEXT)").ok());
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<Statement> s = (*db)->PrepareCached("INSERT INTO t (k, v) VALUES (?, ?)");
    ASSERT_TRUE(s.ok()) << s.status();
    if (i != 1) s->Bind(2, "x");  // the second insert binds no v: it must not inherit "x"
    s->Bind(1, i);
    ASSERT_TRUE(s->Run().ok());
  }
  absl::StatusOr<Statement> q = (*db)->PrepareCached("SELECT k, v FROM t ORDER BY k");
  ASSERT_TRUE(q.ok());
  std::vector<std::string> rows;
  while (*q->Step()) {
    rows.push_back(std::to_string(q->ColumnInt(0)) + (q->ColumnIsNull(1) ? "-" : q->ColumnText(1)));
  }
  EXPECT_EQ(rows, (std::vector<std::string>{"0x", "1-", "2x"}));
  absl::StatusOr<Statement> bad = (*db)->PrepareCached("SELECT nope FROM t");
  EXPECT_FALSE(bad.ok());
}

}  // namespace
}  // namespace tripline
