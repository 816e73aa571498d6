// Ingest through a real in-process server on 127.0.0.1:0 and a client that signs like an agent.
#include "collector/ingest/ingest_service.h"

#include <atomic>

#include "gtest/gtest.h"
#include "platform/crypto/digest.h"
#include "tests/unit/collector/collector_test_env.h"

namespace tripline::collector {
namespace {

using testing::TestAgent;
using testing::TestCollector;
using testing::WaitFor;
using tripline::v1::Event;
using tripline::v1::SignedBatch;

constexpr char kAgent[] = "i-0123456789abcdef0";

// A rule set that matches nothing, so ingest tests see only integrity incidents.
constexpr char kNoRules[] = "rules: []\n";

std::vector<SignedBatch> Batches(TestAgent& agent, int n, const std::string& dir = "/var/tmp") {
  std::vector<SignedBatch> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(agent.NextBatch(
        {TestAgent::FileEvent(absl::StrFormat("%s/f%d", dir, agent.seq() + 1),
                              tripline::v1::FileEvent::MODIFIED, agent.seq() + 1)}));
  }
  return out;
}

int64_t EventCount(CollectorStore* store, const std::string& agent_id) {
  EventQuery q;
  q.agent_id = agent_id;
  q.limit = 1000;
  absl::StatusOr<std::vector<EventRecord>> events = store->QueryEvents(q);
  return events.ok() ? static_cast<int64_t>(events->size()) : -1;
}

TEST(Ingest, EnrollThenThreeBatchesAreAckedAndStored) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  tripline::v1::EnrollResponse enrolled;
  ASSERT_TRUE(agent.Enroll(testing::kEnrollmentToken, &enrolled).ok());
  EXPECT_EQ(enrolled.durable_seq(), 0u);
  EXPECT_EQ(enrolled.durable_digest(), GenesisDigest());

  std::vector<SignedBatch> batches = Batches(agent, 3);
  TestAgent::PublishOutcome out = agent.Publish(batches, 3);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  ASSERT_FALSE(out.acks.empty());
  EXPECT_EQ(out.acks.back(), 3u);

  EXPECT_EQ(*c.store()->CountBatches(kAgent), 3);
  EXPECT_EQ(EventCount(c.store(), kAgent), 3);
  std::optional<AgentRecord> a = *c.store()->GetAgent(kAgent);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->durable_seq, 3u);
  EXPECT_EQ(a->durable_digest, ChainDigest(batches[2].batch()));
  EXPECT_EQ(a->public_key, agent.key().public_key());

  // Enrolling again with the same key answers where the chain stands.
  ASSERT_TRUE(agent.Enroll(testing::kEnrollmentToken, &enrolled).ok());
  EXPECT_EQ(enrolled.durable_seq(), 3u);
  EXPECT_EQ(enrolled.durable_digest(), ChainDigest(batches[2].batch()));
}

TEST(Ingest, StoredBatchIsTheSignedBytesAsReceived) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  std::vector<SignedBatch> batches = Batches(agent, 1);
  ASSERT_TRUE(agent.Publish(batches, 1).status.ok());
  // Re-verify from the database, as evidence would be checked offline.
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(c.dir().Sub("collector.db"));
  ASSERT_TRUE(db.ok());
  absl::StatusOr<Statement> s = (*db)->Prepare("SELECT batch, signature FROM batches");
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(*s->Step());
  EXPECT_EQ(s->ColumnText(0), batches[0].batch());
  EXPECT_TRUE(VerifyBatchSignature(agent.key().public_key(), s->ColumnText(0), s->ColumnText(1)));
}

// Each event is stored as the agent signed it, byte for byte, not as the collector would encode
// it again: here one event carries a field this collector does not know ahead of the known ones
// (encoding it again would move that field to the end).
TEST(Ingest, EventsAreStoredAsSignedByteForByte) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  tripline::v1::EventBatch header;
  header.set_agent_id(kAgent);
  header.set_batch_seq(1);
  header.set_prev_digest(GenesisDigest());
  const std::string known = TestAgent::FileEvent("/etc/a", tripline::v1::FileEvent::MODIFIED, 1)
                                .SerializeAsString();
  const std::string unknown_first =
      std::string("\xc0\x3e\x07", 3) +  // field 1000, varint 7
      TestAgent::FileEvent("/etc/b", tripline::v1::FileEvent::MODIFIED, 2).SerializeAsString();
  std::string bytes = header.SerializeAsString();
  for (const std::string& e : {known, unknown_first}) {
    ASSERT_LT(e.size(), 128u);
    bytes += '\x22';  // field 4 (events), length-delimited; a one-byte length follows
    bytes += static_cast<char>(e.size());
    bytes += e;
  }
  SignedBatch sb;
  sb.set_batch(bytes);
  sb.set_signature(SignBatch(agent.key(), bytes));
  TestAgent::PublishOutcome out = agent.Publish({sb}, 1);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  absl::StatusOr<std::vector<EventRecord>> events = c.store()->QueryEvents({});
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].event, known);
  EXPECT_EQ((*events)[1].event, unknown_first);
  Event parsed;
  ASSERT_TRUE(parsed.ParseFromString((*events)[1].event));
  EXPECT_EQ(parsed.file().path(), "/etc/b");
}

