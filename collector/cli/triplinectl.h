// The triplinectl command line: flags, where the collector address and the operator token come
// from, the channel's transport security, and the exit status. main.cc only hands it argv, the
// environment, the terminal width and the streams, so tests drive the whole program in-process.
//
//   triplinectl [--collector HOST:PORT] [--token-file F] [--plaintext] [--ca-file F]
//               [--cert-file F --key-file F] [--json] [--timeout 10s] COMMAND
//
// Exit status: 0 ok; 1 the collector answered with an error; 2 usage or local setup error (bad
// flag, unreadable token or TLS file); 3 the collector could not be reached (UNAVAILABLE, or no
// answer before --timeout).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"

namespace tripline::cli {

inline constexpr char kDefaultCollector[] = "127.0.0.1:7443";
inline constexpr int kExitOk = 0;
inline constexpr int kExitRpcError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;

// What the program sees of the world besides its arguments.
struct Environment {
  // The value of an environment variable, or nullopt when unset.
  std::function<std::optional<std::string>(const std::string&)> getenv;
  int terminal_columns = 120;
  int64_t now_unix_ns = 0;
};

// The process's environment (::getenv), the width of `fd` when it is a terminal (else 120) and
// the system clock.
Environment ProcessEnvironment(int fd);

// Columns of the terminal on `fd` (TIOCGWINSZ); when `fd` is not a terminal, $COLUMNS if it is
// between 20 and 1000, else 120.
int TerminalColumns(int fd);

// The collector's address: `flag` if set, else $TRIPLINE_COLLECTOR, else 127.0.0.1:7443.
std::string CollectorAddress(const std::string& flag, const Environment& env);

// The token file to read: `flag` if set, else $TRIPLINE_TOKEN_FILE, else
// $HOME/.config/tripline/token. InvalidArgument when none applies (no HOME).
absl::StatusOr<std::string> TokenPath(const std::string& flag, const Environment& env);

// The file's content with surrounding whitespace trimmed. Errors name the file and the reason
// (missing, empty, not fit for a header); they never contain the token.
absl::StatusOr<std::string> ReadOperatorToken(const std::string& path);

struct TransportOptions {
  bool plaintext = false;
  std::string ca_file;    // pinned CA; empty: the system's roots
  std::string cert_file;  // client certificate for mTLS (with key_file)
  std::string key_file;
};

// TLS credentials (or insecure ones when `plaintext`); errors name the flag and file.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeTransportCredentials(
    const TransportOptions& options);

// Runs triplinectl with `argv` (argv[0] is the program name). Tables and JSON go to `out`,
// errors ("triplinectl: ...") and usage to `err` (--help to `out`). Returns the exit status.
int RunTriplinectl(int argc, const char* const* argv, const Environment& env, std::ostream& out,
                   std::ostream& err);

}  // namespace tripline::cli
