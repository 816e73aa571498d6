// InstanceIdentityVerifier against PKCS#7 signatures made here with the openssl CLI, the way
// AWS makes them: RSA-2048 self-signed regional certificates, SHA-256, the document attached, no
// certificate in the message.
#include "collector/ingest/instance_identity.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "platform/fs/file_util.h"
#include "tests/support/temp_dir.h"
#include "tests/unit/collector/collector_test_env.h"

namespace tripline::collector {
namespace {

using ::testing::HasSubstr;

constexpr char kInstance[] = "i-0123456789abcdef0";

std::string Document(const std::string& instance_id = kInstance,
                     const std::string& region = "us-east-1",
                     const std::string& account = "111122223333") {
  return "{\n  \"accountId\" : \"" + account +
         "\",\n  \"architecture\" : \"x86_64\",\n  \"billingProducts\" : null,\n"
         "  \"marketplaceProductCodes\" : [ \"abc\" ],\n  \"instanceId\" : \"" +
         instance_id + "\",\n  \"region\" : \"" + region +
         "\",\n  \"pendingTime\" : \"2026-11-23T18:00:00Z\",\n  \"version\" : \"2017-09-30\"\n}";
}

// Self-signed RSA-2048 certificates and signatures over documents, by name.
class Signer {
 public:
  Signer() { ok_ = MakeCert("us-east-1") && MakeCert("eu-west-1") && MakeCert("forger"); }
  bool ok() const { return ok_; }
  std::string Pem(const std::string& name) const {
    return ReadFileToString(dir_.Sub(name + ".pem")).value_or("");
  }
  // Base64 of DER PKCS#7 in 64-column lines, as IMDS serves it. "" when openssl failed.
  std::string Sign(const std::string& document, const std::string& name, bool detached = false,
                   bool with_cert = false) {
    if (!WriteFileAtomic(dir_.Sub("doc"), document, 0600).ok()) return "";
    std::string cmd = "openssl smime -sign -binary -md sha256 -in doc -signer " + name +
                      ".pem -inkey " + name + ".key -outform PEM -out sig.pem";
    if (!detached) cmd += " -nodetach";
    if (!with_cert) cmd += " -nocerts";
    if (!Run(cmd)) return "";
    std::string pem = ReadFileToString(dir_.Sub("sig.pem")).value_or("");
    std::istringstream lines(pem);
    std::string line, out;
    while (std::getline(lines, line)) {
      if (line.rfind("-----", 0) == 0) continue;
      out += line + "\n";
    }
    return out;
  }

 private:
  bool Run(const std::string& cmd) {
    return std::system(("cd '" + dir_.path() + "' && " + cmd + " >/dev/null 2>&1").c_str()) == 0;
  }
  bool MakeCert(const std::string& name) {
    return Run("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=ec2-" + name +
               " -keyout " + name + ".key -out " + name + ".pem");
  }
  tripline::testing::TempDir dir_;
  bool ok_ = false;
};

class InstanceIdentityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { signer_ = new Signer(); }
  static void TearDownTestSuite() {
    delete signer_;
    signer_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(signer_->ok()) << "openssl could not make the test PKI"; }

  std::unique_ptr<InstanceIdentityVerifier> Verifier(std::vector<std::string> accounts = {}) {
    auto v = InstanceIdentityVerifier::Create(
        {{"us-east-1", signer_->Pem("us-east-1")}, {"eu-west-1", signer_->Pem("eu-west-1")}},
        std::move(accounts));
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *std::move(v) : nullptr;
  }

  static Signer* signer_;
};
Signer* InstanceIdentityTest::signer_ = nullptr;

TEST_F(InstanceIdentityTest, AttachedSignatureByTheRegionsCertificateVerifies) {
  const std::string doc = Document();
  const std::string sig = signer_->Sign(doc, "us-east-1");
  ASSERT_FALSE(sig.empty());
  absl::StatusOr<InstanceIdentity> id = Verifier()->Verify(doc, sig, kInstance);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->instance_id, kInstance);
  EXPECT_EQ(id->region, "us-east-1");
  EXPECT_EQ(id->account_id, "111122223333");
}

