// An attacker on the network (or holding another agent's key) against a real collector on
// 127.0.0.1: every forgery is refused with a clear status and recorded as an integrity incident,
// and the honest agent's stream goes on as if nothing happened.
#include "collector/ingest/ingest_service.h"

#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/sync_stream.h"
#include "gtest/gtest.h"
#include "tests/unit/collector/collector_test_env.h"

namespace tripline::collector {
namespace {

using testing::TestAgent;
using testing::TestCollector;
using testing::WaitFor;
using tripline::v1::SignedBatch;

constexpr char kHonest[] = "i-0honest000000001";
constexpr char kOther[] = "i-0other0000000002";
constexpr char kNoRules[] = "rules: []\n";

SignedBatch Next(TestAgent& agent) {
  return agent.NextBatch({TestAgent::FileEvent(
      absl::StrFormat("/var/tmp/f%d", agent.seq() + 1), tripline::v1::FileEvent::MODIFIED,
      agent.seq() + 1)});
}

class IngestAttack : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(c_.channel(), nullptr);
    ASSERT_TRUE(honest_.Enroll().ok());
    ASSERT_TRUE(other_.Enroll().ok());
    sent_.push_back(Next(honest_));
    sent_.push_back(Next(honest_));
    ASSERT_TRUE(honest_.Publish(sent_, 2).status.ok());
  }

  // The honest agent publishes one more batch on a fresh stream and it is acked and stored.
  void HonestStreamStillWorks() {
    sent_.push_back(Next(honest_));
    TestAgent::PublishOutcome out = honest_.Publish({sent_.back()}, honest_.seq());
    EXPECT_TRUE(out.status.ok()) << out.status.error_message();
    ASSERT_FALSE(out.acks.empty());
    EXPECT_EQ(out.acks.back(), honest_.seq());
    EXPECT_EQ(*c_.store()->CountBatches(kHonest), static_cast<int64_t>(honest_.seq()));
  }

  // The integrity incident of `agent` mentions `what` (incidents are written after the refusal).
  bool IncidentSays(const std::string& agent, const std::string& what) {
    return WaitFor([&] {
      for (const IncidentRecord& i : c_.IncidentsOf("integrity")) {
        if (i.agent_id == agent && i.summary.find(what) != std::string::npos) return true;
      }
      return false;
    });
  }

  TestCollector c_{kNoRules};
  bool started_ = (c_.Start(), true);  // the agents below need the collector's channel
  TestAgent honest_{kHonest, c_.channel()};
  TestAgent other_{kOther, c_.channel()};
  std::vector<SignedBatch> sent_;
};

