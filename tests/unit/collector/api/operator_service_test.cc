// The operator service on the collector's real server (shared with Ingest), over loopback.
#include "collector/api/operator_service.h"

#include "gtest/gtest.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "tests/unit/collector/collector_test_env.h"

namespace tripline::collector {
namespace {

using testing::TestAgent;
using testing::TestCollector;
using testing::WaitFor;
using namespace tripline::v1;  // NOLINT

void Authorize(grpc::ClientContext* ctx, const std::string& token = testing::kOperatorToken) {
  ctx->AddMetadata("authorization", "Bearer " + token);
}

TEST(OperatorApi, CallsWithoutOrWithAWrongTokenAreUnauthenticated) {
  TestCollector c;
  c.Start();
  auto stub = Operator::NewStub(c.channel());
  ListAgentsResponse resp;
  grpc::ClientContext none;
  grpc::Status st = stub->ListAgents(&none, ListAgentsRequest(), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext wrong;
  Authorize(&wrong, "guess");
  EXPECT_EQ(stub->ListAgents(&wrong, ListAgentsRequest(), &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext basic;
  basic.AddMetadata("authorization", std::string("Basic ") + testing::kOperatorToken);
  EXPECT_EQ(stub->ListAgents(&basic, ListAgentsRequest(), &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  GetIncidentResponse inc;
  grpc::ClientContext none2;
  GetIncidentRequest req;
  req.set_id(1);
  EXPECT_EQ(stub->GetIncident(&none2, req, &inc).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST(OperatorApi, CorrectTokenSeesAgentsEventsIncidentsAndActions) {
  auto ec2 = std::make_shared<testing::FakeInstanceNetwork::State>();
  testing::AddInstance(*ec2, testing::TwoInterfaceInstance("i-0api"));
  TestCollector c(testing::kEtcRule, ec2);
  c.Start();
  TestAgent agent("i-0api", c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  std::vector<SignedBatch> batches;
  for (int i = 1; i <= 3; ++i) {
    batches.push_back(agent.NextBatch({TestAgent::FileEvent(
        i == 3 ? "/etc/hosts" : absl::StrFormat("/srv/f%d", i), FileEvent::MODIFIED, i)}));
  }
  ASSERT_TRUE(agent.Publish(batches, 3).status.ok());
  ASSERT_TRUE(WaitFor([&] {
    auto i = c.IncidentsOf("etc-changed");
    auto a = c.store()->ListActions(0, 1000);
    return !i.empty() && i[0].status == "contained" && a.ok() && !a->empty() &&
           (*a)[0].status == "done";
  }));

  auto stub = Operator::NewStub(c.channel());
  ListAgentsResponse agents;
  grpc::ClientContext c1;
  Authorize(&c1);
  ASSERT_TRUE(stub->ListAgents(&c1, ListAgentsRequest(), &agents).ok());
  ASSERT_EQ(agents.agents_size(), 1);
  EXPECT_EQ(agents.agents(0).agent_id(), "i-0api");
  EXPECT_EQ(agents.agents(0).durable_seq(), 3u);
  EXPECT_EQ(agents.agents(0).isolation_state(), "isolated");
  EXPECT_EQ(agents.agents(0).public_key(), agent.key().public_key());

  // Paging two at a time.
  QueryEventsRequest q;
  q.set_agent_id("i-0api");
  q.set_limit(2);
  QueryEventsResponse page;
  grpc::ClientContext c2;
  Authorize(&c2);
  ASSERT_TRUE(stub->QueryEvents(&c2, q, &page).ok());
  ASSERT_EQ(page.events_size(), 2);
  EXPECT_EQ(page.events(0).event().file().path(), "/srv/f1");
  EXPECT_NE(page.next_after_id(), 0);
  q.set_after_id(page.next_after_id());
  grpc::ClientContext c3;
  Authorize(&c3);
  ASSERT_TRUE(stub->QueryEvents(&c3, q, &page).ok());
  ASSERT_EQ(page.events_size(), 1);
  EXPECT_EQ(page.events(0).event().file().path(), "/etc/hosts");
  EXPECT_EQ(page.events(0).batch_seq(), 3u);
  EXPECT_EQ(page.next_after_id(), 0);
  q.set_kind("dns");
  grpc::ClientContext c4;
  Authorize(&c4);
  EXPECT_EQ(stub->QueryEvents(&c4, q, &page).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  ListIncidentsResponse incidents;
  grpc::ClientContext c5;
  Authorize(&c5);
  ASSERT_TRUE(stub->ListIncidents(&c5, ListIncidentsRequest(), &incidents).ok());
  ASSERT_EQ(incidents.incidents_size(), 1);
  EXPECT_EQ(incidents.incidents(0).status(), "contained");

  GetIncidentRequest get;
  get.set_id(incidents.incidents(0).id());
  GetIncidentResponse detail;
  grpc::ClientContext c6;
  Authorize(&c6);
  ASSERT_TRUE(stub->GetIncident(&c6, get, &detail).ok());
  ASSERT_EQ(detail.events_size(), 1);
  EXPECT_EQ(detail.events(0).event().file().path(), "/etc/hosts");
  ASSERT_GT(detail.actions_size(), 10);  // isolate, then each AWS call of the recipe
  EXPECT_EQ(detail.actions(0).kind(), "isolate");
  int modifies = 0;
  for (const auto& a : detail.actions()) {
    EXPECT_EQ(a.status(), "done") << a.kind() << " " << a.target();
    if (a.kind() == "ec2:ModifyNetworkInterfaceAttribute") ++modifies;
  }
  EXPECT_EQ(modifies, 4);  // each interface: untrack group, then isolation group
  get.set_id(9999);
  grpc::ClientContext c7;
  Authorize(&c7);
  EXPECT_EQ(stub->GetIncident(&c7, get, &detail).error_code(), grpc::StatusCode::NOT_FOUND);

  ListActionsResponse actions;
  grpc::ClientContext c8;
  Authorize(&c8);
  ASSERT_TRUE(stub->ListActions(&c8, ListActionsRequest(), &actions).ok());
  EXPECT_EQ(actions.actions_size(), detail.actions_size());
  for (const Action& a : actions.actions()) EXPECT_EQ(a.status(), "done") << a.kind();
}

// The reflection service speaks grpc.reflection.v1alpha, whose generated code Debian does not
// ship: call it through the generic stub with a hand-encoded ServerReflectionRequest
// {list_services: ""} (field 7, length-delimited, empty) and look for our service names in the
// ListServiceResponse bytes.
TEST(OperatorApi, ReflectionListsBothServices) {
  TestCollector c;
  c.Start();
  grpc::GenericStub stub(c.channel());
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto call = stub.PrepareCall(
      &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto step = [&](intptr_t want) {
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), want);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(1));
  const std::string request("\x3a\x00", 2);
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(2));
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(3));
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(in.Dump(&slices).ok());
  std::string answer;
  for (const grpc::Slice& s : slices) {
    answer.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  EXPECT_NE(answer.find("tripline.v1.Operator"), std::string::npos);
  EXPECT_NE(answer.find("tripline.v1.Ingest"), std::string::npos);
  call->WritesDone(reinterpret_cast<void*>(4));
  ASSERT_TRUE(step(4));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  ASSERT_TRUE(step(5));
  EXPECT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace tripline::collector