// The writer is congested while more signed bytes than its budget wait or are being committed,
// and no longer once they are answered: that is what makes streams pause their reads.
TEST(Ingest, WriterIsCongestedUntilQueuedBatchesAreCommitted) {
  tripline::testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<CollectorStore>> store =
      CollectorStore::Open(dir.Sub("collector.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  AgentRegistry registry;
  ASSERT_TRUE(registry.Load(store->get()).ok());
  absl::StatusOr<RuleSet> rules = ParseRules(kNoRules, "rules.yaml");
  ASSERT_TRUE(rules.ok());
  StoreWriter::Options options;
  options.congested_bytes = 1000;
  StoreWriter writer(store->get(), &registry, std::make_shared<const RuleSet>(*std::move(rules)),
                     options, SystemClock(), nullptr);
  std::atomic<int> answered{0};
  for (int i = 0; i < 2; ++i) {
    // A resend of a batch the store does not have: committed as nothing, answered ok.
    WriteItem item;
    item.kind = WriteItem::Kind::kDuplicate;
    item.agent_id = kAgent;
    item.batch_bytes = std::string(600, 'b');
    item.done = [&answered](const WriteResult& r) {
      EXPECT_TRUE(r.status.ok()) << r.status;
      ++answered;
    };
    ASSERT_TRUE(writer.Submit(item));
    EXPECT_EQ(writer.Congested(), i == 1);  // 600 bytes are within the budget, 1,200 are not
  }
  writer.Start();
  EXPECT_TRUE(WaitFor([&] { return answered == 2 && !writer.Congested(); }));
  writer.Stop();
}

TEST(Ingest, FlippedBitIsUnauthenticatedAndOpensAnIntegrityIncident) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  std::vector<SignedBatch> batches = Batches(agent, 1);
  std::string bytes = batches[0].batch();
  bytes[bytes.size() / 2] ^= 0x04;
  batches[0].set_batch(bytes);
  TestAgent::PublishOutcome out = agent.Publish(batches, 1);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(out.status.error_message().find("signature"), std::string::npos);
  EXPECT_EQ(*c.store()->CountBatches(kAgent), 0);
  ASSERT_TRUE(WaitFor([&] { return !c.IncidentsOf("integrity").empty(); }));
  IncidentRecord inc = c.IncidentsOf("integrity")[0];
  EXPECT_EQ(inc.severity, "critical");
  EXPECT_EQ(inc.agent_id, kAgent);
  EXPECT_NE(inc.summary.find("signature does not verify"), std::string::npos) << inc.summary;
}

TEST(Ingest, BatchSignedByAnotherKeyIsRefused) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  agent.ReplaceKey();  // same id, a key the collector never pinned
  TestAgent::PublishOutcome out = agent.Publish(Batches(agent, 1), 1);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(out.acks.empty());
  EXPECT_EQ(*c.store()->CountBatches(kAgent), 0);
  EXPECT_TRUE(WaitFor([&] { return !c.IncidentsOf("integrity").empty(); }));
}

TEST(Ingest, GapInBatchSeqIsRefusedAsDataLoss) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  ASSERT_TRUE(agent.Publish(Batches(agent, 3), 3).status.ok());
  tripline::v1::EventBatch skip;
  skip.set_agent_id(kAgent);
  skip.set_batch_seq(5);
  skip.set_prev_digest(std::string(32, '\x11'));
  TestAgent::PublishOutcome out = agent.Publish({agent.Seal(skip)}, 5);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_NE(out.status.error_message().find("expected 4"), std::string::npos)
      << out.status.error_message();
  EXPECT_EQ(*c.store()->CountBatches(kAgent), 3);
  ASSERT_TRUE(WaitFor([&] { return !c.IncidentsOf("integrity").empty(); }));
  EXPECT_NE(c.IncidentsOf("integrity")[0].summary.find("gap"), std::string::npos);
}

