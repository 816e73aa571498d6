#include "agent/transport/publisher.h"

#include <map>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/batch/batcher.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "platform/crypto/batch_signature.h"
#include "tests/support/temp_dir.h"

namespace tripline::agent {
namespace {

using tripline::v1::EnrollRequest;
using tripline::v1::EnrollResponse;
using tripline::v1::PublishAck;
using tripline::v1::SignedBatch;

constexpr char kToken[] = "enroll-me";

// What a collector remembers across restarts: the pinned key and the committed chain. Strict:
// a batch that does not verify, a gap or a fork is recorded as a failure.
struct CollectorState {
  absl::Mutex mu;
  std::string pinned_key ABSL_GUARDED_BY(mu);
  uint64_t durable_seq ABSL_GUARDED_BY(mu) = 0;
  std::string durable_digest ABSL_GUARDED_BY(mu) = GenesisDigest();
  uint64_t commit_limit ABSL_GUARDED_BY(mu) = UINT64_MAX;  // batches beyond are not committed
  int refuse_enrolls ABSL_GUARDED_BY(mu) = 0;
  int enroll_calls ABSL_GUARDED_BY(mu) = 0;
  std::vector<uint64_t> received ABSL_GUARDED_BY(mu);       // every seq, in arrival order
  std::vector<uint64_t> stream_starts ABSL_GUARDED_BY(mu);  // first seq of each stream
  std::map<uint64_t, std::string> first_bytes ABSL_GUARDED_BY(mu);
  std::vector<std::string> failures ABSL_GUARDED_BY(mu);
  uint64_t max_ahead ABSL_GUARDED_BY(mu) = 0;  // largest seq - durable seen: the window in use

  bool WaitUntil(const std::function<bool()>& pred) {
    absl::MutexLock lock(&mu);
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return pred(); };
    return mu.AwaitWithTimeout(absl::Condition(&ready), absl::Seconds(20));
  }
};

class FakeIngest final : public tripline::v1::Ingest::Service {
 public:
  explicit FakeIngest(CollectorState* state) : state_(state) {}

  grpc::Status Enroll(grpc::ServerContext*, const EnrollRequest* req,
                      EnrollResponse* resp) override {
    absl::MutexLock lock(&state_->mu);
    ++state_->enroll_calls;
    if (state_->refuse_enrolls > 0) {
      --state_->refuse_enrolls;
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "enrollment token rejected");
    }
    if (req->enrollment_token() != kToken) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "wrong token");
    }
    if (state_->pinned_key.empty()) state_->pinned_key = req->public_key();
    if (state_->pinned_key != req->public_key()) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "another key is pinned");
    }
    resp->set_durable_seq(state_->durable_seq);
    resp->set_durable_digest(state_->durable_digest);
    return grpc::Status::OK;
  }

  grpc::Status Publish(grpc::ServerContext* ctx,
                       grpc::ServerReaderWriter<PublishAck, SignedBatch>* stream) override {
    auto md = ctx->client_metadata().find("tripline-agent-id");
    if (md == ctx->client_metadata().end() || md->second != "i-test") {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no agent id");
    }
    SignedBatch sb;
    bool first = true;
    while (stream->Read(&sb)) {
      PublishAck ack;
      {
        absl::MutexLock lock(&state_->mu);
        if (!VerifyBatchSignature(state_->pinned_key, sb.batch(), sb.signature())) {
          state_->failures.push_back("bad signature");
          return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "bad signature");
        }
        tripline::v1::EventBatch batch;
        if (!batch.ParseFromString(sb.batch())) {
          state_->failures.push_back("unparsable");
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "unparsable");
        }
        const uint64_t seq = batch.batch_seq();
        state_->received.push_back(seq);
        if (first) state_->stream_starts.push_back(seq);
        first = false;
        state_->max_ahead = std::max(state_->max_ahead, seq - state_->durable_seq);
        auto [it, inserted] = state_->first_bytes.emplace(seq, sb.batch());
        if (!inserted && it->second != sb.batch()) {
          state_->failures.push_back("resent batch has other bytes: " + std::to_string(seq));
        }
        if (seq <= state_->durable_seq) {
          state_->failures.push_back("resent an acked batch: " + std::to_string(seq));
          ack.set_durable_seq(state_->durable_seq);
        } else if (seq > state_->commit_limit) {
          continue;  // held, as if the commit never happened: no ack
        } else if (seq != state_->durable_seq + 1 ||
                   batch.prev_digest() != state_->durable_digest) {
          state_->failures.push_back("chain break at " + std::to_string(seq));
          return grpc::Status(grpc::StatusCode::DATA_LOSS, "chain break");
        } else {
          state_->durable_seq = seq;
          state_->durable_digest = ChainDigest(sb.batch());
          ack.set_durable_seq(seq);
        }
      }
      if (!stream->Write(ack)) break;
    }
    return grpc::Status::OK;
  }

 private:
  CollectorState* const state_;
};

