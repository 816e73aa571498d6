// A thin RAII layer over SQLite: one connection per Database (not shared between threads without
// the caller's lock), prepared statements that reset themselves, transactions that roll back unless
// committed, and numbered schema migrations tracked in PRAGMA user_version. Errors come back as
// absl::Status naming the database file and SQLite's message.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

struct sqlite3;
struct sqlite3_stmt;

namespace tripline {

class Database;

class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&&) = delete;
  Statement(const Statement&) = delete;
  ~Statement();

  // Parameters are 1-based, as in SQLite. Text and blobs are copied.
  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, std::string_view text);  // as TEXT
  Statement& BindBlob(int index, std::string_view bytes);
  Statement& BindNull(int index);

  // Runs one step: true when a row is available, false when done.
  absl::StatusOr<bool> Step();
  // Steps to completion, ignoring rows.
  absl::Status Run();
  // Resets for another execution and clears bindings.
  void Reset();

  int64_t ColumnInt(int col) const;
  std::string ColumnText(int col) const;  // TEXT or BLOB bytes; "" for NULL
  bool ColumnIsNull(int col) const;

 private:
  friend class Database;
  Statement(Database* db, sqlite3_stmt* stmt, bool cached = false)
      : db_(db), stmt_(stmt), cached_(cached) {}
  Database* db_;
  sqlite3_stmt* stmt_;
  bool cached_;  // goes back to db_'s cache instead of being finalized
};

class Database {
 public:
  // Opens (creating) `path` with WAL journaling, synchronous=FULL when `durable` (else NORMAL),
  // foreign keys on and a busy timeout.
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& path,
                                                        bool durable = true);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  absl::Status Exec(std::string_view sql);
  absl::StatusOr<Statement> Prepare(std::string_view sql);
  // Like Prepare, but the compiled statement is kept when the Statement is destroyed and reused
  // by the next call with the same text: for hot paths (an insert per event). Like the
  // connection itself, not for concurrent use.
  absl::StatusOr<Statement> PrepareCached(std::string_view sql);
  int64_t LastInsertId() const;
  int Changes() const;

  // Applies migrations[user_version..] in order, each in its own transaction; migration i brings
  // the schema to version i+1. A database newer than the program is refused (FailedPrecondition).
  absl::Status Migrate(const std::vector<std::string>& migrations);

  // "path: SQLite message" for the last error on this connection.
  absl::Status LastError(std::string_view what) const;
  const std::string& path() const { return path_; }

 private:
  friend class Statement;
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
  std::map<std::string, std::vector<sqlite3_stmt*>, std::less<>> cache_;  // by SQL text
};

// BEGIN IMMEDIATE on construction; ROLLBACK on destruction unless Commit() succeeded.
class Transaction {
 public:
  static absl::StatusOr<Transaction> Begin(Database* db);
  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction();
  absl::Status Commit();

 private:
  explicit Transaction(Database* db) : db_(db) {}
  Database* db_;
};

}  // namespace tripline