TEST_F(InstanceIdentityTest, DetachedSignatureVerifiesOverTheDocumentSent) {
  const std::string doc = Document();
  const std::string sig = signer_->Sign(doc, "us-east-1", /*detached=*/true);
  ASSERT_FALSE(sig.empty());
  EXPECT_TRUE(Verifier()->Verify(doc, sig, kInstance).ok());
  std::string tampered = absl::StrReplaceAll(doc, {{"111122223333", "999999999999"}});
  absl::StatusOr<InstanceIdentity> bad = Verifier()->Verify(tampered, sig, kInstance);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kPermissionDenied) << bad.status();
}

TEST_F(InstanceIdentityTest, PemArmouredSignatureIsAccepted) {
  const std::string doc = Document();
  const std::string sig =
      "-----BEGIN PKCS7-----\n" + signer_->Sign(doc, "us-east-1") + "-----END PKCS7-----\n";
  EXPECT_TRUE(Verifier()->Verify(doc, sig, kInstance).ok());
}

TEST_F(InstanceIdentityTest, FlippedSignatureByteIsRefused) {
  const std::string doc = Document();
  std::string der;
  ASSERT_TRUE(absl::Base64Unescape(
      absl::StrReplaceAll(signer_->Sign(doc, "us-east-1"), {{"\n", ""}}), &der));
  der[der.size() - 10] ^= 0x01;  // inside the RSA signature, the last field of the structure
  absl::StatusOr<InstanceIdentity> id = Verifier()->Verify(doc, absl::Base64Escape(der), kInstance);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kPermissionDenied) << id.status();
  EXPECT_THAT(std::string(id.status().message()), HasSubstr("does not verify"));
}

TEST_F(InstanceIdentityTest, SignatureByAnotherKeyIsRefusedEvenWithItsCertificateInside) {
  const std::string doc = Document();
  for (bool with_cert : {false, true}) {
    const std::string sig = signer_->Sign(doc, "forger", false, with_cert);
    ASSERT_FALSE(sig.empty());
    absl::StatusOr<InstanceIdentity> id = Verifier()->Verify(doc, sig, kInstance);
    EXPECT_EQ(id.status().code(), absl::StatusCode::kPermissionDenied) << with_cert;
    EXPECT_THAT(std::string(id.status().message()), HasSubstr("does not verify"));
  }
}

TEST_F(InstanceIdentityTest, DocumentOtherThanTheSignedOneIsRefused) {
  const std::string doc = Document();
  const std::string sig = signer_->Sign(doc, "us-east-1");
  absl::StatusOr<InstanceIdentity> id =
      Verifier()->Verify(Document("i-0aaaaaaaaaaaaaaaa"), sig, "i-0aaaaaaaaaaaaaaaa");
  EXPECT_EQ(id.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(id.status().message()), HasSubstr("differs from the document sent"));
}

TEST_F(InstanceIdentityTest, DocumentOfAnotherInstanceIsRefused) {
  const std::string doc = Document("i-0fffffffffffffff0");
  const std::string sig = signer_->Sign(doc, "us-east-1");
  absl::StatusOr<InstanceIdentity> id = Verifier()->Verify(doc, sig, kInstance);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(id.status().message()),
              HasSubstr("names instance 'i-0fffffffffffffff0', the agent claims"));
}

TEST_F(InstanceIdentityTest, RegionMustBeTheSigningCertificatesRegion) {
  const std::string doc = Document(kInstance, "us-east-1");
  const std::string sig = signer_->Sign(doc, "eu-west-1");
  absl::StatusOr<InstanceIdentity> id = Verifier()->Verify(doc, sig, kInstance);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(id.status().message()), HasSubstr("certificate of eu-west-1"));
}

TEST_F(InstanceIdentityTest, AccountOutsideTheAllowedListIsRefused) {
  const std::string doc = Document();
  const std::string sig = signer_->Sign(doc, "us-east-1");
  EXPECT_TRUE(Verifier({"111122223333"})->Verify(doc, sig, kInstance).ok());
  absl::StatusOr<InstanceIdentity> id = Verifier({"444455556666"})->Verify(doc, sig, kInstance);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(id.status().message()), HasSubstr("not an allowed account"));
}

