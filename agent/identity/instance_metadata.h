// What the EC2 instance metadata service (IMDSv2) says about the instance the agent runs on: its
// instance id, region, and the instance identity document with AWS's signature over it, which the
// collector checks at enrollment (collector/ingest/instance_identity.h).
//
// IMDSv2 only: PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds first, then GETs
// carrying X-aws-ec2-metadata-token, over plain HTTP to a numeric address (platform/net/
// plain_http.h: never through a proxy, no redirects, answers capped at 16 KiB). Each request is retried (`attempts` in all, `retry_delay` apart) when IMDS cannot be
// reached or answers 5xx; a 401 fetches a fresh token once. Errors name the path and the reason.
// Threads: none of its own; blocking calls, meant for start-up.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tripline::agent {

struct ImdsOptions {
  std::string endpoint = "http://169.254.169.254";  // or http://[fd00:ec2::254] (IPv6-only)
  absl::Duration timeout = absl::Seconds(2);  // per HTTP request
  int attempts = 3;                           // per request
  absl::Duration retry_delay = absl::Milliseconds(500);
};

struct InstanceMetadata {
  std::string instance_id;  // i-...
  std::string region;
  std::string document;   // /latest/dynamic/instance-identity/document, byte for byte
  std::string signature;  // /latest/dynamic/instance-identity/rsa2048 (base64 PKCS#7)
};

// The document is signed by AWS with SHA-256/RSA-2048 at .../rsa2048 (the older .../pkcs7 is
// DSA/SHA-1); that is the one fetched.
inline constexpr char kIdentitySignaturePath[] = "/latest/dynamic/instance-identity/rsa2048";

// Unavailable when IMDS cannot be reached after the retries (off EC2: set agent_id in agent.yaml);
// FailedPrecondition for answers that are not what IMDS serves (a malformed instance id, an empty
// document).
absl::StatusOr<InstanceMetadata> ReadInstanceMetadata(const ImdsOptions& options);

}  // namespace tripline::agent
