#include "platform/net/grpc_credentials.h"

#include "absl/strings/str_format.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/status_macros.h"

namespace tripline {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& option, const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError(option + ": not set (or set plaintext: true)");
  auto pem = ReadFileToString(path, 1 << 20);
  if (!pem.ok()) {
    return absl::Status(pem.status().code(), absl::StrFormat("%s: %s", option, pem.status().message()));
  }
  return pem;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientTlsOptions& options) {
  if (options.plaintext) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem("tls.ca_file", options.ca_file));
  if (!options.cert_file.empty() || !options.key_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPem("tls.cert_file", options.cert_file));
    ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPem("tls.key_file", options.key_file));
  }
  return grpc::SslCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& options) {
  if (options.plaintext) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(
      options.client_ca_file.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                     : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPem("tls.cert_file", options.cert_file));
  ASSIGN_OR_RETURN(pair.private_key, ReadPem("tls.key_file", options.key_file));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!options.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem("tls.client_ca_file", options.client_ca_file));
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace tripline
