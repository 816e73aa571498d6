// gRPC transport security for both programs. TLS is the default; plaintext happens only when a
// config says `plaintext: true` in so many words, and callers log that it does.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace tripline {

struct ClientTlsOptions {
  bool plaintext = false;
  std::string ca_file;    // PEM of the CA that signed the collector's certificate (pinned)
  std::string cert_file;  // optional client certificate for mTLS
  std::string key_file;   // its key
};

struct ServerTlsOptions {
  bool plaintext = false;
  std::string cert_file;       // PEM certificate chain
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // when set, clients must present a certificate signed by it (mTLS)
};

// Errors name the option and file that is missing or unreadable.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientTlsOptions& options);
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& options);

}  // namespace tripline
