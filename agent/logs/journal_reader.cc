#include "agent/logs/journal_reader.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_format.h"
#include "platform/runtime/errno_status.h"
#include "platform/runtime/logging.h"
#include "re2/re2.h"

namespace tripline::agent {
namespace {

constexpr int kRetryMs = 5000;

struct JournalCloser {
  void operator()(sd_journal* j) const { sd_journal_close(j); }
};
using JournalPtr = std::unique_ptr<sd_journal, JournalCloser>;

std::string Errno(int negative_errno) {
  return std::string(ErrnoStatus(-negative_errno, "", "").message());
}

// The value of `field` in the current entry ("" when absent).
std::string Data(sd_journal* j, const char* field) {
  const void* data = nullptr;
  size_t len = 0;
  if (sd_journal_get_data(j, field, &data, &len) < 0) return "";
  const size_t prefix = std::strlen(field) + 1;  // "FIELD="
  if (len < prefix) return "";
  return std::string(static_cast<const char*>(data) + prefix, len - prefix);
}

std::unique_ptr<RE2> Compile(const std::string& re) {
  if (re.empty()) return nullptr;
  RE2::Options opts(RE2::Latin1);
  opts.set_log_errors(false);
  return std::make_unique<RE2>(re, opts);
}

}  // namespace

JournalReader::JournalReader(std::vector<JournalSource> sources, OffsetLedger* ledger,
                             const Clock& clock, EmitFn emit, std::string directory)
    : sources_(std::move(sources)),
      ledger_(ledger),
      clock_(clock),
      emit_(std::move(emit)),
      directory_(std::move(directory)) {}

JournalReader::~JournalReader() { Stop(); }

absl::Status JournalReader::Start() {
  absl::MutexLock lock(&start_mu_);
  if (stopped_ || !threads_.empty()) return absl::OkStatus();
  for (const JournalSource& s : sources_) {
    for (const std::string& re : {s.include, s.exclude}) {
      if (std::unique_ptr<RE2> c = Compile(re); c && !c->ok()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("logs: source %s: bad RE2 '%s': %s", s.name, re, c->error()));
      }
    }
  }
  int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) return ErrnoStatus(errno, "logs: eventfd", "");
  wake_fd_ = UniqueFd(efd);
  for (size_t i = 0; i < sources_.size(); ++i) threads_.emplace_back([this, i] { Run(i); });
  return absl::OkStatus();
}

