#include "collector/ingest/instance_identity.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct Pkcs7Free {
  void operator()(PKCS7* p) const { PKCS7_free(p); }
};
struct X509StackFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_free(s); }  // not the certs: certs_ owns them
};
using UniqueBio = std::unique_ptr<BIO, BioFree>;
using UniqueX509 = std::unique_ptr<X509, X509Free>;
using UniquePkcs7 = std::unique_ptr<PKCS7, Pkcs7Free>;
using UniqueX509Stack = std::unique_ptr<STACK_OF(X509), X509StackFree>;

// The first queued OpenSSL error as text (the queue is cleared).
std::string OpensslError() {
  unsigned long e = ERR_get_error();
  std::string out = "unknown error";
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    out = buf;
  }
  ERR_clear_error();
  return out;
}

std::string StringField(const google::protobuf::Struct& s, const std::string& name) {
  auto it = s.fields().find(name);
  if (it == s.fields().end() || !it->second.has_string_value()) return "";
  return it->second.string_value();
}

}  // namespace

struct InstanceIdentityVerifier::Certs {
  std::vector<std::pair<std::string, UniqueX509>> by_region;  // region, certificate
};

InstanceIdentityVerifier::InstanceIdentityVerifier(std::unique_ptr<Certs> certs,
                                                   std::vector<std::string> accounts)
    : certs_(std::move(certs)), allowed_accounts_(std::move(accounts)) {}

InstanceIdentityVerifier::~InstanceIdentityVerifier() = default;

size_t InstanceIdentityVerifier::certificate_count() const { return certs_->by_region.size(); }

absl::StatusOr<std::unique_ptr<InstanceIdentityVerifier>> InstanceIdentityVerifier::Create(
    const std::map<std::string, std::string>& certificates_pem,
    std::vector<std::string> allowed_accounts) {
  if (certificates_pem.empty()) {
    return absl::InvalidArgumentError("no AWS instance identity certificate configured");
  }
  auto certs = std::make_unique<Certs>();
  for (const auto& [region, pem] : certificates_pem) {
    UniqueBio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return absl::ResourceExhaustedError("BIO_new_mem_buf failed");
    UniqueX509 cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "certificate for region %s: not a PEM certificate (%s)", region, OpensslError()));
    }
    certs->by_region.emplace_back(region, std::move(cert));
  }
  return std::unique_ptr<InstanceIdentityVerifier>(
      new InstanceIdentityVerifier(std::move(certs), std::move(allowed_accounts)));
}

absl::StatusOr<std::unique_ptr<InstanceIdentityVerifier>> InstanceIdentityVerifier::Load(
    const std::map<std::string, std::string>& certificate_files,
    std::vector<std::string> allowed_accounts) {
  std::map<std::string, std::string> pems;
  for (const auto& [region, file] : certificate_files) {
    ASSIGN_OR_RETURN(std::string pem, ReadFileToString(file, 1 << 20));
    absl::StatusOr<std::unique_ptr<InstanceIdentityVerifier>> one =
        Create({{region, pem}}, allowed_accounts);
    if (!one.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: %s", file, one.status().message()));
    }
    pems.emplace(region, std::move(pem));
  }
  return Create(pems, std::move(allowed_accounts));
}

