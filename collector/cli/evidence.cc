#include "collector/cli/evidence.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "platform/crypto/batch_signature.h"
#include "platform/crypto/digest.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/logging.h"

namespace tripline::cli {
namespace {

namespace v1 = tripline::v1;
namespace fs = std::filesystem;

constexpr char kFormat[] = "tripline-evidence/1";
constexpr size_t kMaxFileBytes = 256u << 20;

bool SafeName(const std::string& name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string BatchFile(const std::string& agent_id, uint64_t seq) {
  return absl::StrFormat("batches/%s/%020d.signed", agent_id, seq);
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.add_whitespace = true;
  std::string out;
  auto st = google::protobuf::util::MessageToJsonString(m, &out, options);
  if (!st.ok()) return absl::InternalError(std::string(st.message()));
  return out;
}

// An agent's keys, oldest first: (first batch seq it signs, Ed25519 public key). Exports made
// before key history was kept list none; then the one pinned key covers every batch.
using KeyHistory = std::vector<std::pair<uint64_t, std::string>>;

KeyHistory Keys(const v1::EvidenceAgent& a) {
  KeyHistory keys;
  for (const auto& k : a.keys()) keys.emplace_back(k.from_batch_seq(), k.public_key());
  if (keys.empty()) keys.emplace_back(1, a.public_key());
  std::sort(keys.begin(), keys.end());
  return keys;
}

// agents/<agent>.keys: one line per key, "<first batch seq> <key hex>", oldest first.
std::string KeysFile(const KeyHistory& keys) {
  std::string out;
  for (const auto& [from, key] : keys) out += absl::StrFormat("%d %s\n", from, ToHex(key));
  return out;
}

// The key that signs batch `seq`: the one with the greatest first seq at or below it.
const std::string* KeyFor(const KeyHistory& keys, uint64_t seq) {
  const std::string* found = nullptr;
  for (const auto& [from, key] : keys) {
    if (from <= seq) found = &key;
  }
  return found;
}

// A path from a manifest is used only if it stays inside the directory.
bool SafeRelativePath(const std::string& path) {
  if (path.empty() || path[0] == '/' || path.size() > 512) return false;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

}  // namespace

absl::Status WriteEvidence(const v1::ExportEvidenceResponse& evidence, const std::string& collector,
                           const std::string& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s exists and is not empty; evidence goes into a fresh directory", Printable(dir)));
  }
  for (const auto& a : evidence.agents()) {
    if (!SafeName(a.agent_id())) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "agent id %s is not a safe file name; refusing to write it", Printable(a.agent_id())));
    }
  }
  for (const auto& b : evidence.batches()) {
    if (!SafeName(b.agent_id())) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "agent id %s is not a safe file name; refusing to write it", Printable(b.agent_id())));
    }
  }
  if (absl::Status st = MakeDirs(dir, 0700); !st.ok()) return st;

  v1::EvidenceManifest manifest;
  manifest.set_format(kFormat);
  manifest.set_incident_id(evidence.incident().id());
  manifest.set_exported_unix_ns(evidence.exported_unix_ns());
  manifest.set_exported_by(evidence.exported_by());
  manifest.set_collector(collector);
  auto write = [&](const std::string& rel, const std::string& bytes) -> absl::Status {
    const std::string path = dir + "/" + rel;
    const size_t slash = path.rfind('/');
    if (absl::Status st = MakeDirs(path.substr(0, slash), 0700); !st.ok()) return st;
    if (absl::Status st = WriteFileAtomic(path, bytes, 0600); !st.ok()) return st;
    v1::EvidenceManifest::File* f = manifest.add_files();
    f->set_path(rel);
    f->set_sha256(ToHex(Sha256(bytes)));
    f->set_size(bytes.size());
    return absl::OkStatus();
  };

  v1::ExportEvidenceResponse account = evidence;
  account.clear_batches();  // they are files of their own
  absl::StatusOr<std::string> json = ToJson(account);
  if (!json.ok()) return json.status();
  if (absl::Status st = write("incident.json", *json); !st.ok()) return st;
  for (const auto& a : evidence.agents()) {
    if (absl::Status st = write("agents/" + a.agent_id() + ".pub", ToHex(a.public_key()) + "\n");
        !st.ok()) {
      return st;
    }
    if (absl::Status st = write("agents/" + a.agent_id() + ".keys", KeysFile(Keys(a))); !st.ok()) {
      return st;
    }
  }
  for (const auto& b : evidence.batches()) {
    if (absl::Status st = write(BatchFile(b.agent_id(), b.batch_seq()), b.signed_batch());
        !st.ok()) {
      return st;
    }
  }
  std::string sums;
  for (const auto& f : manifest.files()) sums += f.sha256() + "  " + f.path() + "\n";
  if (absl::Status st = WriteFileAtomic(dir + "/SHA256SUMS", sums, 0600); !st.ok()) return st;
  absl::StatusOr<std::string> manifest_json = ToJson(manifest);
  if (!manifest_json.ok()) return manifest_json.status();
  return WriteFileAtomic(dir + "/manifest.json", *manifest_json, 0600);
}