// One collector process: a server on 127.0.0.1, port 0 the first time, the same port after.
class FakeCollector {
 public:
  explicit FakeCollector(CollectorState* state) : service_(state) {}
  ~FakeCollector() { Stop(); }

  int Start(int port) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    return server_ != nullptr ? port_ : 0;
  }
  void Stop() {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
      server_->Wait();
      server_.reset();
    }
  }

 private:
  FakeIngest service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

AgentIdentity TestIdentity() {
  AgentIdentity id;
  id.agent_id = "i-test";
  id.key = SigningKey::Generate();
  id.enrollment_token = kToken;
  id.hostname = "test-host";
  return id;
}

PublisherOptions Options(int port, uint64_t window) {
  PublisherOptions o;
  o.address = "127.0.0.1:" + std::to_string(port);
  o.tls.plaintext = true;
  o.window = window;
  o.backoff_initial = absl::Milliseconds(10);
  o.backoff_max = absl::Milliseconds(100);
  o.enroll_timeout = absl::Seconds(2);
  return o;
}

tripline::v1::Event Ev(int i) {
  tripline::v1::Event e;
  e.mutable_file()->set_path("/etc/f" + std::to_string(i));
  return e;
}

std::unique_ptr<Spool> OpenSpool(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<Spool>> spool = Spool::Open(SpoolOptions{.dir = dir});
  EXPECT_TRUE(spool.ok()) << spool.status();
  return *std::move(spool);
}

// The agent side as main.cc wires it: the chain goes on from an intact spool at once, otherwise
// from the further of the spool's and the collector's heads after the first Enroll.
struct Agent {
  // `shared`: an identity that outlives this agent (a restart of the same agent); else a new one.
  Agent(int port, uint64_t window, const std::string& spool_dir,
        const AgentIdentity* shared = nullptr)
      : own(shared != nullptr ? AgentIdentity{} : TestIdentity()),
        identity(shared != nullptr ? *shared : own),
        spool(OpenSpool(spool_dir)),
        outbox(*spool),
        recovered(spool->recovery()),
        batcher(identity.agent_id, *identity.key, SystemClock(), spool.get(),
                BatcherOptions{.max_events = 1, .linger = absl::ZeroDuration()}),
        publisher(identity, spool.get(), Options(port, window), [this](const ChainHead& head) {
          if (resume_from_spool()) return;
          if (recovered.head && recovered.head->seq > head.durable_seq) {
            batcher.Start(recovered.head->seq, recovered.head->digest);
          } else {
            batcher.Start(head.durable_seq, head.durable_digest);
          }
        }) {
    if (resume_from_spool()) batcher.Start(recovered.head->seq, recovered.head->digest);
  }
  ~Agent() {
    publisher.Stop();
    batcher.Stop();
  }
  bool resume_from_spool() const { return recovered.head && recovered.dropped_tail_bytes == 0; }
  AgentIdentity own;
  const AgentIdentity& identity;
  std::unique_ptr<Spool> spool;
  Spool& outbox;
  SpoolRecovery recovered;
  Batcher batcher;
  Publisher publisher;
};

