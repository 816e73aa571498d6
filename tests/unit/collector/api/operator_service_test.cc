// The operator service on the collector's real server (shared with Ingest), over loopback.
#include "collector/api/operator_service.h"

#include <map>

#include "collector/auth/operator_auth.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "tests/unit/collector/collector_test_env.h"

namespace tripline::collector {
namespace {

using testing::TestAgent;
using testing::TestCollector;
using testing::WaitFor;
using namespace tripline::v1;  // NOLINT

constexpr char kNoRulesForFilters[] = "rules: []\n";

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

// Calls `method` (a full "/pkg.Service/Method" name) with an empty request and `token`; the
// status is all these tests look at.
grpc::Status CallEmpty(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                       const std::string& token) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  if (!token.empty()) Authorize(&ctx, token);
  grpc::ByteBuffer request;  // empty bytes: the default message
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  auto call = stub.PrepareUnaryCall(&ctx, method, request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  EXPECT_TRUE(cq.Next(&tag, &ok));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// The role each Operator RPC needs. A new RPC must be added here, or the matrix test fails.
const std::map<std::string, Role>& RequiredRoles() {
  static const auto* roles = new std::map<std::string, Role>{
      {"ListAgents", Role::kRead},     {"QueryEvents", Role::kRead},
      {"QueryCloudEvents", Role::kRead},
      {"ListIncidents", Role::kRead},  {"GetIncident", Role::kRead},
      {"ListActions", Role::kRead},    {"UpdateIncident", Role::kRespond},
      {"ExportEvidence", Role::kRead},  {"ReloadRules", Role::kAdmin},
      {"TestRule", Role::kRespond},    {"ReenrollAgent", Role::kAdmin},
      {"Isolate", Role::kRespond},    {"Release", Role::kRespond},
      {"Respond", Role::kRespond},    {"ApproveIncident", Role::kRespond},
  };
  return *roles;
}

TEST(OperatorApi, EveryRpcChecksTheCallersRole) {
  TestCollector c;
  c.Start();
  auto key = LoadOrCreateTokenKey(c.dir().Sub("operator-token.key"));
  ASSERT_TRUE(key.ok()) << key.status();
  OperatorTokens tokens(c.store(), *key);
  std::map<Role, std::string> token_of;
  for (Role r : {Role::kRead, Role::kRespond, Role::kAdmin}) {
    auto created = tokens.Create("op-" + RoleName(r), r, "test", 1);
    ASSERT_TRUE(created.ok()) << created.status();
    token_of[r] = created->token;
  }
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName("tripline.v1.Operator");
  ASSERT_NE(service, nullptr);
  ASSERT_GE(service->method_count(), 5);
  for (int i = 0; i < service->method_count(); ++i) {
    const google::protobuf::MethodDescriptor* m = service->method(i);
    if (m->client_streaming() || m->server_streaming()) continue;  // checked where they are tested
    auto required = RequiredRoles().find(m->name());
    ASSERT_NE(required, RequiredRoles().end()) << m->name() << " has no required role listed";
    const std::string method = "/" + std::string(service->full_name()) + "/" + m->name();
    EXPECT_EQ(CallEmpty(c.channel(), method, "").error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << m->name();
    EXPECT_EQ(CallEmpty(c.channel(), method, "tl1_1_nope").error_code(),
              grpc::StatusCode::UNAUTHENTICATED)
        << m->name();
    for (const auto& [role, token] : token_of) {
      const grpc::StatusCode code = CallEmpty(c.channel(), method, token).error_code();
      if (role < required->second) {
        EXPECT_EQ(code, grpc::StatusCode::PERMISSION_DENIED) << m->name() << " " << RoleName(role);
      } else {
        EXPECT_NE(code, grpc::StatusCode::PERMISSION_DENIED) << m->name() << " " << RoleName(role);
        EXPECT_NE(code, grpc::StatusCode::UNAUTHENTICATED) << m->name() << " " << RoleName(role);
      }
    }
  }
  // A revoked token is refused at once.
  ASSERT_TRUE(tokens.Revoke("op-admin", "test", 2).ok());
  EXPECT_EQ(CallEmpty(c.channel(), "/tripline.v1.Operator/ListAgents", token_of[Role::kAdmin])
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST(OperatorApi, IncidentLifecycleNotesAndAssigneeAreAuditedWithTheCaller) {
  auto ec2 = std::make_shared<testing::FakeInstanceNetwork::State>();
  ec2->instances["i-0life"] = testing::TwoInterfaceInstance("i-0life");
  TestCollector c(testing::kEtcRule, ec2);
  c.Start();
  TestAgent agent("i-0life", c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  ASSERT_TRUE(
      agent
          .Publish({agent.NextBatch({TestAgent::FileEvent("/etc/shadow", FileEvent::MODIFIED, 1)})},
                   1)
          .status.ok());
  ASSERT_TRUE(WaitFor([&] {
    auto i = c.IncidentsOf("etc-changed");
    return !i.empty() && i[0].status == "contained";
  }));
  const int64_t id = c.IncidentsOf("etc-changed")[0].id;
  auto key = LoadOrCreateTokenKey(c.dir().Sub("operator-token.key"));
  ASSERT_TRUE(key.ok());
  OperatorTokens tokens(c.store(), *key);
  const std::string alice = tokens.Create("alice", Role::kRespond, "test", 1)->token;
  auto stub = Operator::NewStub(c.channel());
  auto update = [&](UpdateIncidentRequest req, UpdateIncidentResponse* resp = nullptr) {
    req.set_id(req.id() == 0 ? id : req.id());
    grpc::ClientContext ctx;
    Authorize(&ctx, alice);
    UpdateIncidentResponse ignored;
    return stub->UpdateIncident(&ctx, req, resp != nullptr ? resp : &ignored);
  };

  UpdateIncidentRequest back;
  back.set_status("acknowledged");  // contained -> acknowledged is backwards
  grpc::Status st = update(back);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(st.error_message().find("is contained"), std::string::npos) << st.error_message();

  UpdateIncidentRequest resolve;
  resolve.set_status("resolved");
  resolve.set_note("root cause: a config push; keys rotated");
  resolve.set_assignee("alice");
  UpdateIncidentResponse resolved;
  ASSERT_TRUE(update(resolve, &resolved).ok());
  EXPECT_EQ(resolved.incident().status(), "resolved");
  EXPECT_EQ(resolved.incident().assignee(), "alice");

  UpdateIncidentRequest reopen;
  reopen.set_status("open");
  reopen.set_unassign(true);
  ASSERT_TRUE(update(reopen).ok());
  auto stored = c.IncidentsOf("etc-changed");
  EXPECT_EQ(stored[0].status, "open");
  EXPECT_EQ(stored[0].assignee, "");

  for (auto bad : {std::string("bogus"), std::string("")}) {
    UpdateIncidentRequest r;
    r.set_status(bad);
    EXPECT_EQ(update(r).error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
  }
  UpdateIncidentRequest noisy;
  noisy.set_note(std::string(5000, 'x'));
  EXPECT_EQ(update(noisy).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  UpdateIncidentRequest escape;
  escape.set_assignee("\x1b[31mroot");
  EXPECT_EQ(update(escape).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  UpdateIncidentRequest missing;
  missing.set_id(9999);
  missing.set_note("x");
  EXPECT_EQ(update(missing).error_code(), grpc::StatusCode::NOT_FOUND);

  auto actions = c.store()->ListActions(id, 100);
  ASSERT_TRUE(actions.ok());
  std::vector<std::string> trail;
  for (const ActionRecord& a : *actions) {
    if (a.kind.rfind("incident:", 0) == 0) {
      EXPECT_EQ(a.actor, "token:alice") << a.kind;
      trail.push_back(a.kind + " " + a.detail);
    }
  }
  EXPECT_EQ(trail, (std::vector<std::string>{
                       "incident:status contained -> resolved", "incident:assign to alice",
                       "incident:note root cause: a config push; keys rotated",
                       "incident:status resolved -> open", "incident:assign unassigned"}));
}

TEST(OperatorApi, EventFiltersAndWatchingNewEvents) {
  TestCollector c(kNoRulesForFilters);
  c.Start();
  TestAgent agent("i-0flt", c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  // Agent times: event seq i happens at T0 + i ns.
  std::vector<SignedBatch> batches;
  batches.push_back(
      agent.NextBatch({TestAgent::FileEvent("/etc/passwd", FileEvent::MODIFIED, 1),
                       TestAgent::FileEvent("/etc/ssh/sshd_config", FileEvent::MODIFIED, 2),
                       TestAgent::FileEvent("/srv/app/main.py", FileEvent::CREATED, 3)}));
  ASSERT_TRUE(agent.Publish(batches, 1).status.ok());
  auto stub = Operator::NewStub(c.channel());
  auto query = [&](QueryEventsRequest q) {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    QueryEventsResponse resp;
    grpc::Status st = stub->QueryEvents(&ctx, q, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    std::vector<std::string> paths;
    for (const auto& e : resp.events()) paths.push_back(e.event().file().path());
    return paths;
  };
  QueryEventsRequest glob;
  glob.set_path_glob("/etc/*");
  EXPECT_EQ(query(glob), (std::vector<std::string>{"/etc/passwd", "/etc/ssh/sshd_config"}));
  QueryEventsRequest text;
  text.set_text("main.py");
  EXPECT_EQ(query(text), (std::vector<std::string>{"/srv/app/main.py"}));
  QueryEventsRequest range;
  range.set_since_unix_ns(1700000000000000000LL + 2);
  range.set_until_unix_ns(1700000000000000000LL + 3);
  EXPECT_EQ(query(range), (std::vector<std::string>{"/etc/ssh/sshd_config"}));
  QueryEventsRequest empty_range;
  empty_range.set_since_unix_ns(5);
  empty_range.set_until_unix_ns(5);
  grpc::ClientContext bad_ctx;
  Authorize(&bad_ctx);
  QueryEventsResponse bad_resp;
  EXPECT_EQ(stub->QueryEvents(&bad_ctx, empty_range, &bad_resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Watching: unauthenticated callers are refused; a reader sees only what is new and matches.
  {
    grpc::ClientContext ctx;
    auto reader = stub->WatchEvents(&ctx, QueryEventsRequest());
    StoredEvent ignored;
    EXPECT_FALSE(reader->Read(&ignored));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  grpc::ClientContext watch_ctx;
  Authorize(&watch_ctx);
  watch_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  QueryEventsRequest etc_only;
  etc_only.set_path_glob("/etc/*");
  // From the last event seen so far (what `events --follow` does after printing the backlog).
  int64_t last_id = 0;
  {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    QueryEventsResponse all;
    ASSERT_TRUE(stub->QueryEvents(&ctx, QueryEventsRequest(), &all).ok());
    ASSERT_EQ(all.events_size(), 3);
    last_id = all.events(2).id();
  }
  etc_only.set_after_id(last_id);
  auto reader = stub->WatchEvents(&watch_ctx, etc_only);
  ASSERT_TRUE(
      agent
          .Publish({agent.NextBatch({TestAgent::FileEvent("/srv/other", FileEvent::MODIFIED, 4),
                                     TestAgent::FileEvent("/etc/shadow", FileEvent::MODIFIED, 5)})},
                   2)
          .status.ok());
  StoredEvent got;
  ASSERT_TRUE(reader->Read(&got));
  EXPECT_EQ(got.event().file().path(), "/etc/shadow");  // not the old /etc ones, not /srv
  watch_ctx.TryCancel();
  while (reader->Read(&got)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
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
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
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
