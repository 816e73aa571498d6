// Reads the systemd journal (libsystemd's sd_journal) for the journald log sources: entries of
// the chosen units (all when none) with priority 0..max_priority become LogEvents whose line is
// MESSAGE and whose fields are the entry's unit, priority, identifier, pid, host and command.
//
// Where to resume is the entry's cursor, carried in LogEvent.journal_cursor and persisted by the
// OffsetLedger exactly like file offsets: only once the batch holding the entry is durable. After
// a restart the reader seeks to the durable cursor and skips that entry, so entries are neither
// lost nor repeated (as long as the journal still holds them: vacuumed entries are reported).
//
// Threads: Start() runs one thread per source; `emit` is called on it and may block. The thread
// sleeps in poll() on the journal's fd and an eventfd that Stop() signals.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/logs/log_parser.h"
#include "agent/logs/offset_ledger.h"
#include "platform/fs/unique_fd.h"
#include "platform/runtime/clock.h"
#include "tripline/v1/event.pb.h"

namespace tripline::agent {

struct JournalSource {
  std::string name;
  std::vector<std::string> units;  // _SYSTEMD_UNIT values; empty: every unit
  int max_priority = 7;            // 0 (emerg) .. 7 (debug)
  LogParser parser = LogParser::kRaw;
  std::string include;
  std::string exclude;
  bool start_at_beginning = false;  // without a durable cursor: the oldest entry, or new ones only
  size_t max_line = size_t{64} << 10;
};

class JournalReader {
 public:
  using EmitFn = std::function<bool(tripline::v1::Event)>;

  // `directory`: read the journal files there instead of the system's journal (tests, containers
  // with a mounted journal). `ledger` and `clock` outlive the reader.
  JournalReader(std::vector<JournalSource> sources, OffsetLedger* ledger, const Clock& clock,
                EmitFn emit, std::string directory = "");
  ~JournalReader();  // Stop()
  JournalReader(const JournalReader&) = delete;
  JournalReader& operator=(const JournalReader&) = delete;

  // Checks the filters, then starts one thread per source; a journal that cannot be opened is
  // reported by that thread as an AgentEvent (LOG_SOURCE_ERROR) and retried. Call after
  // OffsetLedger::Recover.
  absl::Status Start();

  // Wakes and joins the threads; safe more than once and without Start().
  void Stop();

 private:
  void Run(size_t source);
  bool Emit(tripline::v1::Event event);
  void Problem(const JournalSource& source, const std::string& message);

  const std::vector<JournalSource> sources_;
  OffsetLedger* const ledger_;
  const Clock& clock_;
  const EmitFn emit_;
  const std::string directory_;

  absl::Mutex start_mu_;
  bool stopped_ ABSL_GUARDED_BY(start_mu_) = false;
  std::atomic<bool> stop_{false};
  UniqueFd wake_fd_;
  std::vector<std::thread> threads_;
};

}  // namespace tripline::agent