TEST(Publisher, DeliversBatchesInOrderAndForgetsAckedOnes) {
  tripline::testing::TempDir dir;
  CollectorState state;
  FakeCollector collector(&state);
  const int port = collector.Start(0);
  ASSERT_GT(port, 0);
  Agent agent(port, 64, dir.path());
  ASSERT_TRUE(agent.publisher.Start().ok());
  for (int i = 0; i < 20; ++i) agent.batcher.Add(Ev(i));
  ASSERT_TRUE(state.WaitUntil([&] { return state.durable_seq == 20; }));
  EXPECT_TRUE(agent.publisher.WaitForAcks(absl::Now() + absl::Seconds(10)));
  EXPECT_EQ(agent.outbox.acked_seq(), 20u);
  absl::MutexLock lock(&state.mu);
  EXPECT_TRUE(state.failures.empty()) << state.failures.front();
  EXPECT_EQ(state.received.size(), 20u);
}

TEST(Publisher, CollectorRestartOnSamePortResendsOnlyUnackedAndContinues) {
  tripline::testing::TempDir dir;
  CollectorState state;
  constexpr uint64_t kWindow = 2;
  {
    absl::MutexLock lock(&state.mu);
    state.commit_limit = 3;  // the first collector commits 1..3 and loses 4..5
  }
  auto first = std::make_unique<FakeCollector>(&state);
  const int port = first->Start(0);
  ASSERT_GT(port, 0);
  Agent agent(port, kWindow, dir.path());
  ASSERT_TRUE(agent.publisher.Start().ok());
  for (int i = 0; i < 5; ++i) agent.batcher.Add(Ev(i));
  // 1..3 acked; 4 and 5 sent (the window allows two unacked) and held.
  ASSERT_TRUE(state.WaitUntil([&] { return state.received.size() == 5; }));
  ASSERT_TRUE(state.WaitUntil([&] { return agent.outbox.acked_seq() == 3; }));
  first->Stop();
  first.reset();

  for (int i = 5; i < 9; ++i) agent.batcher.Add(Ev(i));  // sealed while the collector is down
  {
    absl::MutexLock lock(&state.mu);
    state.commit_limit = UINT64_MAX;
  }
  FakeCollector second(&state);
  ASSERT_EQ(second.Start(port), port);
  ASSERT_TRUE(state.WaitUntil([&] { return state.durable_seq == 9; }));
  EXPECT_TRUE(agent.publisher.WaitForAcks(absl::Now() + absl::Seconds(10)));

  absl::MutexLock lock(&state.mu);
  EXPECT_TRUE(state.failures.empty()) << state.failures.front();
  ASSERT_GE(state.stream_starts.size(), 2u);
  EXPECT_EQ(state.stream_starts[0], 1u);
  EXPECT_EQ(state.stream_starts.back(), 4u);  // resumed at the first unacked batch
  EXPECT_LE(state.max_ahead, kWindow);
  // Every seq arrived; only the unacked 4 and 5 arrived twice.
  std::map<uint64_t, int> count;
  for (uint64_t s : state.received) ++count[s];
  for (uint64_t s = 1; s <= 9; ++s) {
    EXPECT_EQ(count[s], (s == 4 || s == 5) ? 2 : 1) << "seq " << s;
  }
  EXPECT_GE(agent.publisher.enrollments(), 2u);
  EXPECT_GE(agent.publisher.connections(), 2u);
}

TEST(Publisher, RefusedEnrollmentIsRetriedNotFatal) {
  tripline::testing::TempDir dir;
  CollectorState state;
  {
    absl::MutexLock lock(&state.mu);
    state.refuse_enrolls = 3;
  }
  FakeCollector collector(&state);
  const int port = collector.Start(0);
  ASSERT_GT(port, 0);
  Agent agent(port, 64, dir.path());
  ASSERT_TRUE(agent.publisher.Start().ok());
  agent.batcher.Add(Ev(1));
  ASSERT_TRUE(state.WaitUntil([&] { return state.durable_seq == 1; }));
  absl::MutexLock lock(&state.mu);
  EXPECT_EQ(state.enroll_calls, 4);
  EXPECT_TRUE(state.failures.empty());
}

