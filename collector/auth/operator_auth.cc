#include "collector/auth/operator_auth.h"

#include <sys/stat.h>

#include <cerrno>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "platform/crypto/digest.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/errno_status.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {
namespace {

constexpr size_t kKeyBytes = 32;
constexpr size_t kSecretBytes = 32;
constexpr size_t kMaxNameBytes = 64;
constexpr std::string_view kPrefix = "tl1_";
// Unpadded base64url of 32 bytes.
constexpr size_t kSecretChars = 43;

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || c == '@';
    if (!ok) return false;
  }
  return true;
}

absl::Status Unauthenticated(std::string_view why) {
  return absl::UnauthenticatedError(absl::StrFormat("operator token rejected: %s", why));
}

ActionRecord TokenAction(const std::string& kind, const std::string& name, const std::string& role,
                         const std::string& actor, int64_t now_ns) {
  ActionRecord a;
  a.kind = kind;
  a.target = name;
  a.status = "done";
  a.detail = absl::StrFormat("role %s", role);
  a.actor = actor;
  a.created_ns = now_ns;
  a.updated_ns = now_ns;
  return a;
}

}  // namespace

absl::StatusOr<Role> ParseRole(std::string_view name) {
  if (name == "read") return Role::kRead;
  if (name == "respond") return Role::kRespond;
  if (name == "admin") return Role::kAdmin;
  return absl::InvalidArgumentError(absl::StrFormat("role '%s' is not one of read, respond, admin",
                                                    Printable(std::string(name), 64)));
}

std::string RoleName(Role role) {
  switch (role) {
    case Role::kRead:
      return "read";
    case Role::kRespond:
      return "respond";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

absl::StatusOr<std::string> LoadOrCreateTokenKey(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return ErrnoStatus(errno, "stat", path);
    const std::string key = RandomBytes(kKeyBytes);
    RETURN_IF_ERROR(WriteFileAtomic(path, key, 0600));
    spdlog::info("auth: created the operator token key path={}", Printable(path));
    return key;
  }
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "operator token key %s is accessible by group or others (mode %04o); chmod 600 it",
        Printable(path), st.st_mode & 07777));
  }
  ASSIGN_OR_RETURN(std::string key, ReadFileToString(path, kKeyBytes + 1));
  if (key.size() != kKeyBytes) {
    return absl::FailedPreconditionError(
        absl::StrFormat("operator token key %s holds %d bytes, expected %d", Printable(path),
                        key.size(), kKeyBytes));
  }
  return key;
}

OperatorTokens::OperatorTokens(CollectorStore* store, std::string key)
    : store_(store), key_(std::move(key)) {}

absl::StatusOr<OperatorTokens::Created> OperatorTokens::Create(const std::string& name, Role role,
                                                               const std::string& actor,
                                                               int64_t now_ns) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("token name '%s': use 1 to %d letters, digits, '.', '_', '-' or '@'",
                        Printable(name, kMaxNameBytes), kMaxNameBytes));
  }
  const std::string secret = RandomBytes(kSecretBytes);
  OperatorTokenRecord record;
  record.name = name;
  record.role = RoleName(role);
  record.hash = Blake2b256(secret, key_);
  record.created_ns = now_ns;
  record.created_by = actor;

  ASSIGN_OR_RETURN(CollectorStore::Writer w, store_->BeginWrite());
  ASSIGN_OR_RETURN(std::optional<OperatorTokenRecord> existing, w.ActiveOperatorToken(name));
  if (existing.has_value()) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "operator '%s' already has an active token (id %d); revoke it first", name, existing->id));
  }
  ASSIGN_OR_RETURN(record.id, w.InsertOperatorToken(record));
  RETURN_IF_ERROR(
      w.InsertAction(TokenAction("token:create", name, record.role, actor, now_ns)).status());
  RETURN_IF_ERROR(w.Commit());

  Created out;
  out.token = absl::StrFormat("%s%d_%s", kPrefix, record.id, absl::WebSafeBase64Escape(secret));
  out.record = std::move(record);
  return out;
}

absl::Status OperatorTokens::Revoke(const std::string& name, const std::string& actor,
                                    int64_t now_ns) {
  ASSIGN_OR_RETURN(CollectorStore::Writer w, store_->BeginWrite());
  ASSIGN_OR_RETURN(std::optional<OperatorTokenRecord> existing, w.ActiveOperatorToken(name));
  if (!existing.has_value()) {
    return absl::NotFoundError(
        absl::StrFormat("no active token named '%s'", Printable(name, kMaxNameBytes)));
  }
  RETURN_IF_ERROR(w.RevokeOperatorToken(existing->id, now_ns));
  RETURN_IF_ERROR(
      w.InsertAction(TokenAction("token:revoke", name, existing->role, actor, now_ns)).status());
  return w.Commit();
}

