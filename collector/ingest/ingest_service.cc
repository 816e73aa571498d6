#include "collector/ingest/ingest_service.h"

#include <algorithm>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "platform/crypto/batch_signature.h"
#include "platform/crypto/digest.h"
#include "platform/crypto/signing_key.h"
#include "platform/runtime/logging.h"

namespace tripline::collector {
namespace {

using tripline::v1::EventBatch;
using tripline::v1::PublishAck;
using tripline::v1::SignedBatch;

constexpr char kAgentIdMetadata[] = "tripline-agent-id";

// Where each event of a batch lies in its signed bytes: (offset, length) of every `events` field's
// payload, in order (the order the parser appends them in). False when the bytes are not a
// well-formed sequence of fields.
bool EventSpans(const std::string& batch, std::vector<std::pair<uint32_t, uint32_t>>* spans) {
  using google::protobuf::internal::WireFormatLite;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(batch.data()),
                                            static_cast<int>(batch.size()));
  for (;;) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return in.CurrentPosition() == static_cast<int>(batch.size());
    if (WireFormatLite::GetTagFieldNumber(tag) == EventBatch::kEventsFieldNumber &&
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint32_t length = 0;
      if (!in.ReadVarint32(&length)) return false;
      const int offset = in.CurrentPosition();
      if (!in.Skip(static_cast<int>(length))) return false;
      spans->emplace_back(static_cast<uint32_t>(offset), length);
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      return false;
    }
  }
}

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// One Publish stream. All state below mu_ is shared between gRPC's reactions and the store
// writer's completions; decisions are taken under mu_ and the gRPC operations they imply
// (StartRead, StartWrite, Finish) are started after unlocking, Finish last.
class PublishReactor : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  PublishReactor(IngestService* service, grpc::CallbackServerContext* context)
      : service_(service) {
    const auto& md = context->client_metadata();
    auto it = md.find(kAgentIdMetadata);
    if (it != md.end()) agent_id_.assign(it->second.data(), it->second.size());
    std::optional<std::string> key;
    if (ValidAgentId(agent_id_)) key = service_->registry()->PublicKey(agent_id_);
    if (!key) {
      spdlog::warn("ingest: publish refused: agent={} is not enrolled", Printable(agent_id_));
      Ops ops = Begin();
      {
        std::lock_guard<std::mutex> lock(mu_);
        RequestFinishLocked(grpc::Status(
            grpc::StatusCode::UNAUTHENTICATED,
            absl::StrFormat("agent %s is not enrolled", Printable(agent_id_, 128))), &ops);
      }
      Carry(ops);
      return;
    }
    public_key_ = *key;
    Ops ops = Begin();
    {
      std::lock_guard<std::mutex> lock(mu_);
      read_pending_ = true;
      ops.read = true;
    }
    Carry(ops);
  }

  void OnReadDone(bool ok) override {
    Ops ops = Begin();
    if (!ok) {
      std::lock_guard<std::mutex> lock(mu_);
      read_pending_ = false;
      reads_done_ = true;
      MaybeCloseLocked(&ops);
    } else {
      Handle(&ops);
      // Only now may request_ be read into again: until here Handle was using it.
      std::lock_guard<std::mutex> lock(mu_);
      read_pending_ = false;
      MaybeReadLocked(&ops);
    }
    Carry(ops);
  }

  void OnWriteDone(bool ok) override {
    Ops ops = Begin();
    {
      std::lock_guard<std::mutex> lock(mu_);
      write_in_flight_ = false;
      if (!ok) {
        RequestFinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "ack write failed"),
                            &ops);
      } else {
        MaybeWriteLocked(&ops);
        MaybeCloseLocked(&ops);
      }
    }
    Carry(ops);
  }

  void OnDone() override {
    bool destroy;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      destroy = in_flight_ == 0 && actors_ == 0;
    }
    if (destroy) delete this;
  }

  // The store writer answered one of this stream's items (on the writer thread).
  void Completed(const WriteResult& result) {
    Ops ops = Begin();
    {
      std::lock_guard<std::mutex> lock(mu_);
      --in_flight_;
      if (!done_) {
        if (!result.status.ok()) {
          RequestFinishLocked(ToGrpc(result.status), &ops);
        } else {
          pending_ack_ = std::max(pending_ack_.value_or(0), result.durable_seq);
          MaybeWriteLocked(&ops);
          MaybeReadLocked(&ops);
          MaybeCloseLocked(&ops);
        }
      }
    }
    Carry(ops);
  }

 private:
  struct Ops {
    bool read = false;
    bool write = false;
    std::optional<grpc::Status> finish;
  };

  // Every path that may start operations counts itself as an actor, so the reactor is not
  // deleted (by OnDone on another thread) before it has finished starting them.
  Ops Begin() {
    std::lock_guard<std::mutex> lock(mu_);
    ++actors_;
    return Ops{};
  }

  void Carry(const Ops& ops) {
    if (ops.read) StartRead(&request_);
    if (ops.write) StartWrite(&ack_out_);
    if (ops.finish) Finish(*ops.finish);
    bool destroy;
    {
      std::lock_guard<std::mutex> lock(mu_);
      --actors_;
      destroy = done_ && in_flight_ == 0 && actors_ == 0;
    }
    if (destroy) delete this;
  }

  void RequestFinishLocked(grpc::Status status, Ops* ops) {
    if (finished_ || finish_status_) return;
    finish_status_ = std::move(status);
    MaybeFinishLocked(ops);
  }

  void MaybeFinishLocked(Ops* ops) {
    if (finished_ || !finish_status_ || write_in_flight_) return;
    finished_ = true;
    ops->finish = *finish_status_;
  }

  void MaybeWriteLocked(Ops* ops) {
    if (write_in_flight_ || !pending_ack_ || finished_ || finish_status_) return;
    PublishAck ack;
    ack.set_durable_seq(*pending_ack_);
    bool own_buffer = false;
    ack_out_.Clear();
    (void)grpc::SerializationTraits<PublishAck>::Serialize(ack, &ack_out_, &own_buffer);
    pending_ack_.reset();
    write_in_flight_ = true;
    ops->write = true;
  }

  void MaybeReadLocked(Ops* ops) {
    if (read_pending_ || reads_done_ || finished_ || finish_status_) return;
    if (in_flight_ >= service_->max_in_flight()) return;
    // The store writer is behind: wait for this stream's own batches to be answered (each answer
    // comes back here) instead of queueing more. A stream with nothing in flight always reads,
    // so every stream makes progress, and the writer's queue stays within its budget plus about
    // one batch per stream.
    if (in_flight_ > 0 && service_->writer()->Congested()) return;
    read_pending_ = true;
    ops->read = true;
  }

  // The client has half-closed: finish once every item is answered and every ack written.
  void MaybeCloseLocked(Ops* ops) {
    if (reads_done_ && in_flight_ == 0 && !pending_ack_ && !write_in_flight_) {
      RequestFinishLocked(grpc::Status::OK, ops);
    }
    MaybeFinishLocked(ops);
  }

  // Records an integrity incident and ends the stream with `code` and `reason`.
  void Refuse(grpc::StatusCode code, const std::string& reason, Ops* ops) {
    spdlog::error("ingest: agent={} refused: {}", Printable(agent_id_), reason);
    WriteItem item;
    item.kind = WriteItem::Kind::kIntegrity;
    item.agent_id = agent_id_;
    item.reason = reason;
    service_->writer()->SubmitUrgent(std::move(item));
    std::lock_guard<std::mutex> lock(mu_);
    RequestFinishLocked(grpc::Status(code, reason), ops);
  }

  // Decides on the batch in request_. read_pending_ stays true meanwhile, so a completion on the
  // writer thread cannot start the next read into request_ under our feet.
  void Handle(Ops* ops) {
    // The method is registered raw so that bytes which are no SignedBatch at all reach us (the
    // generated handler would end such a stream as if the client had half-closed).
    const size_t message_bytes = request_.Length();
    SignedBatch sb;
    if (!grpc::SerializationTraits<SignedBatch>::Deserialize(&request_, &sb).ok()) {
      return Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                    absl::StrFormat("a message of %d bytes is not a tripline.v1.SignedBatch",
                                    message_bytes),
                    ops);
    }
    if (sb.batch().size() > kMaxBatchBytes) {
      return Refuse(grpc::StatusCode::RESOURCE_EXHAUSTED,
                    absl::StrFormat("batch of %d bytes exceeds the %d-byte cap",
                                    sb.batch().size(), kMaxBatchBytes),
                    ops);
    }
    if (sb.signature().size() != kSignatureBytes) {
      return Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                    absl::StrFormat("batch signature is %d bytes, expected %d",
                                    sb.signature().size(), kSignatureBytes),
                    ops);
    }
    if (!VerifyBatchSignature(public_key_, sb.batch(), sb.signature())) {
      return Refuse(grpc::StatusCode::UNAUTHENTICATED,
                    absl::StrFormat("batch signature does not verify against the key enrolled "
                                    "for agent %s (batch of %d bytes)",
                                    Printable(agent_id_), sb.batch().size()),
                    ops);
    }
    // One arena per batch, its first block sized for the whole parse: allocated here, freed at
    // once by the writer after the commit.
    google::protobuf::ArenaOptions arena_options;
    arena_options.start_block_size =
        std::clamp<size_t>(sb.batch().size() + sb.batch().size() / 2, 4096, 1 << 20);
    arena_options.max_block_size = 1 << 20;
    auto arena = std::make_unique<google::protobuf::Arena>(arena_options);
    EventBatch* batch = google::protobuf::Arena::CreateMessage<EventBatch>(arena.get());
    if (!batch->ParseFromString(sb.batch())) {
      return Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                    "signed batch bytes do not parse as a tripline.v1.EventBatch", ops);
    }
    if (batch->agent_id() != agent_id_) {
      return Refuse(grpc::StatusCode::PERMISSION_DENIED,
                    absl::StrFormat("batch %d names agent %s but the stream is agent %s",
                                    batch->batch_seq(), Printable(batch->agent_id(), 128),
                                    Printable(agent_id_)),
                    ops);
    }
    std::vector<std::pair<uint32_t, uint32_t>> spans;
    spans.reserve(static_cast<size_t>(batch->events_size()));
    if (!EventSpans(sb.batch(), &spans) ||
        spans.size() != static_cast<size_t>(batch->events_size())) {
      return Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                    absl::StrFormat("batch %d: its %d events could not be located in the signed "
                                    "bytes",
                                    batch->batch_seq(), batch->events_size()),
                    ops);
    }
    if (batch->batch_seq() == 0) {
      return Refuse(grpc::StatusCode::INVALID_ARGUMENT, "batch_seq 0 (batches start at 1)", ops);
    }
    std::string digest = ChainDigest(sb.batch());
    const AgentRegistry::Decision d = service_->registry()->Accept(
        agent_id_, batch->batch_seq(), batch->prev_digest(), digest);
    WriteItem item;
    item.agent_id = agent_id_;
    item.done = [this](const WriteResult& r) { Completed(r); };
    switch (d.verdict) {
      case AgentRegistry::Verdict::kAccept:
        item.kind = WriteItem::Kind::kBatch;
        item.batch_bytes = std::move(*sb.mutable_batch());
        item.signature = std::move(*sb.mutable_signature());
        item.batch_digest = std::move(digest);
        item.arena = std::move(arena);
        item.batch = batch;
        item.event_spans = std::move(spans);
        break;
      case AgentRegistry::Verdict::kDuplicate:
        spdlog::debug("ingest: agent={} duplicate batch {}", Printable(agent_id_),
                      batch->batch_seq());
        item.kind = WriteItem::Kind::kDuplicate;
        item.batch_digest = std::move(digest);  // compared with the stored batch
        item.arena = std::move(arena);
        item.batch = batch;
        break;
      case AgentRegistry::Verdict::kGap:
        return Refuse(grpc::StatusCode::DATA_LOSS,
                      absl::StrFormat("chain gap: batch_seq %d arrived, expected %d (batches "
                                      "%d..%d are missing)",
                                      batch->batch_seq(), d.expected_seq, d.expected_seq,
                                      batch->batch_seq() - 1),
                      ops);
      case AgentRegistry::Verdict::kFork:
        return Refuse(grpc::StatusCode::DATA_LOSS,
                      absl::StrFormat("chain fork: batch %d's prev_digest %s is not the digest "
                                      "of batch %d",
                                      batch->batch_seq(),
                                      ToHex(batch->prev_digest().substr(0, 32)),
                                      batch->batch_seq() - 1),
                      ops);
      case AgentRegistry::Verdict::kUnknown: {
        std::lock_guard<std::mutex> lock(mu_);
        RequestFinishLocked(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                         absl::StrFormat("agent %s is not enrolled",
                                                         Printable(agent_id_))),
                            ops);
        return;
      }
    }
    const bool is_batch = item.kind == WriteItem::Kind::kBatch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++in_flight_;
    }
    if (!service_->writer()->Submit(item)) {
      if (is_batch) service_->registry()->RollBack(agent_id_);
      std::lock_guard<std::mutex> lock(mu_);
      --in_flight_;
      RequestFinishLocked(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                       "the collector's write queue is full; retry later"),
                          ops);
      return;
    }
  }

  IngestService* const service_;
  std::string agent_id_;
  std::string public_key_;
  grpc::ByteBuffer request_;  // a SignedBatch; gRPC's between StartRead and OnReadDone
  grpc::ByteBuffer ack_out_;  // a PublishAck; gRPC's between StartWrite and OnWriteDone

  std::mutex mu_;
  size_t in_flight_ = 0;       // items the writer has not answered; guarded by mu_
  int actors_ = 0;             // threads between Begin() and the end of Carry(); guarded by mu_
  bool read_pending_ = false;  // a read outstanding or being handled; guarded by mu_
  bool reads_done_ = false;    // guarded by mu_
  bool write_in_flight_ = false;          // guarded by mu_
  std::optional<uint64_t> pending_ack_;   // guarded by mu_
  std::optional<grpc::Status> finish_status_;  // guarded by mu_
  bool finished_ = false;  // Finish decided; guarded by mu_
  bool done_ = false;      // OnDone ran; guarded by mu_
};

}  // namespace