TEST(Publisher, CollectorThatIsNotUpYetIsRetriedUntilItIs) {
  tripline::testing::TempDir dir;
  CollectorState state;
  int port = 0;
  {
    FakeCollector probe(&state);  // learn a free port, then close it
    port = probe.Start(0);
    ASSERT_GT(port, 0);
  }
  Agent agent(port, 64, dir.path());
  ASSERT_TRUE(agent.publisher.Start().ok());
  agent.batcher.Add(Ev(1));
  agent.batcher.Add(Ev(2));
  EXPECT_EQ(agent.publisher.enrollments(), 0u);
  FakeCollector collector(&state);
  ASSERT_EQ(collector.Start(port), port);
  ASSERT_TRUE(state.WaitUntil([&] { return state.durable_seq == 2; }));
  EXPECT_EQ(agent.publisher.enrollments(), 1u);
}

TEST(Publisher, AgentRestartContinuesTheCollectorsChain) {
  CollectorState state;
  FakeCollector collector(&state);
  const int port = collector.Start(0);
  ASSERT_GT(port, 0);
  AgentIdentity identity = TestIdentity();
  tripline::testing::TempDir dir;
  for (int run = 0; run < 3; ++run) {
    // Run 1 keeps the spool of run 0; run 2 starts with its spool moved aside (fresh).
    const std::string spool_dir = dir.Sub(run < 2 ? "spool" : "spool-fresh");
    Agent agent(port, 8, spool_dir, &identity);
    ASSERT_TRUE(agent.publisher.Start().ok());
    agent.batcher.Add(Ev(run));
    agent.batcher.Add(Ev(run));
    const uint64_t want = 2 * (run + 1);
    ASSERT_TRUE(state.WaitUntil([&] { return state.durable_seq == want; }));
  }
  absl::MutexLock lock(&state.mu);
  EXPECT_TRUE(state.failures.empty());
  EXPECT_EQ(state.received.size(), 6u);
}

// kill -9 of the agent while the collector is down: the batches sealed before it are in the spool,
// and the next run sends them first and continues the chain after them.
TEST(Publisher, BatchesSpooledBeforeAnAgentCrashAreSentByTheNextRun) {
  tripline::testing::TempDir dir;
  CollectorState state;
  int port = 0;
  {
    FakeCollector probe(&state);
    port = probe.Start(0);
    ASSERT_GT(port, 0);
  }
  AgentIdentity identity = TestIdentity();
  {
    FakeCollector collector(&state);
    ASSERT_EQ(collector.Start(port), port);
    Agent agent(port, 8, dir.path(), &identity);
    ASSERT_TRUE(agent.publisher.Start().ok());
    agent.batcher.Add(Ev(0));
    ASSERT_TRUE(state.WaitUntil([&] { return state.durable_seq == 1; }));
    collector.Stop();
    for (int i = 1; i <= 5; ++i) agent.batcher.Add(Ev(i));
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (agent.spool->committed_seq() < 6 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    ASSERT_EQ(agent.spool->committed_seq(), 6u);
    // No orderly close: what a kill leaves is what fdatasync made durable.
  }
  FakeCollector collector(&state);
  ASSERT_EQ(collector.Start(port), port);
  Agent agent(port, 8, dir.path(), &identity);
  EXPECT_TRUE(agent.resume_from_spool());
  EXPECT_EQ(agent.recovered.records, 5u);
  ASSERT_TRUE(agent.publisher.Start().ok());
  agent.batcher.Add(Ev(6));
  ASSERT_TRUE(state.WaitUntil([&] { return state.durable_seq == 7; }));
  absl::MutexLock lock(&state.mu);
  EXPECT_TRUE(state.failures.empty()) << state.failures.front();
  std::map<uint64_t, int> count;
  for (uint64_t s : state.received) ++count[s];
  for (uint64_t s = 1; s <= 7; ++s) EXPECT_EQ(count[s], 1) << "seq " << s;
}

}  // namespace
}  // namespace tripline::agent
