// Operators identified by client certificates: the collector's real operator service behind mTLS,
// certificates made by the test with the openssl CLI, roles from the common name.
#include "collector/api/operator_service.h"
#include "collector/auth/operator_auth.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "platform/net/grpc_credentials.h"
#include "tests/support/test_pki.h"
#include "tripline/v1/operator.grpc.pb.h"

namespace tripline::collector {
namespace {

namespace v1 = tripline::v1;

class OperatorMtls : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(pki_.ok() && pki_.AddClient("alice", "alice.ops") &&
                pki_.AddClient("mallory", "mallory.ops"))
        << "openssl could not make the test PKI";
    auto store = CollectorStore::Open(dir_.Sub("collector.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auth_ = std::make_unique<OperatorAuthorizer>(
        nullptr, "", std::vector<std::pair<std::string, Role>>{{"alice.ops", Role::kRespond}});
    service_ = std::make_unique<OperatorService>(store_.get(), auth_.get());
    auto creds = MakeServerCredentials(ServerTlsOptions{
        false, pki_.Path("server.pem"), pki_.Path("server.key"), pki_.Path("ca.pem")});
    ASSERT_TRUE(creds.ok()) << creds.status();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *creds, &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  std::unique_ptr<v1::Operator::Stub> StubAs(const std::string& client) {
    auto creds = MakeChannelCredentials(ClientTlsOptions{
        false, pki_.Path("ca.pem"), pki_.Path(client + ".pem"), pki_.Path(client + ".key")});
    EXPECT_TRUE(creds.ok()) << creds.status();
    return v1::Operator::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), *creds));
  }

  template <typename Req, typename Resp, typename Method>
  grpc::StatusCode Call(v1::Operator::Stub& stub, Method method, const Req& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    Resp resp;
    return (stub.*method)(&ctx, req, &resp).error_code();
  }

  tripline::testing::TestPki pki_;
  tripline::testing::TempDir dir_;
  std::unique_ptr<CollectorStore> store_;
  std::unique_ptr<OperatorAuthorizer> auth_;
  std::unique_ptr<OperatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(OperatorMtls, ListedCertificateGetsItsRoleAndNoMore) {
  auto alice = StubAs("alice");
  EXPECT_EQ((Call<v1::ListAgentsRequest, v1::ListAgentsResponse>(
                *alice, &v1::Operator::Stub::ListAgents, v1::ListAgentsRequest())),
            grpc::StatusCode::OK);
  // respond: allowed through auth (then: no such incident).
  v1::UpdateIncidentRequest ack;
  ack.set_id(1);
  ack.set_status("acknowledged");
  EXPECT_EQ((Call<v1::UpdateIncidentRequest, v1::UpdateIncidentResponse>(
                *alice, &v1::Operator::Stub::UpdateIncident, ack)),
            grpc::StatusCode::NOT_FOUND);
  // admin: not hers.
  EXPECT_EQ((Call<v1::ReloadRulesRequest, v1::ReloadRulesResponse>(
                *alice, &v1::Operator::Stub::ReloadRules, v1::ReloadRulesRequest())),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(OperatorMtls, ValidButUnlistedCertificateIsUnauthenticated) {
  auto mallory = StubAs("mallory");
  EXPECT_EQ((Call<v1::ListAgentsRequest, v1::ListAgentsResponse>(
                *mallory, &v1::Operator::Stub::ListAgents, v1::ListAgentsRequest())),
            grpc::StatusCode::UNAUTHENTICATED);
  // An agent's certificate (signed by the same CA) is no operator either.
  auto agent = StubAs("client");
  EXPECT_EQ((Call<v1::ListAgentsRequest, v1::ListAgentsResponse>(
                *agent, &v1::Operator::Stub::ListAgents, v1::ListAgentsRequest())),
            grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace tripline::collector