bool ValidAgentId(const std::string& agent_id) {
  if (agent_id.empty() || agent_id.size() > 128) return false;
  for (char c : agent_id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

IngestService::IngestService(AgentRegistry* registry, StoreWriter* writer, Options options)
    : registry_(registry),
      writer_(writer),
      max_in_flight_(std::max<size_t>(1, options.max_in_flight)),
      identity_(std::move(options.identity)),
      token_key_(RandomBytes(32)),
      token_hash_(Blake2b256(options.enrollment_token, token_key_)) {}

grpc::ServerUnaryReactor* IngestService::Enroll(grpc::CallbackServerContext* context,
                                                const tripline::v1::EnrollRequest* request,
                                                tripline::v1::EnrollResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!ConstantTimeEquals(Blake2b256(request->enrollment_token(), token_key_), token_hash_)) {
    spdlog::warn("ingest: enrollment refused agent={}: wrong enrollment token",
                 Printable(request->agent_id(), 128));
    reactor->Finish(
        grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "enrollment token rejected"));
    return reactor;
  }
  if (!ValidAgentId(request->agent_id())) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrFormat("agent_id '%s' must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-'",
                        Printable(request->agent_id(), 128))));
    return reactor;
  }
  if (request->public_key().size() != kPublicKeyBytes) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 absl::StrFormat("public_key is %d bytes, expected %d",
                                                 request->public_key().size(), kPublicKeyBytes)));
    return reactor;
  }
  if (identity_) {
    absl::StatusOr<InstanceIdentity> verified = identity_->Verify(
        request->identity_document(), request->identity_signature(), request->agent_id());
    if (!verified.ok()) {
      spdlog::warn("ingest: enrollment refused agent={}: {}", Printable(request->agent_id(), 128),
                   std::string(verified.status().message()));
      // The refusal is evidence: record it, then answer.
      WriteItem incident;
      incident.kind = WriteItem::Kind::kIntegrity;
      incident.agent_id = request->agent_id();
      incident.reason = absl::StrFormat("enrollment refused (hostname %s): %s",
                                        Printable(request->hostname(), 64),
                                        verified.status().message());
      const grpc::Status refusal(
          verified.status().code() == absl::StatusCode::kInvalidArgument
              ? grpc::StatusCode::INVALID_ARGUMENT
              : grpc::StatusCode::PERMISSION_DENIED,
          std::string(verified.status().message()));
      incident.done = [reactor, refusal](const WriteResult&) { reactor->Finish(refusal); };
      writer_->SubmitUrgent(std::move(incident));
      return reactor;
    }
    spdlog::info("ingest: instance identity verified agent={} region={} account={}",
                 Printable(request->agent_id(), 128), verified->region,
                 Printable(verified->account_id, 32));
  }
  WriteItem item;
  item.kind = WriteItem::Kind::kEnroll;
  item.agent_id = request->agent_id();
  item.public_key = request->public_key();
  item.hostname = request->hostname().substr(0, 256);
  item.version = request->version().substr(0, 64);
  item.done = [reactor, response](const WriteResult& r) {
    if (r.status.ok()) {
      response->set_durable_seq(r.durable_seq);
      response->set_durable_digest(r.durable_digest);
    }
    reactor->Finish(ToGrpc(r.status));
  };
  writer_->SubmitUrgent(std::move(item));
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* IngestService::Publish(
    grpc::CallbackServerContext* context) {
  return new PublishReactor(this, context);
}

}  // namespace tripline::collector
