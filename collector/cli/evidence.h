// Evidence directories: what `triplinectl evidence export` writes and `evidence verify` checks,
// offline, without the collector.
//
//   DIR/manifest.json              EvidenceManifest: every other file with its SHA-256 and size
//   DIR/SHA256SUMS                 the same digests in `sha256sum -c` format
//   DIR/incident.json              the incident, its actions and events, the agents' keys (JSON)
//   DIR/agents/<agent>.pub         the agent's pinned Ed25519 public key, hex
//   DIR/agents/<agent>.keys        every key it has had: "<first batch seq> <key hex>" per line;
//                                  a batch is checked against the key in force for its seq
//   DIR/batches/<agent>/<seq>.signed  each SignedBatch as the collector received it
//
// What proves what: the batches are signed by the agent's key, so their content (the events) is
// the agent's word and a changed byte breaks a signature; the chain (prev_digest) shows none was
// left out between the first and the last; the manifest digests catch any other changed file,
// including incident.json, which is the collector's account and is not signed.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tripline/v1/operator.pb.h"

namespace tripline::cli {

// Writes `evidence` into `dir`, which must not exist or be empty; created 0700, files 0600.
// `collector` is recorded in the manifest. Agent ids that are not safe file names are refused.
absl::Status WriteEvidence(const tripline::v1::ExportEvidenceResponse& evidence,
                           const std::string& collector, const std::string& dir);

struct EvidenceReport {
  bool ok = false;
  std::vector<std::string> problems;  // each names the file and what is wrong
  int batches = 0;                    // batches whose signature verified
  int events = 0;                     // incident events found in a verified batch
  std::string summary;                // one line for a person
};

// Re-checks everything in `dir` (see the top of this file).
EvidenceReport VerifyEvidence(const std::string& dir);

}  // namespace tripline::cli