EvidenceReport VerifyEvidence(const std::string& dir) {
  EvidenceReport r;
  auto problem = [&](std::string text) { r.problems.push_back(std::move(text)); };

  absl::StatusOr<std::string> manifest_text = ReadFileToString(dir + "/manifest.json", 16 << 20);
  v1::EvidenceManifest manifest;
  if (!manifest_text.ok()) {
    problem(absl::StrFormat("manifest.json: %s", manifest_text.status().message()));
  } else if (!google::protobuf::util::JsonStringToMessage(*manifest_text, &manifest).ok() ||
             manifest.format() != kFormat) {
    problem(absl::StrFormat("manifest.json: not a %s manifest", kFormat));
  }
  if (!r.problems.empty()) {
    r.summary = "evidence FAILED: no readable manifest";
    return r;
  }

  // 1. Every listed file is there with its digest; nothing is there that is not listed.
  std::map<std::string, std::string> files;  // path -> bytes
  for (const auto& f : manifest.files()) {
    if (!SafeRelativePath(f.path())) {
      problem(absl::StrFormat("manifest.json: unsafe path %s", Printable(f.path())));
      continue;
    }
    absl::StatusOr<std::string> bytes = ReadFileToString(dir + "/" + f.path(), kMaxFileBytes);
    if (!bytes.ok()) {
      problem(absl::StrFormat("%s: %s", f.path(), bytes.status().message()));
      continue;
    }
    if (ToHex(Sha256(*bytes)) != f.sha256() || bytes->size() != f.size()) {
      problem(absl::StrFormat("%s: changed since export (SHA-256 or size differs)", f.path()));
    }
    files[f.path()] = *std::move(bytes);
  }
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    const std::string rel = fs::relative(it->path(), dir, ec).generic_string();
    if (rel == "manifest.json" || rel == "SHA256SUMS") continue;
    if (files.count(rel) == 0) problem(absl::StrFormat("%s: not in the manifest", Printable(rel)));
  }

  // 2. The collector's account and the agents' keys.
  v1::ExportEvidenceResponse account;
  auto inc = files.find("incident.json");
  if (inc == files.end() ||
      !google::protobuf::util::JsonStringToMessage(inc->second, &account).ok()) {
    problem("incident.json: missing or not readable");
  }
  std::map<std::string, KeyHistory> keys;
  int rekeyed = 0;
  for (const auto& a : account.agents()) {
    auto pub = files.find("agents/" + a.agent_id() + ".pub");
    if (pub == files.end() || pub->second != ToHex(a.public_key()) + "\n") {
      problem(absl::StrFormat("agents/%s.pub: missing or differs from incident.json",
                              Printable(a.agent_id())));
    }
    KeyHistory history = Keys(a);
    if (a.keys_size() > 0) {
      auto list = files.find("agents/" + a.agent_id() + ".keys");
      if (list == files.end() || list->second != KeysFile(history)) {
        problem(absl::StrFormat("agents/%s.keys: missing or differs from incident.json",
                                Printable(a.agent_id())));
      }
      if (history.back().second != a.public_key()) {
        problem(absl::StrFormat("incident.json: the newest key of %s is not its pinned key",
                                Printable(a.agent_id())));
      }
    }
    if (history.size() > 1) ++rekeyed;
    keys[a.agent_id()] = std::move(history);
  }

  // 3. Every batch: signature by the pinned key, its claimed identity, and the chain.
  struct Verified {
    std::string batch_bytes;
    v1::EventBatch batch;
  };
  std::map<std::string, std::map<uint64_t, Verified>> chains;
  for (const auto& [path, bytes] : files) {
    std::vector<std::string> parts = absl::StrSplit(path, '/');
    if (parts.size() != 3 || parts[0] != "batches") continue;
    const std::string& agent = parts[1];
    uint64_t seq = 0;
    if (parts[2].size() < 8 || parts[2].substr(parts[2].size() - 7) != ".signed" ||
        !absl::SimpleAtoi(parts[2].substr(0, parts[2].size() - 7), &seq)) {
      problem(absl::StrFormat("%s: not a batch file name", Printable(path)));
      continue;
    }
    v1::SignedBatch signed_batch;
    if (!signed_batch.ParseFromString(bytes)) {
      problem(absl::StrFormat("%s: not a SignedBatch", path));
      continue;
    }
    auto key = keys.find(agent);
    if (key == keys.end()) {
      problem(absl::StrFormat("%s: no public key for agent %s", path, Printable(agent)));
      continue;
    }
    const std::string* signer = KeyFor(key->second, seq);
    if (signer == nullptr) {
      problem(absl::StrFormat("%s: agent %s had no key for batch %d", path, Printable(agent), seq));
      continue;
    }
    if (!VerifyBatchSignature(*signer, signed_batch.batch(), signed_batch.signature())) {
      problem(absl::StrFormat("%s: signature does not verify with the key %s had pinned for "
                              "batch %d",
                              path, Printable(agent), seq));
      continue;
    }
    Verified v;
    v.batch_bytes = signed_batch.batch();
    if (!v.batch.ParseFromString(v.batch_bytes)) {
      problem(absl::StrFormat("%s: signed bytes are not an EventBatch", path));
      continue;
    }
    if (v.batch.agent_id() != agent || v.batch.batch_seq() != seq) {
      problem(absl::StrFormat("%s: the signed batch says agent %s seq %d", path,
                              Printable(v.batch.agent_id()), v.batch.batch_seq()));
      continue;
    }
    ++r.batches;
    chains[agent].emplace(seq, std::move(v));
  }
  std::vector<std::string> spans;
  for (const auto& [agent, chain] : chains) {
    const Verified* prev = nullptr;
    uint64_t prev_seq = 0;
    for (const auto& [seq, v] : chain) {
      if (prev != nullptr) {
        if (seq != prev_seq + 1) {
          problem(absl::StrFormat("batches/%s: batches %d..%d are missing", agent, prev_seq + 1,
                                  seq - 1));
        } else if (v.batch.prev_digest() != ChainDigest(prev->batch_bytes)) {
          problem(absl::StrFormat("%s: prev_digest does not match batch %d: the chain is broken",
                                  BatchFile(agent, seq), prev_seq));
        }
      }
      prev = &v;
      prev_seq = seq;
    }
    if (!chain.empty()) {
      spans.push_back(
          absl::StrFormat("%s seq %d..%d", agent, chain.begin()->first, chain.rbegin()->first));
    }
  }

  // 4. Each event the incident names is in a verified batch, as the collector reported it.
  for (const auto& e : account.events()) {
    bool found = false;
    auto chain = chains.find(e.agent_id());
    if (chain != chains.end()) {
      auto b = chain->second.find(e.batch_seq());
      if (b != chain->second.end()) {
        for (const auto& ev : b->second.batch.events()) {
          if (google::protobuf::util::MessageDifferencer::Equals(ev, e.event())) found = true;
        }
      }
    }
    if (found) {
      ++r.events;
    } else {
      problem(
          absl::StrFormat("incident.json: event %d (agent %s batch %d) is not in a verified "
                          "batch as stated",
                          e.id(), Printable(e.agent_id()), e.batch_seq()));
    }
  }

  r.ok = r.problems.empty();
  r.summary = r.ok ? absl::StrFormat(
                         "evidence OK: incident %d; %d batches (%s) signed by the pinned keys%s, "
                         "chain continuous; %d incident events found in them; every file "
                         "matches the manifest",
                         manifest.incident_id(), r.batches, absl::StrJoin(spans, ", "),
                         rekeyed == 0 ? ""
                                      : absl::StrFormat(" (%d agent(s) re-keyed on the way)",
                                                        rekeyed),
                         r.events)
                   : absl::StrFormat("evidence FAILED: %d problem(s)", r.problems.size());
  return r;
}

}  // namespace tripline::cli
