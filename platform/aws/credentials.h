// Where AWS credentials come from, in the SDKs' order: the environment (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), the shared credentials and config files with
// profiles (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE, ~/.aws/...), the container
// credentials endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI with
// AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]), then the instance's role through IMDSv2 (token PUT,
// then GETs). Temporary credentials are fetched again `refresh_before` ahead of their expiry, so a
// call never signs with credentials about to lapse. Also: the region and instance id from IMDS.
//
// Thread-safe: Get() may be called from any thread (a mutex guards the cache). Nothing here logs
// a secret.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "platform/aws/query_connection.h"
#include "platform/runtime/clock.h"

namespace tripline::aws {

struct TemporaryCredentials {
  Credentials credentials;
  int64_t expires_unix_ns = 0;  // 0: never
  std::string source;           // "environment", "shared file profile x", "container", "imds"
};

// The environment a chain reads; tests pass their own instead of the process's.
using Environment = std::function<std::optional<std::string>(const std::string& name)>;
Environment ProcessEnvironment();

// Parses the shared credentials file (sections [name]) or config file (sections [profile name]
// and [default]): section -> key -> value. Comments (#, ;) and blank lines are skipped. An error
// names the file and line.
absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> ParseAwsIniFile(
    const std::string& text, const std::string& name, bool config_file);

// A flat JSON object of string (or number/bool, kept as text) values, as the container and IMDS
// credential endpoints answer. InvalidArgument for anything else; at most 64 KiB.
absl::StatusOr<std::map<std::string, std::string>> ParseFlatJsonObject(const std::string& text);

// An RFC 3339 UTC time ("2026-11-23T18:00:00Z") in Unix nanoseconds.
absl::StatusOr<int64_t> ParseAwsTime(const std::string& text);

class CredentialChain {
 public:
  struct Options {
    Environment env = ProcessEnvironment();
    std::string home;                                          // for ~/.aws; empty: $HOME
    std::string imds_endpoint = "http://169.254.169.254";      // AWS_EC2_METADATA_SERVICE_ENDPOINT
    std::string container_host = "http://169.254.170.2";       // for the RELATIVE_URI
    long timeout_ms = 1000;                                    // per HTTP request to IMDS/container
    int64_t refresh_before_ns = int64_t{5} * 60 * 1000000000;  // refresh 5 min before expiry
    const Clock* clock = &SystemClock();
  };
  explicit CredentialChain(Options options);

  // The first source that has credentials, cached; temporary ones fetched again before they
  // expire. NotFound listing what was tried when no source has any; other errors name the source
  // that answered badly.
  absl::StatusOr<TemporaryCredentials> Get();

  // A CredentialSource for the clients that asks this chain before every request.
  CredentialSource AsSource();

  // The profile's region from the config file, else IMDS's placement/region; NotFound if neither.
  absl::StatusOr<std::string> Region();
  // The instance id from IMDS (the collector's own instance, never to be isolated).
  absl::StatusOr<std::string> InstanceId();

 private:
  std::optional<std::string> Env(const std::string& name) const;
  absl::StatusOr<std::optional<TemporaryCredentials>> FromEnvironment();
  absl::StatusOr<std::optional<TemporaryCredentials>> FromSharedFiles();
  absl::StatusOr<std::optional<TemporaryCredentials>> FromContainer();
  absl::StatusOr<std::optional<TemporaryCredentials>> FromImds();
  absl::StatusOr<std::string> ImdsToken();
  absl::StatusOr<std::string> ImdsGet(const std::string& path);
  std::string Profile() const;
  std::string ConfigPath(const char* var, const char* file) const;

  const Options options_;
  std::mutex mu_;
  std::optional<TemporaryCredentials> cached_;  // guarded by mu_
};

}  // namespace tripline::aws
