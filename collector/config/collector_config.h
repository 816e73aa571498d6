// collector.yaml: where the collector listens, how it secures the connection, where it keeps its
// data, which rules it runs and how it reaches EC2. Every error names file:line:col and the key;
// unknown keys are errors. Secrets (tokens) are read from their files by ReadSecretFile and never
// logged. Loading is pure: no threads, no state.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "platform/net/grpc_credentials.h"

namespace tripline::collector {

struct AwsConfig {
  std::string region;  // empty: AWS_REGION, the profile's config file, then IMDS
  std::string endpoint;  // empty: https://ec2.<region>.amazonaws.com
  std::string ca_file;
  // Optional: this existing group is the isolation group of its VPC (instead of the
  // "tripline-isolation" group the collector finds or creates per VPC).
  std::string isolation_security_group;
  // Empty: `endpoint` when that is set, else https://iam.amazonaws.com and
  // https://autoscaling.<region>.amazonaws.com.
  std::string iam_endpoint;
  std::string autoscaling_endpoint;
  int max_attempts = 4;              // per call, throttling and 5xx retried with jitter
  long retry_base_ms = 100;
};

// `cloudtrail:`: account-level events from CloudTrail's LookupEvents, per region (see
// docs/cloudtrail.md). No regions: the CloudTrail source is off.
struct CloudTrailConfig {
  std::vector<std::string> regions;
  long poll_interval_ms = 60000;
  long lookback_ms = 3600000;        // the first window, before any cursor is stored
  long overlap_ms = 600000;          // each window reaches back this far before the cursor
  int max_calls_per_second = 2;      // per region (LookupEvents allows 2)
  std::string endpoint;              // empty: https://cloudtrail.<region>.amazonaws.com
};

// What the collector does when a rule asks for a response: act (auto), wait for an operator's
// approval (approve), only ask AWS whether it would work (dry-run: DryRun=true), or nothing.
enum class ResponseMode { kAuto, kApprove, kDryRun, kOff };

struct ResponseConfig {
  std::vector<std::string> never_isolate_ids;  // plus self_instance_id
  std::map<std::string, std::string> never_isolate_tags;  // "" value: any value
  int max_auto_isolations_per_hour = 10;  // 0: no cap
  std::string self_instance_id;           // the collector's own instance: never isolated
};

// Where response outcomes are announced.
struct NotifyConfig {
  struct Webhook {
    std::string url;
    bool slack = false;  // Slack incoming webhook ({"text": ...}) instead of the plain JSON
  };
  std::vector<Webhook> webhooks;
  std::string sns_topic_arn;  // SNS Publish, signed with the collector's AWS credentials
  struct Smtp {
    std::string url;  // smtp://host:587 or smtps://host:465; empty: no e-mail
    std::string from;
    std::vector<std::string> to;
    bool starttls = true;
    std::string username;
    std::string password_file;  // read like the tokens; never logged
  } smtp;
  int attempts = 3;
};

// "auto", "approve", "dry-run" or "off".
const char* ResponseModeName(ResponseMode mode);

// Who may call the operator service besides holders of database tokens (see collector/auth).
struct OperatorAccess {
  // Keyed-hash secret for operator tokens (32 random bytes, 0600, created on first use).
  // Default: operator-token.key next to the database.
  std::string token_key_file;
  // Client certificate common name -> role ("read", "respond", "admin"), honoured when the
  // server verifies client certificates (tls.client_ca_file).
  std::vector<std::pair<std::string, std::string>> cert_roles;
};

// How enrolling agents prove which EC2 instance they run on (collector/ingest/instance_identity.h).
struct IdentityConfig {
  // Off only for fleets off EC2: then the agent id is whatever the enrollment token holder says.
  bool require_document = true;
  std::map<std::string, std::string> aws_certificates;  // region -> PEM file of AWS's certificate
  std::vector<std::string> allowed_accounts;            // empty: any account
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
  CloudTrailConfig cloudtrail;
  ResponseMode response_mode = ResponseMode::kAuto;
  ResponseConfig response;
  NotifyConfig notify;
  IdentityConfig identity;
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