TEST(Ingest, ReorderedBatchesAreRefusedAndNothingAfterTheBreakIsStored) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  std::vector<SignedBatch> batches = Batches(agent, 3);  // honestly signed and chained
  TestAgent::PublishOutcome out = agent.Publish({batches[0], batches[2], batches[1]}, 3);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DATA_LOSS) << out.status.error_message();
  ASSERT_TRUE(WaitFor([&] { return !c.IncidentsOf("integrity").empty(); }));
  // The batch accepted before the break is kept, even though the stream closed with an error.
  EXPECT_TRUE(WaitFor([&] { return *c.store()->CountBatches(kAgent) == 1; }));
  c.Stop();  // drains the store thread
  c.Start();
  EXPECT_EQ(*c.store()->CountBatches(kAgent), 1);
}

TEST(Ingest, WrongPrevDigestIsAFork) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  ASSERT_TRUE(agent.Publish(Batches(agent, 1), 1).status.ok());
  tripline::v1::EventBatch fork;
  fork.set_agent_id(kAgent);
  fork.set_batch_seq(2);
  fork.set_prev_digest(std::string(32, '\x22'));
  TestAgent::PublishOutcome out = agent.Publish({agent.Seal(fork)}, 2);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(*c.store()->CountBatches(kAgent), 1);
  ASSERT_TRUE(WaitFor([&] { return !c.IncidentsOf("integrity").empty(); }));
  EXPECT_NE(c.IncidentsOf("integrity")[0].summary.find("fork"), std::string::npos);
}

TEST(Ingest, ReplayedBatchIsAckedAsDuplicateAndNotStoredTwice) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  std::vector<SignedBatch> batches = Batches(agent, 3);
  ASSERT_TRUE(agent.Publish(batches, 3).status.ok());
  TestAgent::PublishOutcome out = agent.Publish({batches[1], batches[0]}, 3);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  ASSERT_FALSE(out.acks.empty());
  EXPECT_EQ(out.acks.back(), 3u);
  EXPECT_EQ(*c.store()->CountBatches(kAgent), 3);
  EXPECT_EQ(EventCount(c.store(), kAgent), 3);
  EXPECT_TRUE(c.IncidentsOf("integrity").empty());
  // The chain continues after the replay.
  out = agent.Publish(Batches(agent, 1), 4);
  EXPECT_TRUE(out.status.ok());
  EXPECT_EQ(out.acks.back(), 4u);
}

TEST(Ingest, BatchNamingAnotherAgentIsRefused) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  tripline::v1::EventBatch other;
  other.set_agent_id("i-someoneelse");
  other.set_batch_seq(1);
  other.set_prev_digest(GenesisDigest());
  TestAgent::PublishOutcome out = agent.Publish({agent.Seal(other)}, 1);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(*c.store()->CountBatches(kAgent), 0);
  ASSERT_TRUE(WaitFor([&] { return !c.IncidentsOf("integrity").empty(); }));
  EXPECT_NE(c.IncidentsOf("integrity")[0].summary.find("i-someoneelse"), std::string::npos);
}

TEST(Ingest, GarbageBatchBytesAreInvalidArgument) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  SignedBatch sb;
  sb.set_batch(std::string("\xff\xff\xff\xff\x0f garbage", 13));
  sb.set_signature(SignBatch(agent.key(), sb.batch()));  // signed, but not an EventBatch
  TestAgent::PublishOutcome out = agent.Publish({sb}, 1);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(WaitFor([&] { return !c.IncidentsOf("integrity").empty(); }));
}

TEST(Ingest, StreamOfAnAgentThatNeverEnrolledIsUnauthenticated) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent("i-neverenrolled", c.channel());
  TestAgent::PublishOutcome out = agent.Publish(Batches(agent, 1), 1);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(out.status.error_message().find("i-neverenrolled is not enrolled"), std::string::npos);
  // A stream without the metadata at all is refused the same way.
  TestAgent::PublishOutcome bare = agent.Publish(Batches(agent, 1), 1, "bad id with spaces");
  EXPECT_EQ(bare.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

grpc::Status Reenroll(TestCollector& c, const std::string& agent_id,
                      tripline::v1::ReenrollAgentResponse* resp) {
  auto stub = tripline::v1::Operator::NewStub(c.channel());
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + testing::kOperatorToken);
  tripline::v1::ReenrollAgentRequest req;
  req.set_agent_id(agent_id);
  return stub->ReenrollAgent(&ctx, req, resp);
}

