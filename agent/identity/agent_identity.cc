#include "agent/identity/agent_identity.h"

#include <unistd.h>

#include <chrono>

#include "absl/strings/str_format.h"
#include "platform/crypto/batch_signature.h"
#include "platform/crypto/digest.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/status_macros.h"

#ifndef TRIPLINE_VERSION
#define TRIPLINE_VERSION "0.0.0"
#endif

namespace tripline::agent {

const std::string& AgentVersion() {
  static const std::string* const version = new std::string(TRIPLINE_VERSION);
  return *version;
}

absl::StatusOr<AgentIdentity> LoadAgentIdentity(const std::string& agent_id,
                                                const std::string& state_dir,
                                                const std::string& enrollment_token_file) {
  AgentIdentity id;
  id.agent_id = agent_id;
  RETURN_IF_ERROR(MakeDirs(state_dir, 0700));
  ASSIGN_OR_RETURN(id.key, SigningKey::LoadOrCreate(state_dir + "/agent.key"));

  absl::StatusOr<std::string> token = ReadFileToString(enrollment_token_file, 4096);
  if (!token.ok()) {
    return absl::Status(token.status().code(),
                        absl::StrFormat("enrollment_token_file: %s", token.status().message()));
  }
  while (!token->empty() && (token->back() == '\n' || token->back() == '\r' ||
                             token->back() == ' ' || token->back() == '\t')) {
    token->pop_back();
  }
  if (token->empty()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("enrollment_token_file %s is empty", enrollment_token_file));
  }
  id.enrollment_token = *std::move(token);

  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) == 0) id.hostname = host;
  return id;
}

absl::StatusOr<ChainHead> Enroll(tripline::v1::Ingest::StubInterface& stub,
                                 const AgentIdentity& identity, grpc::ClientContext* context,
                                 absl::Duration timeout) {
  tripline::v1::EnrollRequest request;
  request.set_agent_id(identity.agent_id);
  request.set_public_key(identity.key->public_key());
  request.set_enrollment_token(identity.enrollment_token);
  request.set_hostname(identity.hostname);
  request.set_version(AgentVersion());
  request.set_identity_document(identity.identity_document);
  request.set_identity_signature(identity.identity_signature);
  context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));

  tripline::v1::EnrollResponse response;
  grpc::Status st = stub.Enroll(context, request, &response);
  if (!st.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
  }
  ChainHead head;
  head.durable_seq = response.durable_seq();
  head.durable_digest = response.durable_digest();
  if (head.durable_seq == 0 && head.durable_digest.empty()) head.durable_digest = GenesisDigest();
  if (head.durable_digest.size() != kDigestBytes) {
    return absl::InternalError(
        absl::StrFormat("collector answered Enroll with a %d-byte durable_digest (expected %d)",
                        head.durable_digest.size(), kDigestBytes));
  }
  return head;
}

}  // namespace tripline::agent