absl::StatusOr<std::vector<OperatorTokenRecord>> OperatorTokens::List() {
  return store_->ListOperatorTokens();
}

absl::StatusOr<Caller> OperatorTokens::Authenticate(std::string_view token) const {
  if (token.substr(0, kPrefix.size()) != kPrefix) return Unauthenticated("not a Tripline token");
  token.remove_prefix(kPrefix.size());
  const size_t sep = token.find('_');
  int64_t id = 0;
  if (sep == std::string_view::npos || !absl::SimpleAtoi(std::string(token.substr(0, sep)), &id) ||
      id <= 0 || token.size() - sep - 1 != kSecretChars) {
    return Unauthenticated("malformed");
  }
  std::string secret;
  const std::string encoded(token.substr(sep + 1));
  // Only the canonical encoding: the last character's unused bits must be zero, so one secret
  // has exactly one spelling.
  if (!absl::WebSafeBase64Unescape(encoded, &secret) || secret.size() != kSecretBytes ||
      absl::WebSafeBase64Escape(secret) != encoded) {
    return Unauthenticated("malformed");
  }
  ASSIGN_OR_RETURN(std::optional<OperatorTokenRecord> record, store_->GetOperatorToken(id));
  // Hash even when there is no such token, so timing does not tell ids apart.
  const std::string hash = Blake2b256(secret, key_);
  if (!record.has_value() || !ConstantTimeEquals(hash, record->hash)) {
    return Unauthenticated("unknown or wrong token");
  }
  if (record->revoked_ns != 0) return Unauthenticated("revoked");
  absl::StatusOr<Role> role = ParseRole(record->role);
  if (!role.ok()) return absl::InternalError("stored token has an unknown role");
  return Caller{"token:" + record->name, *role};
}

OperatorAuthorizer::OperatorAuthorizer(OperatorTokens* tokens, const std::string& bootstrap_token,
                                       std::vector<std::pair<std::string, Role>> cert_roles)
    : tokens_(tokens),
      bootstrap_key_(RandomBytes(kKeyBytes)),
      bootstrap_hash_(bootstrap_token.empty() ? std::string()
                                              : Blake2b256(bootstrap_token, bootstrap_key_)),
      cert_roles_(std::move(cert_roles)) {}

grpc::Status OperatorAuthorizer::Authorize(const grpc::ServerContext& context, Role required,
                                           Caller* caller) const {
  std::optional<Caller> who;
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it != md.end()) {
    std::string_view value(it->second.data(), it->second.size());
    constexpr std::string_view kBearer = "Bearer ";
    if (value.substr(0, kBearer.size()) != kBearer) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "authorization metadata must be \"Bearer <operator token>\"");
    }
    value.remove_prefix(kBearer.size());
    if (!bootstrap_hash_.empty() &&
        ConstantTimeEquals(Blake2b256(value, bootstrap_key_), bootstrap_hash_)) {
      who = Caller{"bootstrap", Role::kAdmin};
    } else if (tokens_ != nullptr) {
      absl::StatusOr<Caller> c = tokens_->Authenticate(value);
      if (!c.ok()) {
        spdlog::warn("api: {} from {}", std::string(c.status().message()), context.peer());
        return grpc::Status(absl::IsUnauthenticated(c.status()) ? grpc::StatusCode::UNAUTHENTICATED
                                                                : grpc::StatusCode::INTERNAL,
                            std::string(c.status().message()));
      }
      who = *std::move(c);
    } else {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "operator token rejected");
    }
  } else if (auto auth = context.auth_context(); auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const grpc::string_ref& cn : auth->FindPropertyValues("x509_common_name")) {
      const std::string name(cn.data(), cn.size());
      for (const auto& [listed, role] : cert_roles_) {
        if (listed == name) who = Caller{"cert:" + name, role};
      }
    }
  }
  if (!who.has_value()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing \"authorization: Bearer <operator token>\" metadata (or a client "
                        "certificate listed under operators.certificates)");
  }
  if (who->role < required) {
    spdlog::warn("api: {} (role {}) denied a call needing role {}", who->name, RoleName(who->role),
                 RoleName(required));
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrFormat("%s has role %s; this call needs %s", who->name,
                                        RoleName(who->role), RoleName(required)));
  }
  *caller = *std::move(who);
  return grpc::Status::OK;
}

}  // namespace tripline::collector