TEST(Ingest, NewKeyIsRefusedAndRecordedUntilAnOperatorAllowsOneReenrollment) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  ASSERT_TRUE(agent.Enroll().ok());  // the same key again: idempotent
  const std::string pinned = agent.key().public_key();
  agent.ReplaceKey();
  grpc::Status st = agent.Enroll();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(st.error_message(),
            absl::StrFormat("agent %s is enrolled with another key; an operator must allow it "
                            "with `triplinectl agents reenroll %s`",
                            kAgent, kAgent));
  EXPECT_EQ((*c.store()->GetAgent(kAgent))->public_key, pinned);
  // The refusal is already committed as an integrity incident when the answer arrives.
  std::vector<IncidentRecord> incidents = c.IncidentsOf("integrity");
  ASSERT_EQ(incidents.size(), 1u);
  EXPECT_NE(incidents[0].summary.find("enrollment with a new key refused"), std::string::npos);

  tripline::v1::ReenrollAgentResponse allowed;
  ASSERT_TRUE(Reenroll(c, kAgent, &allowed).ok());
  tripline::v1::ReenrollAgentResponse again;
  ASSERT_TRUE(Reenroll(c, kAgent, &again).ok());
  EXPECT_EQ(again.action_id(), allowed.action_id());  // one allowance, not two
  tripline::v1::ReenrollAgentResponse none;
  EXPECT_EQ(Reenroll(c, "i-0neverenrolled", &none).error_code(), grpc::StatusCode::NOT_FOUND);

  // The chain goes on under the new key from where it stood.
  tripline::v1::EnrollResponse head;
  ASSERT_TRUE(agent.Enroll(testing::kEnrollmentToken, &head).ok());
  EXPECT_EQ((*c.store()->GetAgent(kAgent))->public_key, agent.key().public_key());
  absl::StatusOr<std::optional<ActionRecord>> action = c.store()->GetAction(allowed.action_id());
  ASSERT_TRUE(action.ok() && *action);
  EXPECT_EQ((*action)->status, "done");
  EXPECT_EQ((*action)->kind, kReenrollActionKind);
  EXPECT_NE((*action)->actor, "");
  EXPECT_NE((*action)->result.find(ToHex(pinned)), std::string::npos);
  TestAgent::PublishOutcome out = agent.Publish(Batches(agent, 2), 2);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(EventCount(c.store(), kAgent), 2);
  ASSERT_TRUE(agent.Enroll().ok());  // the new key again: idempotent

  // Used up: the next new key is refused again, and survives a restart the same way.
  agent.ReplaceKey();
  EXPECT_EQ(agent.Enroll().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  c.Stop();
  c.Start();
  TestAgent after_restart(kAgent, c.channel());  // yet another key, on the new address
  EXPECT_EQ(after_restart.Enroll().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST(Ingest, WrongEnrollmentTokenIsPermissionDenied) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  grpc::Status st = agent.Enroll("not-the-token");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(st.error_message(), "enrollment token rejected");
  EXPECT_FALSE(c.store()->GetAgent(kAgent)->has_value());
}

TEST(Ingest, EnrollRejectsBadAgentIdAndKeySize) {
  TestCollector c(kNoRules);
  c.Start();
  auto stub = tripline::v1::Ingest::NewStub(c.channel());
  tripline::v1::EnrollRequest req;
  req.set_enrollment_token(testing::kEnrollmentToken);
  req.set_agent_id("i-1/../../etc");
  req.set_public_key(std::string(32, 'k'));
  tripline::v1::EnrollResponse resp;
  grpc::ClientContext ctx1;
  EXPECT_EQ(stub->Enroll(&ctx1, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.set_agent_id("i-1");
  req.set_public_key("short");
  grpc::ClientContext ctx2;
  EXPECT_EQ(stub->Enroll(&ctx2, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(Ingest, StoreSurvivesRestartAndTheChainContinues) {
  TestCollector c(kNoRules);
  c.Start();
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  ASSERT_TRUE(agent.Publish(Batches(agent, 2), 2).status.ok());
  c.Stop();
  c.Start();
  agent.Reconnect(c.channel());  // a new connection, same key and chain position
  tripline::v1::EnrollResponse enrolled;
  ASSERT_TRUE(agent.Enroll(testing::kEnrollmentToken, &enrolled).ok());
  EXPECT_EQ(enrolled.durable_seq(), 2u);
  TestAgent::PublishOutcome out = agent.Publish(Batches(agent, 2), 4);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.acks.back(), 4u);
  EXPECT_EQ(*c.store()->CountBatches(kAgent), 4);
}

TEST(Ingest, ManyBatchesBeyondTheInFlightLimitAllArrive) {
  TestCollector c(kNoRules);
  c.Start(/*max_in_flight=*/4);
  TestAgent agent(kAgent, c.channel());
  ASSERT_TRUE(agent.Enroll().ok());
  TestAgent::PublishOutcome out = agent.Publish(Batches(agent, 200), 200);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.acks.back(), 200u);
  // Acks never go backwards.
  for (size_t i = 1; i < out.acks.size(); ++i) EXPECT_GE(out.acks[i], out.acks[i - 1]);
  EXPECT_EQ(*c.store()->CountBatches(kAgent), 200);
}

}  // namespace
}  // namespace tripline::collector