TEST_F(IngestAttack, FlippedBitIsUnauthenticated) {
  SignedBatch third = Next(honest_);
  SignedBatch forged = third;
  std::string bytes = forged.batch();
  bytes[bytes.size() - 3] ^= 0x10;
  forged.set_batch(bytes);
  EXPECT_EQ(honest_.Publish({forged}, 3).status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(IncidentSays(kHonest, "signature does not verify"));
  // The real batch 3 is still welcome.
  TestAgent::PublishOutcome out = honest_.Publish({third}, 3);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  HonestStreamStillWorks();
}

TEST_F(IngestAttack, BatchSignedWithAnotherKeyIsUnauthenticated) {
  TestAgent impostor(kHonest, c_.channel());  // same id, its own key
  for (int i = 0; i < 2; ++i) Next(impostor);
  EXPECT_EQ(impostor.Publish({Next(impostor)}, 3).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(IncidentSays(kHonest, "signature does not verify"));
  HonestStreamStillWorks();
}

TEST_F(IngestAttack, ReplayedOldBatchIsAckedNotStoredAgain) {
  // The same bytes again are a resend: acked with where the chain stands, stored once.
  TestAgent::PublishOutcome out = honest_.Publish({sent_[0]}, 2);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  ASSERT_FALSE(out.acks.empty());
  EXPECT_EQ(out.acks.back(), 2u);
  EXPECT_EQ(*c_.store()->CountBatches(kHonest), 2);
  EXPECT_TRUE(c_.IncidentsOf("integrity").empty());
  HonestStreamStillWorks();
}

TEST_F(IngestAttack, OldSeqWithOtherContentsIsAFork) {
  // Batch 1 re-signed with other events (a stolen key rewriting history, or an agent that lost
  // its spool and sealed seq 1 again): refused, and the stored batch 1 stays.
  tripline::v1::EventBatch rewritten;
  rewritten.set_agent_id(kHonest);
  rewritten.set_batch_seq(1);
  rewritten.set_prev_digest(GenesisDigest());
  *rewritten.add_events() = TestAgent::FileEvent("/etc/shadow-was-never-touched");
  SignedBatch forged;
  forged.set_batch(rewritten.SerializeAsString());
  forged.set_signature(SignBatch(honest_.key(), forged.batch()));
  TestAgent::PublishOutcome out = honest_.Publish({forged}, 2);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DATA_LOSS) << out.status.error_message();
  EXPECT_NE(out.status.error_message().find("other contents"), std::string::npos);
  EXPECT_TRUE(IncidentSays(kHonest, "chain fork: batch 1 arrived again"));
  EXPECT_EQ(*c_.store()->CountBatches(kHonest), 2);
  HonestStreamStillWorks();
}

TEST_F(IngestAttack, ReorderedBatchesAreAGap) {
  SignedBatch third = Next(honest_);
  SignedBatch fourth = Next(honest_);
  TestAgent::PublishOutcome out = honest_.Publish({fourth, third}, 4);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_NE(out.status.error_message().find("chain gap"), std::string::npos);
  EXPECT_TRUE(IncidentSays(kHonest, "chain gap: batch_seq 4 arrived, expected 3"));
  // The honest agent resends in order from its first unacked batch.
  out = honest_.Publish({third, fourth}, 4);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(*c_.store()->CountBatches(kHonest), 4);
}

TEST_F(IngestAttack, BatchClaimingAnotherAgentIsRefused) {
  // The other agent signs a batch naming the honest agent and sends it on its own stream.
  tripline::v1::EventBatch b;
  b.set_agent_id(kHonest);
  b.set_batch_seq(1);
  b.set_prev_digest(GenesisDigest());
  SignedBatch claimed = other_.Seal(b);
  TestAgent::PublishOutcome out = other_.Publish({claimed}, 1);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(IncidentSays(kOther, "names agent i-0honest000000001"));
  // And on the honest agent's stream it does not verify.
  out = other_.Publish({claimed}, 1, /*stream_agent_id=*/kHonest);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  HonestStreamStillWorks();
}

TEST_F(IngestAttack, OversizedBatchIsResourceExhaustedAndRecorded) {
  tripline::v1::EventBatch b;
  b.set_agent_id(kHonest);
  b.set_batch_seq(3);
  *b.add_events() = TestAgent::FileEvent(std::string(kMaxBatchBytes, 'a'));
  SignedBatch big;
  big.set_batch(b.SerializeAsString());
  big.set_signature(std::string(64, 's'));
  TestAgent::PublishOutcome out = honest_.Publish({big}, 3);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(IncidentSays(kHonest, "exceeds the 4194304-byte cap"));
  // Past the receive cap gRPC itself refuses the message.
  big.set_batch(std::string(kMaxReceiveBytes + 1, 'b'));
  out = honest_.Publish({big}, 3);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  HonestStreamStillWorks();
}

TEST_F(IngestAttack, GarbageBytesAreRefused) {
  // Garbage inside a well-formed SignedBatch: it cannot verify.
  SignedBatch junk;
  junk.set_batch("\xff\xfe garbage \x01\x02");
  junk.set_signature(std::string(64, '\0'));
  EXPECT_EQ(honest_.Publish({junk}, 3).status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  junk.set_signature("short");
  EXPECT_EQ(honest_.Publish({junk}, 3).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(IncidentSays(kHonest, "signature is 5 bytes"));

  // Garbage in place of the message itself: the stream ends with an error, nothing is stored.
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  ctx.AddMetadata("tripline-agent-id", kHonest);
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> raw(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          c_.channel().get(),
          grpc::internal::RpcMethod("/tripline.v1.Ingest/Publish",
                                    grpc::internal::RpcMethod::BIDI_STREAMING),
          &ctx));
  const std::string bytes = "\x0a\xff\xff\xff\xff\x0f not a protobuf";
  grpc::Slice slice(bytes);
  grpc::ByteBuffer buffer(&slice, 1);
  raw->Write(buffer);
  raw->WritesDone();
  grpc::ByteBuffer reply;
  EXPECT_FALSE(raw->Read(&reply));
  grpc::Status st = raw->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_TRUE(IncidentSays(kHonest, "is not a tripline.v1.SignedBatch"));
  EXPECT_EQ(*c_.store()->CountBatches(kHonest), 2);
  HonestStreamStillWorks();
}

}  // namespace
}  // namespace tripline::collector