void JournalReader::Stop() {
  absl::MutexLock lock(&start_mu_);
  stopped_ = true;
  stop_.store(true);
  if (wake_fd_.valid()) {
    uint64_t one = 1;
    (void)!::write(wake_fd_.get(), &one, sizeof(one));
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

bool JournalReader::Emit(tripline::v1::Event event) {
  if (!emit_(std::move(event))) {
    stop_.store(true);
    return false;
  }
  return true;
}

void JournalReader::Problem(const JournalSource& source, const std::string& message) {
  spdlog::warn("logs: source {}: {}", source.name, message);
  tripline::v1::Event ev;
  ev.set_time_unix_ns(clock_.NowUnixNanos());
  ev.mutable_agent()->set_kind(tripline::v1::AgentEvent::LOG_SOURCE_ERROR);
  ev.mutable_agent()->set_message(absl::StrFormat("source %s: %s", source.name, message));
  Emit(std::move(ev));
}

void JournalReader::Run(size_t index) {
  const JournalSource& src = sources_[index];
  std::unique_ptr<RE2> include = Compile(src.include);
  std::unique_ptr<RE2> exclude = Compile(src.exclude);
  bool reported_open = false;
  auto wait_ms = [this](int fd, int timeout_ms) {
    struct pollfd fds[2] = {{wake_fd_.get(), POLLIN, 0}, {fd, POLLIN, 0}};
    ::poll(fds, fd >= 0 ? 2 : 1, timeout_ms);
  };
  while (!stop_.load()) {
    sd_journal* raw = nullptr;
    int r = directory_.empty() ? sd_journal_open(&raw, SD_JOURNAL_LOCAL_ONLY)
                               : sd_journal_open_directory(&raw, directory_.c_str(), 0);
    if (r < 0) {
      if (!reported_open) {
        Problem(src, absl::StrFormat("cannot open the journal: %s; trying again every %ds",
                                     Errno(r), kRetryMs / 1000));
        reported_open = true;
      }
      wait_ms(-1, kRetryMs);
      continue;
    }
    JournalPtr j(raw);
    for (const std::string& unit : src.units) {
      const std::string match = "_SYSTEMD_UNIT=" + unit;
      sd_journal_add_match(j.get(), match.data(), match.size());
    }
    if (src.max_priority < 7) {
      if (!src.units.empty()) sd_journal_add_conjunction(j.get());
      for (int p = 0; p <= src.max_priority; ++p) {
        const std::string match = absl::StrFormat("PRIORITY=%d", p);
        sd_journal_add_match(j.get(), match.data(), match.size());
      }
    }
    absl::StatusOr<std::string> cursor = ledger_->JournalCursor(src.name);
    // Position on the last entry already sent (or before the first to send): next() goes on.
    if (cursor.ok() && !cursor->empty() && sd_journal_seek_cursor(j.get(), cursor->c_str()) >= 0) {
      if (sd_journal_next(j.get()) > 0) {
        if (sd_journal_test_cursor(j.get(), cursor->c_str()) <= 0) {
          Problem(src, "the entry of the durable cursor is gone from the journal (vacuumed?); "
                       "going on from the next one there is");
          sd_journal_previous(j.get());
        }
      }
    } else if (src.start_at_beginning) {
      sd_journal_seek_head(j.get());
    } else {
      sd_journal_seek_tail(j.get());
      sd_journal_previous(j.get());  // now on the last entry: next() gives only new ones
    }
    spdlog::info("logs: following the journal source={} units={} max_priority={}", src.name,
                 src.units.size(), src.max_priority);
    const int fd = sd_journal_get_fd(j.get());
    while (!stop_.load()) {
      r = sd_journal_next(j.get());
      if (r < 0) {
        Problem(src, absl::StrFormat("reading the journal: %s", Errno(r)));
        break;  // reopen
      }
      if (r == 0) {
        uint64_t timeout_usec = 0;
        int timeout_ms = -1;
        if (sd_journal_get_timeout(j.get(), &timeout_usec) >= 0 && timeout_usec != UINT64_MAX) {
          timeout_ms = 1000;  // libsystemd asks to be woken; a second is enough to look again
        }
        wait_ms(fd, timeout_ms < 0 ? kRetryMs : timeout_ms);
        sd_journal_process(j.get());
        continue;
      }
      char* c = nullptr;
      if (sd_journal_get_cursor(j.get(), &c) < 0) continue;
      std::string entry_cursor(c);
      free(c);
      std::string line = Data(j.get(), "MESSAGE");
      bool truncated = false;
      if (line.size() > src.max_line) {
        line.resize(src.max_line);
        truncated = true;
      }
      const re2::StringPiece piece(line.data(), line.size());
      if ((include && !RE2::PartialMatch(piece, *include)) ||
          (exclude && RE2::PartialMatch(piece, *exclude))) {
        continue;
      }
      tripline::v1::Event ev;
      ev.set_time_unix_ns(clock_.NowUnixNanos());
      tripline::v1::LogEvent* log = ev.mutable_log();
      log->set_source(src.name);
      log->set_path("journal");
      log->set_truncated(truncated);
      log->set_journal_cursor(entry_cursor);
      auto& fields = *log->mutable_fields();
      for (auto [name, field] : {std::pair{"unit", "_SYSTEMD_UNIT"}, {"priority", "PRIORITY"},
                                 {"app", "SYSLOG_IDENTIFIER"}, {"pid", "_PID"},
                                 {"host", "_HOSTNAME"}, {"comm", "_COMM"},
                                 {"facility", "SYSLOG_FACILITY"}}) {
        std::string v = Data(j.get(), field);
        if (!v.empty()) fields[name] = std::move(v);
      }
      uint64_t usec = 0;
      if (sd_journal_get_realtime_usec(j.get(), &usec) >= 0) {
        fields["realtime_usec"] = absl::StrFormat("%d", usec);
      }
      for (auto& [k, v] : ParseLogLine(src.parser, line)) fields[k] = v;
      log->set_line(std::move(line));
      if (!Emit(std::move(ev))) return;
    }
  }
}

}  // namespace tripline::agent
