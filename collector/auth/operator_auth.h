// Who is calling the operator service, and may they: operator tokens, client certificates, roles.
//
// Tokens are "tl1_<id>_<secret>", the secret 32 random bytes in unpadded base64url. Only a keyed
// BLAKE2b-256 of the secret is stored (key: a 32-byte file the collector keeps next to its
// database, 0600), so a copy of the database alone neither reveals a token nor lets anyone test
// guesses offline. The token is shown once, when it is created. Comparison is constant time.
//
// Roles are ordered: read < respond < admin. Each RPC names the role it needs; a caller with less
// gets PERMISSION_DENIED, a caller who cannot be identified UNAUTHENTICATED.
//
// Thread-safe: OperatorTokens and OperatorAuthorizer are immutable after construction apart from
// the store, which serializes itself.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "collector/store/collector_store.h"
#include "grpcpp/server_context.h"

namespace tripline::collector {

enum class Role { kRead = 1, kRespond = 2, kAdmin = 3 };

// "read" | "respond" | "admin"; InvalidArgument naming the word otherwise.
absl::StatusOr<Role> ParseRole(std::string_view name);
std::string RoleName(Role role);

// The identity a call was made with, as the audit trail names it: "token:alice",
// "cert:ops-laptop", "bootstrap", or "local:<user>" for the collector's own command line.
struct Caller {
  std::string name;
  Role role = Role::kRead;
};

// The key for token hashes at `path`: read when it exists (it must be exactly 32 bytes and not
// readable by others), created (0600, atomically) when it does not.
absl::StatusOr<std::string> LoadOrCreateTokenKey(const std::string& path);

class OperatorTokens {
 public:
  OperatorTokens(CollectorStore* store, std::string key);

  struct Created {
    std::string token;  // show once, never log
    OperatorTokenRecord record;
  };
  // A new token for `name` (letters, digits, '.', '_', '-', '@'; at most 64) with `role`; the
  // creation is an audit action by `actor`. AlreadyExists when `name` has an active token.
  absl::StatusOr<Created> Create(const std::string& name, Role role, const std::string& actor,
                                 int64_t now_ns);
  // Revokes the active token of `name`, as an audit action by `actor`. NotFound when there is none.
  absl::Status Revoke(const std::string& name, const std::string& actor, int64_t now_ns);
  absl::StatusOr<std::vector<OperatorTokenRecord>> List();
  // The caller a token stands for; Unauthenticated (without the token in the message) when it is
  // malformed, unknown, wrong or revoked.
  absl::StatusOr<Caller> Authenticate(std::string_view token) const;

 private:
  CollectorStore* const store_;
  const std::string key_;
};

class OperatorAuthorizer {
 public:
  // `tokens` may be null (no database tokens). `bootstrap_token`, when not empty, authenticates as
  // "bootstrap" with the admin role. `cert_roles` maps verified client-certificate common names to
  // roles.
  OperatorAuthorizer(OperatorTokens* tokens, const std::string& bootstrap_token,
                     std::vector<std::pair<std::string, Role>> cert_roles);

  // OK and `*caller` set when the call is authenticated and its role is at least `required`.
  // A bearer token, when present, decides; otherwise a verified client certificate listed in
  // `cert_roles` does.
  grpc::Status Authorize(const grpc::ServerContext& context, Role required, Caller* caller) const;

 private:
  OperatorTokens* const tokens_;
  const std::string bootstrap_key_;
  const std::string bootstrap_hash_;  // keyed hash of the bootstrap token; empty when none
  const std::vector<std::pair<std::string, Role>> cert_roles_;
};

}  // namespace tripline::collector
