// ReadInstanceMetadata against the fake IMDSv2 (tests/fakes/imds_endpoint.py), which signs the
// identity document with a key made here by the openssl CLI.
#include "agent/identity/instance_metadata.h"

#include <curl/curl.h>

#include <cstdlib>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "platform/fs/file_util.h"
#include "tests/support/local_endpoint.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

using ::testing::HasSubstr;
using tripline::testing::LocalEndpoint;

constexpr char kInstance[] = "i-0123456789abcdef0";

// A self-signed RSA-2048 key pair standing in for AWS's regional certificate.
class IdentityKey {
 public:
  IdentityKey() {
    ok_ = std::system(("cd '" + dir_.path() +
                       "' && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test "
                       "-keyout k.pem -out c.pem >/dev/null 2>&1")
                          .c_str()) == 0;
  }
  bool ok() const { return ok_; }
  std::vector<std::string> Args() const {
    return {"--identity-cert", dir_.Sub("c.pem"), "--identity-key", dir_.Sub("k.pem")};
  }

 private:
  testing::TempDir dir_;
  bool ok_ = false;
};

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

size_t Collect(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

// A plain GET (no token): the HTTP status and body.
long PlainGet(const std::string& url, std::string* body) {
  CURL* h = curl_easy_init();
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &Collect);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
  long status = 0;
  if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(h);
  return status;
}

TEST(InstanceMetadata, ReadsIdAndSignedDocumentThroughImdsV2TokenFirst) {
  IdentityKey key;
  ASSERT_TRUE(key.ok());
  LocalEndpoint imds(TRIPLINE_IMDS_ENDPOINT_SCRIPT,
                     Concat({"--instance-id", kInstance, "--region", "eu-west-1"}, key.Args()));
  ASSERT_TRUE(imds.running());
  ImdsOptions o;
  o.endpoint = imds.url();
  absl::StatusOr<InstanceMetadata> m = ReadInstanceMetadata(o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->instance_id, kInstance);
  EXPECT_EQ(m->region, "eu-west-1");
  EXPECT_THAT(m->document, HasSubstr("\"instanceId\": \"i-0123456789abcdef0\""));
  EXPECT_GT(m->signature.size(), 500u);
  EXPECT_EQ(m->signature.find("-----"), std::string::npos);

  std::string requests;
  ASSERT_EQ(PlainGet(imds.url() + "/_tripline/requests", &requests), 200);
  EXPECT_EQ(requests.find("\"PUT /latest/api/token\""), 1u) << requests;  // first of the list
  EXPECT_THAT(requests, HasSubstr("GET /latest/dynamic/instance-identity/document"));
  EXPECT_THAT(requests, HasSubstr("GET /latest/dynamic/instance-identity/rsa2048"));
}

TEST(InstanceMetadata, FakeRefusesGetsWithoutAToken) {
  IdentityKey key;
  ASSERT_TRUE(key.ok());
  LocalEndpoint imds(TRIPLINE_IMDS_ENDPOINT_SCRIPT,
                     Concat({"--instance-id", kInstance}, key.Args()));
  ASSERT_TRUE(imds.running());
  std::string body;
  EXPECT_EQ(PlainGet(imds.url() + "/latest/dynamic/instance-identity/document", &body), 401);
  EXPECT_EQ(PlainGet(imds.url() + "/latest/meta-data/instance-id", &body), 401);
}

TEST(InstanceMetadata, TokenRefusedIsAClearError) {
  LocalEndpoint imds(TRIPLINE_IMDS_ENDPOINT_SCRIPT, {"--token-status", "403"});
  ASSERT_TRUE(imds.running());
  ImdsOptions o;
  o.endpoint = imds.url();
  absl::StatusOr<InstanceMetadata> m = ReadInstanceMetadata(o);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("IMDSv2 token"));
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("HTTP 403"));
}

TEST(InstanceMetadata, MissingDocumentNamesThePath) {
  LocalEndpoint imds(TRIPLINE_IMDS_ENDPOINT_SCRIPT, {"--instance-id", kInstance});  // no key
  ASSERT_TRUE(imds.running());
  ImdsOptions o;
  o.endpoint = imds.url();
  absl::StatusOr<InstanceMetadata> m = ReadInstanceMetadata(o);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              HasSubstr("/latest/dynamic/instance-identity/document: HTTP 404"));
}

TEST(InstanceMetadata, MalformedInstanceIdIsRefused) {
  IdentityKey key;
  ASSERT_TRUE(key.ok());
  LocalEndpoint imds(TRIPLINE_IMDS_ENDPOINT_SCRIPT,
                     Concat({"--instance-id", "../etc/passwd"}, key.Args()));
  ASSERT_TRUE(imds.running());
  ImdsOptions o;
  o.endpoint = imds.url();
  absl::StatusOr<InstanceMetadata> m = ReadInstanceMetadata(o);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("is not an EC2 instance id"));
}

TEST(InstanceMetadata, UnreachableImdsIsUnavailableAfterTheRetries) {
  ImdsOptions o;
  o.endpoint = "http://127.0.0.1:1";
  o.attempts = 2;
  o.retry_delay = absl::ZeroDuration();
  absl::StatusOr<InstanceMetadata> m = ReadInstanceMetadata(o);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("http://127.0.0.1:1"));
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("after 2 attempts"));
}

}  // namespace
}  // namespace tripline::agent
