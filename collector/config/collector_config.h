// collector.yaml: where the collector listens, how it secures the connection, where it keeps its
// data, which rules it runs and how it reaches EC2. Every error names file:line:col and the key;
// unknown keys are errors. Secrets (tokens) are read from their files by ReadSecretFile and never
// logged. Loading is pure: no threads, no state.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "platform/net/grpc_credentials.h"

namespace tripline::collector {

struct AwsConfig {
  std::string region = "us-east-1";
  std::string endpoint;  // empty: https://ec2.<region>.amazonaws.com
  std::string ca_file;
  std::string isolation_security_group;  // required when a rule responds with isolate
};

// What the collector does when a rule asks for a response.
enum class ResponseMode { kAuto, kOff };

// Who may call the operator service besides holders of database tokens (see collector/auth).
struct OperatorAccess {
  // Keyed-hash secret for operator tokens (32 random bytes, 0600, created on first use).
  // Default: operator-token.key next to the database.
  std::string token_key_file;
  // Client certificate common name -> role ("read", "respond", "admin"), honoured when the
  // server verifies client certificates (tls.client_ca_file).
  std::vector<std::pair<std::string, std::string>> cert_roles;
};

struct CollectorConfig {
  std::string path;  // the file this came from, for messages
  std::string listen = "127.0.0.1:7443";
  ServerTlsOptions tls;
  std::string database = "/var/lib/tripline/collector.db";
  std::string rules = "/etc/tripline/rules.d";
  std::string enrollment_token_file;
  // Optional bootstrap token with the admin role (a 0600 file), for a fresh collector and
  // scripts on its own host; everyday tokens live in the database (`tripline-collector token`).
  std::string operator_token_file;
  OperatorAccess operators;
  std::string log_level = "info";
  AwsConfig aws;
  ResponseMode response_mode = ResponseMode::kAuto;
};

// Loads and validates `path`. InvalidArgument "file:line:col: key: reason" on any error; the
// error of a file that cannot be read names the file.
absl::StatusOr<CollectorConfig> LoadCollectorConfig(const std::string& path);

// Parses collector.yaml text; `name` stands for the file in messages.
absl::StatusOr<CollectorConfig> ParseCollectorConfig(std::string_view text, const std::string& name);

// operator-token.key in the database's directory.
std::string DefaultTokenKeyFile(const std::string& database);

// Reads a token file (at most 4 KiB) with surrounding whitespace trimmed. The error names the file
// (and which option it came from) but never the contents; an empty token is FailedPrecondition.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, std::string_view option);

}  // namespace tripline::collector
