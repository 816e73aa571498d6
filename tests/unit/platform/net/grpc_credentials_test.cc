// TLS between the programs with certificates the test makes with the openssl CLI: the client pins
// the collector's CA, mTLS is enforced when the server names a client CA, and plaintext happens
// only when asked for.
#include "platform/net/grpc_credentials.h"

#include <cstdlib>
#include <fstream>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/test_pki.h"
#include "tripline/v1/ingest.grpc.pb.h"

namespace tripline {
namespace {

class EnrollAnswers final : public tripline::v1::Ingest::Service {
  grpc::Status Enroll(grpc::ServerContext*, const tripline::v1::EnrollRequest*,
                      tripline::v1::EnrollResponse* resp) override {
    resp->set_durable_seq(7);
    return grpc::Status::OK;
  }
};

class Tls : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(pki_.ok()) << "openssl could not make the test PKI"; }

  int Serve(const ServerTlsOptions& options) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = MakeServerCredentials(options);
    EXPECT_TRUE(creds.ok()) << creds.status();
    if (!creds.ok()) return 0;
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *creds, &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    return port;
  }

  grpc::Status Call(int port, const ClientTlsOptions& options) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds =
        MakeChannelCredentials(options);
    EXPECT_TRUE(creds.ok()) << creds.status();
    if (!creds.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "no credentials");
    auto stub = tripline::v1::Ingest::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), *creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    tripline::v1::EnrollRequest req;
    tripline::v1::EnrollResponse resp;
    grpc::Status st = stub->Enroll(&ctx, req, &resp);
    if (st.ok()) {
      EXPECT_EQ(resp.durable_seq(), 7u);
    }
    return st;
  }

  ServerTlsOptions ServerOptions(bool mtls) const {
    return ServerTlsOptions{false, pki_.Path("server.pem"), pki_.Path("server.key"),
                            mtls ? pki_.Path("ca.pem") : ""};
  }

  tripline::testing::TestPki pki_;
  EnrollAnswers service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(Tls, ClientPinningTheCollectorsCaConnects) {
  const int port = Serve(ServerOptions(false));
  ASSERT_GT(port, 0);
  grpc::Status st = Call(port, ClientTlsOptions{false, pki_.Path("ca.pem"), "", ""});
  EXPECT_TRUE(st.ok()) << st.error_message();
}

TEST_F(Tls, ServerCertificateFromAnotherCaIsRefused) {
  const int port = Serve(ServerOptions(false));
  ASSERT_GT(port, 0);
  grpc::Status st = Call(port, ClientTlsOptions{false, pki_.Path("other-ca.pem"), "", ""});
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
}

TEST_F(Tls, PlaintextClientCannotTalkToATlsServer) {
  const int port = Serve(ServerOptions(false));
  ASSERT_GT(port, 0);
  grpc::Status st = Call(port, ClientTlsOptions{true, "", "", ""});
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
}

TEST_F(Tls, MutualTlsRequiresAClientCertificateFromTheClientCa) {
  const int port = Serve(ServerOptions(true));
  ASSERT_GT(port, 0);
  grpc::Status without = Call(port, ClientTlsOptions{false, pki_.Path("ca.pem"), "", ""});
  EXPECT_EQ(without.error_code(), grpc::StatusCode::UNAVAILABLE) << without.error_message();
  grpc::Status with =
      Call(port, ClientTlsOptions{false, pki_.Path("ca.pem"), pki_.Path("client.pem"),
                                  pki_.Path("client.key")});
  EXPECT_TRUE(with.ok()) << with.error_message();
}

TEST_F(Tls, MissingOrUnreadableFilesAreNamed) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> c =
      MakeChannelCredentials(ClientTlsOptions{false, "", "", ""});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("tls.ca_file"), std::string::npos) << c.status();
  c = MakeChannelCredentials(ClientTlsOptions{false, pki_.Path("nope.pem"), "", ""});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find(pki_.Path("nope.pem")), std::string::npos) << c.status();
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> s =
      MakeServerCredentials(ServerTlsOptions{false, pki_.Path("server.pem"), "", ""});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("tls.key_file"), std::string::npos) << s.status();
}

}  // namespace
}  // namespace tripline
