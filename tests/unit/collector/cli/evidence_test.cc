#include "collector/cli/evidence.h"

#include <memory>

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "platform/crypto/batch_signature.h"
#include "platform/crypto/signing_key.h"
#include "tests/support/temp_dir.h"

namespace tripline::cli {
namespace {

namespace v1 = tripline::v1;

// An incident whose events span an operator-approved re-key: batches 1..2 signed by the old key,
// 3..4 by the new one, one chain throughout.
class EvidenceKeyHistory : public ::testing::Test {
 protected:
  void SetUp() override {
    old_key_ = SigningKey::Generate();
    new_key_ = SigningKey::Generate();
    evidence_.mutable_incident()->set_id(7);
    evidence_.set_exported_unix_ns(100);
    evidence_.set_exported_by("alice");
    v1::EvidenceAgent* agent = evidence_.add_agents();
    agent->set_agent_id("i-1");
    agent->set_public_key(new_key_->public_key());
    AddKey(agent, *old_key_, 1);
    AddKey(agent, *new_key_, 3);
    std::string prev = GenesisDigest();
    for (uint64_t seq = 1; seq <= 4; ++seq) {
      v1::EventBatch batch;
      batch.set_agent_id("i-1");
      batch.set_batch_seq(seq);
      batch.set_prev_digest(prev);
      v1::Event* e = batch.add_events();
      e->set_seq(seq);
      e->mutable_file()->set_path("/etc/hostname");
      const std::string bytes = batch.SerializeAsString();
      prev = ChainDigest(bytes);
      AddBatch(seq, bytes, seq <= 2 ? *old_key_ : *new_key_);
      if (seq == 2 || seq == 4) {
        v1::StoredEvent* stored = evidence_.add_events();
        stored->set_id(static_cast<int64_t>(seq));
        stored->set_agent_id("i-1");
        stored->set_batch_seq(seq);
        *stored->mutable_event() = *e;
      }
    }
  }

  static void AddKey(v1::EvidenceAgent* agent, const SigningKey& key, uint64_t from) {
    v1::EvidenceKey* k = agent->add_keys();
    k->set_public_key(key.public_key());
    k->set_from_batch_seq(from);
  }

  void AddBatch(uint64_t seq, const std::string& bytes, const SigningKey& key) {
    v1::SignedBatch signed_batch;
    signed_batch.set_batch(bytes);
    signed_batch.set_signature(SignBatch(key, bytes));
    v1::EvidenceBatch* b = evidence_.add_batches();
    b->set_agent_id("i-1");
    b->set_batch_seq(seq);
    b->set_signed_batch(signed_batch.SerializeAsString());
  }

  EvidenceReport WriteAndVerify() {
    const std::string out = dir_.Sub("evidence-" + std::to_string(++exports_));
    absl::Status st = WriteEvidence(evidence_, "collector.test:7443", out);
    EXPECT_TRUE(st.ok()) << st;
    return VerifyEvidence(out);
  }

  tripline::testing::TempDir dir_;
  std::unique_ptr<SigningKey> old_key_, new_key_;
  v1::ExportEvidenceResponse evidence_;
  int exports_ = 0;
};

TEST_F(EvidenceKeyHistory, BatchesOnBothSidesOfARekeyVerify) {
  EvidenceReport r = WriteAndVerify();
  EXPECT_TRUE(r.ok) << absl::StrJoin(r.problems, "\n");
  EXPECT_EQ(r.batches, 4);
  EXPECT_EQ(r.events, 2);
  EXPECT_NE(r.summary.find("re-keyed"), std::string::npos) << r.summary;
}

TEST_F(EvidenceKeyHistory, WithoutTheHistoryTheOldBatchesFail) {
  evidence_.mutable_agents(0)->clear_keys();  // as exports made before key history
  EvidenceReport r = WriteAndVerify();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.batches, 2);
  ASSERT_EQ(r.problems.size(), 3u) << absl::StrJoin(r.problems, "\n");  // 2 batches, 1 event
  EXPECT_NE(r.problems[0].find("00000000000000000001.signed: signature does not verify"),
            std::string::npos)
      << r.problems[0];
}

TEST_F(EvidenceKeyHistory, AnOldKeyAfterItsRangeIsRefused) {
  // Whoever held the replaced key cannot add batches after the re-key.
  v1::EventBatch batch;
  ASSERT_TRUE(batch.ParseFromString(
      [&] {
        v1::SignedBatch sb;
        sb.ParseFromString(evidence_.batches(2).signed_batch());
        return sb.batch();
      }()));
  const std::string bytes = batch.SerializeAsString();
  v1::SignedBatch forged;
  forged.set_batch(bytes);
  forged.set_signature(SignBatch(*old_key_, bytes));
  evidence_.mutable_batches(2)->set_signed_batch(forged.SerializeAsString());
  EvidenceReport r = WriteAndVerify();
  EXPECT_FALSE(r.ok);
  bool named = false;
  for (const std::string& p : r.problems) {
    if (p.find("00000000000000000003.signed: signature does not verify with the key i-1 had "
               "pinned for batch 3") != std::string::npos) {
      named = true;
    }
  }
  EXPECT_TRUE(named) << absl::StrJoin(r.problems, "\n");
}

TEST_F(EvidenceKeyHistory, AKeyListThatDisagreesWithTheAccountIsCaught) {
  // The newest key of the history must be the pinned one.
  evidence_.mutable_agents(0)->set_public_key(old_key_->public_key());
  EvidenceReport r = WriteAndVerify();
  EXPECT_FALSE(r.ok);
  bool named = false;
  for (const std::string& p : r.problems) {
    if (p.find("newest key of i-1 is not its pinned key") != std::string::npos) named = true;
  }
  EXPECT_TRUE(named) << absl::StrJoin(r.problems, "\n");
}

}  // namespace
}  // namespace tripline::cli
