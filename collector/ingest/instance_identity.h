// Checks an EC2 instance identity document and its signature, as an agent forwards them from
// IMDSv2 at enrollment (/latest/dynamic/instance-identity/document and .../rsa2048).
//
// The signature is base64 of a DER PKCS#7 signedData. AWS embeds the document as its content
// (attached) and leaves the signer's certificate out; a detached signature (no content) is checked
// against the document the agent sent. The signer must be one of the configured AWS regional
// certificates and nothing else: certificates inside the message are ignored (PKCS7_NOINTERN), so
// a forger cannot bring his own. The chain of that certificate is not walked (PKCS7_NOVERIFY):
// AWS's regional certificates are self-signed and are trusted because the operator put them in the
// config, not because of an issuer. The signed bytes must equal the document the agent sent; then
// the document's instanceId must be the agent id it claims, its region the region of the
// certificate that signed it, and its accountId one of the allowed accounts when a list is set.
//
// Thread-safe after construction (read-only).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tripline::collector {

// What a verified document says.
struct InstanceIdentity {
  std::string instance_id;
  std::string region;
  std::string account_id;
};

class InstanceIdentityVerifier {
 public:
  // `certificates_pem`: region -> PEM text of AWS's RSA-2048 instance identity certificate for it.
  // InvalidArgument naming the region when a PEM does not parse or there are none.
  static absl::StatusOr<std::unique_ptr<InstanceIdentityVerifier>> Create(
      const std::map<std::string, std::string>& certificates_pem,
      std::vector<std::string> allowed_accounts);
  // The same, reading region -> PEM file; errors name the file.
  static absl::StatusOr<std::unique_ptr<InstanceIdentityVerifier>> Load(
      const std::map<std::string, std::string>& certificate_files,
      std::vector<std::string> allowed_accounts);
  ~InstanceIdentityVerifier();

  // PermissionDenied with the reason when the signature does not verify against a configured
  // certificate, the signed content is not `document`, or the document does not name
  // `claimed_instance_id` (or its region or account is not allowed). InvalidArgument for bytes
  // that are not base64 DER PKCS#7 or JSON. Never includes the document in the message beyond
  // the fields it names.
  absl::StatusOr<InstanceIdentity> Verify(const std::string& document, const std::string& signature,
                                          const std::string& claimed_instance_id) const;

  size_t certificate_count() const;

 private:
  struct Certs;
  InstanceIdentityVerifier(std::unique_ptr<Certs> certs, std::vector<std::string> accounts);
  std::unique_ptr<Certs> certs_;
  const std::vector<std::string> allowed_accounts_;
};

// Size caps on what an agent may send (AWS's document is under 1 KiB, its signature under 2 KiB).
inline constexpr size_t kMaxIdentityDocumentBytes = 16 << 10;
inline constexpr size_t kMaxIdentitySignatureBytes = 16 << 10;

}  // namespace tripline::collector