TEST_F(InstanceIdentityTest, MissingOrMalformedInputIsRefusedClearly) {
  const std::string doc = Document();
  auto v = Verifier();
  EXPECT_EQ(v->Verify("", "", kInstance).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(v->Verify(doc, "", kInstance).status().code(), absl::StatusCode::kPermissionDenied);
  absl::StatusOr<InstanceIdentity> b64 = v->Verify(doc, "not base64 !!", kInstance);
  EXPECT_EQ(b64.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(b64.status().message()), HasSubstr("not base64"));
  absl::StatusOr<InstanceIdentity> der = v->Verify(doc, absl::Base64Escape("garbage"), kInstance);
  EXPECT_EQ(der.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(der.status().message()), HasSubstr("PKCS#7"));
  absl::StatusOr<InstanceIdentity> big =
      v->Verify(std::string(kMaxIdentityDocumentBytes + 1, 'x'), "AAAA", kInstance);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  // A signed document that is not JSON.
  const std::string sig = signer_->Sign("not json", "us-east-1");
  EXPECT_EQ(v->Verify("not json", sig, kInstance).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(InstanceIdentityTest, CertificatesThatDoNotParseAreNamedByRegion) {
  auto v = InstanceIdentityVerifier::Create({{"ap-south-1", "not a certificate"}}, {});
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("ap-south-1"));
  EXPECT_FALSE(InstanceIdentityVerifier::Create({}, {}).ok());
  tripline::testing::TempDir dir;
  auto missing = InstanceIdentityVerifier::Load({{"us-east-1", dir.Sub("nope.pem")}}, {});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.pem"));
}

// The whole path in process: a collector that requires the document, agents enrolling with a
// good one, none, and one signed by another key.
TEST_F(InstanceIdentityTest, CollectorRequiringTheDocumentPinsOnlyProvenInstances) {
  tripline::testing::TempDir dir;
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("us-east-1.pem"), signer_->Pem("us-east-1"), 0644).ok());
  testing::TestCollector c("rules: []\n");
  c.Configure([&](CollectorConfig& config) {
    config.identity.require_document = true;
    config.identity.aws_certificates = {{"us-east-1", dir.Sub("us-east-1.pem")}};
    config.identity.allowed_accounts = {"111122223333"};
  });
  c.Start();
  auto stub = tripline::v1::Ingest::NewStub(c.channel());
  auto enroll = [&](const std::string& agent_id, const std::string& doc, const std::string& sig,
                    const std::string& token = testing::kEnrollmentToken) {
    grpc::ClientContext ctx;
    tripline::v1::EnrollRequest req;
    req.set_agent_id(agent_id);
    req.set_public_key(SigningKey::Generate()->public_key());
    req.set_enrollment_token(token);
    req.set_identity_document(doc);
    req.set_identity_signature(sig);
    tripline::v1::EnrollResponse resp;
    return stub->Enroll(&ctx, req, &resp);
  };
  const std::string doc = Document();
  grpc::Status none = enroll(kInstance, "", "");
  EXPECT_EQ(none.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(none.error_message(), HasSubstr("requires them"));
  grpc::Status forged = enroll(kInstance, doc, signer_->Sign(doc, "forger"));
  EXPECT_EQ(forged.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_FALSE(*c.store()->GetAgent(kInstance));
  std::vector<IncidentRecord> incidents = c.IncidentsOf("integrity");
  ASSERT_EQ(incidents.size(), 1u);  // both refusals, on one open incident of the instance
  EXPECT_THAT(incidents[0].summary, HasSubstr("does not verify"));
  EXPECT_THAT(incidents[0].summary, HasSubstr("requires them"));

  // A genuine document does not stand in for the enrollment token: both are needed.
  const std::string sig = signer_->Sign(doc, "us-east-1");
  EXPECT_EQ(enroll(kInstance, doc, sig, "").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(enroll(kInstance, doc, sig, "wrong-token").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_FALSE(*c.store()->GetAgent(kInstance));

  grpc::Status good = enroll(kInstance, doc, sig);
  EXPECT_TRUE(good.ok()) << good.error_message();
  EXPECT_TRUE(*c.store()->GetAgent(kInstance));
}

}  // namespace
}  // namespace tripline::collector
