#include "collector/config/collector_config.h"

#include <charconv>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "platform/config/config_node.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {
namespace {

// "host:port" with a numeric port 0..65535 (0: any free port) and a non-empty host.
absl::Status CheckListen(const ConfigNode& root, const std::string& listen) {
  const size_t colon = listen.rfind(':');
  std::optional<ConfigNode> node = root.Child("listen");
  auto error = [&](std::string_view why) {
    return node ? node->Error(why) : root.Error(why);
  };
  if (colon == std::string::npos || colon == 0) {
    return error(absl::StrFormat("expected host:port, got '%s'", listen));
  }
  const std::string port = listen.substr(colon + 1);
  int value = -1;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value < 0 ||
      value > 65535) {
    return error(absl::StrFormat("port '%s' is not a number in [0, 65535]", port));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CollectorConfig> ParseCollectorConfig(std::string_view text,
                                                     const std::string& name) {
  ASSIGN_OR_RETURN(ConfigNode root, LoadYamlString(text, name));
  RETURN_IF_ERROR(root.ExpectKeys({"listen", "tls", "database", "rules", "enrollment_token_file",
                                   "operator_token_file", "operators", "log_level", "aws",
                                   "response"}));
  CollectorConfig c;
  c.path = name;
  ASSIGN_OR_RETURN(c.listen, root.String("listen", c.listen));
  RETURN_IF_ERROR(CheckListen(root, c.listen));

  if (std::optional<ConfigNode> tls = root.Child("tls")) {
    RETURN_IF_ERROR(tls->ExpectKeys({"plaintext", "cert_file", "key_file", "client_ca_file"}));
    ASSIGN_OR_RETURN(c.tls.plaintext, tls->Bool("plaintext", false));
    ASSIGN_OR_RETURN(c.tls.cert_file, tls->String("cert_file", "/etc/tripline/collector.pem"));
    ASSIGN_OR_RETURN(c.tls.key_file, tls->String("key_file", "/etc/tripline/collector.key"));
    ASSIGN_OR_RETURN(c.tls.client_ca_file, tls->String("client_ca_file", ""));
  } else {
    c.tls.cert_file = "/etc/tripline/collector.pem";
    c.tls.key_file = "/etc/tripline/collector.key";
  }
  ASSIGN_OR_RETURN(c.database, root.String("database", c.database));
  ASSIGN_OR_RETURN(c.rules, root.String("rules", c.rules));
  ASSIGN_OR_RETURN(c.enrollment_token_file, root.RequiredString("enrollment_token_file"));
  ASSIGN_OR_RETURN(c.operator_token_file, root.String("operator_token_file", ""));
  c.operators.token_key_file = DefaultTokenKeyFile(c.database);
  if (std::optional<ConfigNode> ops = root.Child("operators")) {
    RETURN_IF_ERROR(ops->ExpectKeys({"token_key_file", "certificates"}));
    ASSIGN_OR_RETURN(c.operators.token_key_file,
                     ops->String("token_key_file", c.operators.token_key_file));
    if (std::optional<ConfigNode> certs = ops->Child("certificates")) {
      ASSIGN_OR_RETURN(std::vector<ConfigNode> entries, certs->Elements());
      for (const ConfigNode& e : entries) {
        RETURN_IF_ERROR(e.ExpectKeys({"common_name", "role"}));
        ASSIGN_OR_RETURN(std::string cn, e.RequiredString("common_name"));
        ASSIGN_OR_RETURN(std::string role, e.Enum("role", "read", {"read", "respond", "admin"}));
        if (cn.empty()) return e.Error("common_name must not be empty");
        c.operators.cert_roles.emplace_back(std::move(cn), std::move(role));
      }
      if (!c.operators.cert_roles.empty() && c.tls.client_ca_file.empty()) {
        return certs->Error(
            "operator certificates need tls.client_ca_file: without it the collector does not "
            "ask for client certificates");
      }
    }
  }
  ASSIGN_OR_RETURN(c.log_level, root.Enum("log_level", c.log_level,
                                          {"trace", "debug", "info", "warn", "error"}));
  if (std::optional<ConfigNode> aws = root.Child("aws")) {
    RETURN_IF_ERROR(aws->ExpectKeys({"region", "endpoint", "ca_file", "isolation_security_group"}));
    ASSIGN_OR_RETURN(c.aws.region, aws->String("region", c.aws.region));
    ASSIGN_OR_RETURN(c.aws.endpoint, aws->String("endpoint", ""));
    ASSIGN_OR_RETURN(c.aws.ca_file, aws->String("ca_file", ""));
    ASSIGN_OR_RETURN(c.aws.isolation_security_group, aws->String("isolation_security_group", ""));
    if (c.aws.region.empty()) return aws->Error("region must not be empty");
    if (!c.aws.endpoint.empty() && c.aws.endpoint.rfind("http://", 0) != 0 &&
        c.aws.endpoint.rfind("https://", 0) != 0) {
      return aws->Child("endpoint")->Error(
          absl::StrFormat("expected an http:// or https:// URL, got '%s'", c.aws.endpoint));
    }
    if (!c.aws.isolation_security_group.empty() &&
        c.aws.isolation_security_group.rfind("sg-", 0) != 0) {
      return aws->Child("isolation_security_group")
          ->Error(absl::StrFormat("expected a security group id (sg-...), got '%s'",
                                  c.aws.isolation_security_group));
    }
  }
  if (std::optional<ConfigNode> response = root.Child("response")) {
    RETURN_IF_ERROR(response->ExpectKeys({"mode"}));
    ASSIGN_OR_RETURN(std::string mode, response->Enum("mode", "auto", {"auto", "off"}));
    c.response_mode = mode == "off" ? ResponseMode::kOff : ResponseMode::kAuto;
  }
  if (!c.tls.plaintext && (c.tls.cert_file.empty() || c.tls.key_file.empty())) {
    return root.Required("tls").status().ok()
               ? root.Required("tls")->Error("cert_file and key_file are required unless plaintext")
               : root.Error("tls.cert_file and tls.key_file are required unless tls.plaintext");
  }
  return c;
}

std::string DefaultTokenKeyFile(const std::string& database) {
  const size_t slash = database.rfind('/');
  return (slash == std::string::npos ? std::string() : database.substr(0, slash + 1)) +
         "operator-token.key";
}

absl::StatusOr<CollectorConfig> LoadCollectorConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 1 << 20));
  return ParseCollectorConfig(text, path);
}

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, std::string_view option) {
  absl::StatusOr<std::string> text = ReadFileToString(path, 4096);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrFormat("%s: %s", option, text.status().message()));
  }
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) {
    return absl::FailedPreconditionError(absl::StrFormat("%s: %s is empty", option, path));
  }
  return token;
}

}  // namespace tripline::collector