absl::StatusOr<InstanceIdentity> InstanceIdentityVerifier::Verify(
    const std::string& document, const std::string& signature,
    const std::string& claimed_instance_id) const {
  if (document.empty() || signature.empty()) {
    return absl::PermissionDeniedError(
        "no instance identity document and signature: this collector requires them (the agent "
        "reads them from IMDSv2)");
  }
  if (document.size() > kMaxIdentityDocumentBytes ||
      signature.size() > kMaxIdentitySignatureBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "instance identity document (%d bytes) or signature (%d bytes) over %d bytes",
        document.size(), signature.size(), kMaxIdentityDocumentBytes));
  }
  // IMDS serves the base64 in 64-column lines; some tools add PEM armour around it.
  std::string b64;
  b64.reserve(signature.size());
  std::string_view sig(signature);
  constexpr std::string_view kBegin = "-----BEGIN PKCS7-----";
  constexpr std::string_view kEnd = "-----END PKCS7-----";
  if (size_t b = sig.find(kBegin); b != std::string_view::npos) {
    sig.remove_prefix(b + kBegin.size());
    if (size_t e = sig.find(kEnd); e != std::string_view::npos) sig = sig.substr(0, e);
  }
  for (char c : sig) {
    if (c != '\n' && c != '\r' && c != ' ' && c != '\t') b64.push_back(c);
  }
  std::string der;
  if (!absl::Base64Unescape(b64, &der) || der.empty()) {
    return absl::InvalidArgumentError("instance identity signature is not base64");
  }
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  UniquePkcs7 p7(d2i_PKCS7(nullptr, &p, static_cast<long>(der.size())));
  if (!p7) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "instance identity signature is not a DER PKCS#7 structure (%s)", OpensslError()));
  }
  if (!PKCS7_type_is_signed(p7.get())) {
    return absl::InvalidArgumentError("instance identity signature is not PKCS#7 signedData");
  }

  UniqueX509Stack stack(sk_X509_new_null());
  if (!stack) return absl::ResourceExhaustedError("sk_X509_new_null failed");
  for (const auto& [region, cert] : certs_->by_region) sk_X509_push(stack.get(), cert.get());

  UniqueBio out(BIO_new(BIO_s_mem()));
  UniqueBio detached_in;
  if (PKCS7_get_detached(p7.get())) {
    detached_in.reset(BIO_new_mem_buf(document.data(), static_cast<int>(document.size())));
    if (!detached_in) return absl::ResourceExhaustedError("BIO_new_mem_buf failed");
  }
  if (!out) return absl::ResourceExhaustedError("BIO_new failed");
  // NOINTERN: the signer must be one of our certificates, never one carried in the message.
  // NOVERIFY: AWS's regional certificates are self-signed; trusting them is the configuration.
  const int flags = PKCS7_NOINTERN | PKCS7_NOVERIFY | PKCS7_BINARY;
  if (PKCS7_verify(p7.get(), stack.get(), nullptr, detached_in.get(), out.get(), flags) != 1) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "instance identity signature does not verify against the configured AWS certificates "
        "(%s)",
        OpensslError()));
  }
  STACK_OF(X509)* signers = PKCS7_get0_signers(p7.get(), stack.get(), PKCS7_NOINTERN);
  if (signers == nullptr || sk_X509_num(signers) != 1) {
    if (signers) sk_X509_free(signers);
    ERR_clear_error();
    return absl::PermissionDeniedError("instance identity signature must have exactly one signer");
  }
  X509* signer = sk_X509_value(signers, 0);
  sk_X509_free(signers);
  std::string signer_region;
  for (const auto& [region, cert] : certs_->by_region) {
    if (cert.get() == signer) signer_region = region;
  }

  char* data = nullptr;
  const long n = BIO_get_mem_data(out.get(), &data);
  const std::string signed_content(data == nullptr ? "" : data, n < 0 ? 0 : n);
  if (signed_content != document) {
    return absl::PermissionDeniedError(
        "the signed instance identity document differs from the document sent");
  }

  google::protobuf::Struct json;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  if (!google::protobuf::util::JsonStringToMessage(document, &json, opts).ok()) {
    return absl::InvalidArgumentError("instance identity document is not a JSON object");
  }
  InstanceIdentity id;
  id.instance_id = StringField(json, "instanceId");
  id.region = StringField(json, "region");
  id.account_id = StringField(json, "accountId");
  if (id.instance_id != claimed_instance_id) {
    return absl::PermissionDeniedError(
        absl::StrFormat("instance identity document names instance '%s', the agent claims '%s'",
                        Printable(id.instance_id, 64), Printable(claimed_instance_id, 128)));
  }
  if (id.region != signer_region) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "instance identity document names region '%s' but was signed with the certificate of %s",
        Printable(id.region, 64), signer_region));
  }
  if (!allowed_accounts_.empty() && std::find(allowed_accounts_.begin(), allowed_accounts_.end(),
                                              id.account_id) == allowed_accounts_.end()) {
    return absl::PermissionDeniedError(
        absl::StrFormat("instance identity document names account '%s', not an allowed account",
                        Printable(id.account_id, 64)));
  }
  return id;
}

}  // namespace tripline::collector
