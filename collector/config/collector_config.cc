#include "collector/config/collector_config.h"

#include <algorithm>
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

const char* ResponseModeName(ResponseMode mode) {
  switch (mode) {
    case ResponseMode::kAuto:
      return "auto";
    case ResponseMode::kApprove:
      return "approve";
    case ResponseMode::kDryRun:
      return "dry-run";
    case ResponseMode::kOff:
      return "off";
  }
  return "auto";
}

absl::StatusOr<CollectorConfig> ParseCollectorConfig(std::string_view text,
                                                     const std::string& name) {
  ASSIGN_OR_RETURN(ConfigNode root, LoadYamlString(text, name));
  RETURN_IF_ERROR(root.ExpectKeys({"listen", "tls", "database", "rules", "enrollment_token_file",
                                   "operator_token_file", "operators", "log_level", "aws",
                                   "response", "notify", "identity",
                                   "cloudtrail"}));
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
  if (std::optional<ConfigNode> identity = root.Child("identity")) {
    RETURN_IF_ERROR(
        identity->ExpectKeys({"require_document", "aws_certificates", "allowed_accounts"}));
    ASSIGN_OR_RETURN(c.identity.require_document, identity->Bool("require_document", true));
    ASSIGN_OR_RETURN(c.identity.allowed_accounts, identity->StringList("allowed_accounts"));
    for (const std::string& a : c.identity.allowed_accounts) {
      if (a.size() != 12 || a.find_first_not_of("0123456789") != std::string::npos) {
        return identity->Child("allowed_accounts")
            ->Error(absl::StrFormat("'%s': expected a 12-digit AWS account id", a));
      }
    }
    if (std::optional<ConfigNode> certs = identity->Child("aws_certificates")) {
      ASSIGN_OR_RETURN(std::vector<ConfigNode> entries, certs->Elements());
      for (const ConfigNode& e : entries) {
        RETURN_IF_ERROR(e.ExpectKeys({"region", "file"}));
        ASSIGN_OR_RETURN(std::string region, e.RequiredString("region"));
        ASSIGN_OR_RETURN(std::string file, e.RequiredString("file"));
        if (region.empty() || file.empty()) return e.Error("region and file must not be empty");
        if (!c.identity.aws_certificates.emplace(region, file).second) {
          return e.Error(absl::StrFormat("a second certificate for region %s", region));
        }
      }
    }
  }
  ASSIGN_OR_RETURN(c.log_level, root.Enum("log_level", c.log_level,
                                          {"trace", "debug", "info", "warn", "error"}));
  if (std::optional<ConfigNode> aws = root.Child("aws")) {
    RETURN_IF_ERROR(aws->ExpectKeys({"region", "endpoint", "ca_file", "isolation_security_group",
                                     "iam_endpoint", "autoscaling_endpoint", "max_attempts",
                                     "retry_base"}));
    ASSIGN_OR_RETURN(c.aws.iam_endpoint, aws->String("iam_endpoint", ""));
    ASSIGN_OR_RETURN(c.aws.autoscaling_endpoint, aws->String("autoscaling_endpoint", ""));
    ASSIGN_OR_RETURN(int64_t attempts, aws->Int("max_attempts", c.aws.max_attempts, 1, 20));
    c.aws.max_attempts = static_cast<int>(attempts);
    ASSIGN_OR_RETURN(c.aws.retry_base_ms, aws->DurationMs("retry_base", c.aws.retry_base_ms, 0,
                                                          60000));
    for (const char* key : {"iam_endpoint", "autoscaling_endpoint"}) {
      ASSIGN_OR_RETURN(std::string url, aws->String(key, ""));
      if (!url.empty() && url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
        return aws->Child(key)->Error(
            absl::StrFormat("expected an http:// or https:// URL, got '%s'", url));
      }
    }
    if (aws->Child("region")) {
      ASSIGN_OR_RETURN(c.aws.region, aws->String("region", ""));
      if (c.aws.region.empty()) return aws->Child("region")->Error("region must not be empty");
    }
    ASSIGN_OR_RETURN(c.aws.endpoint, aws->String("endpoint", ""));
    ASSIGN_OR_RETURN(c.aws.ca_file, aws->String("ca_file", ""));
    ASSIGN_OR_RETURN(c.aws.isolation_security_group, aws->String("isolation_security_group", ""));
    // An overridden EC2 endpoint stands for the others unless they are given too, so a local
    // endpoint never leaves traffic for the public IAM or Auto Scaling endpoints.
    if (c.aws.iam_endpoint.empty()) c.aws.iam_endpoint = c.aws.endpoint;
    if (c.aws.autoscaling_endpoint.empty()) c.aws.autoscaling_endpoint = c.aws.endpoint;

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
    RETURN_IF_ERROR(response->ExpectKeys(
        {"mode", "never_isolate", "max_auto_isolations_per_hour", "self_instance_id"}));
    ASSIGN_OR_RETURN(std::string mode,
                     response->Enum("mode", "auto", {"auto", "approve", "dry-run", "off"}));
    c.response_mode = mode == "off"       ? ResponseMode::kOff
                      : mode == "approve" ? ResponseMode::kApprove
                      : mode == "dry-run" ? ResponseMode::kDryRun
                                          : ResponseMode::kAuto;
    ASSIGN_OR_RETURN(int64_t cap, response->Int("max_auto_isolations_per_hour",
                                                c.response.max_auto_isolations_per_hour, 0,
                                                1000000));
    c.response.max_auto_isolations_per_hour = static_cast<int>(cap);
    ASSIGN_OR_RETURN(c.response.self_instance_id, response->String("self_instance_id", ""));
    if (std::optional<ConfigNode> never = response->Child("never_isolate")) {
      RETURN_IF_ERROR(never->ExpectKeys({"instance_ids", "tags"}));
      ASSIGN_OR_RETURN(c.response.never_isolate_ids, never->StringList("instance_ids"));
      for (const std::string& id : c.response.never_isolate_ids) {
        if (id.rfind("i-", 0) != 0) {
          return never->Child("instance_ids")
              ->Error(absl::StrFormat("expected instance ids (i-...), got '%s'", id));
        }
      }
      // "key=value", or "key" for any value.
      ASSIGN_OR_RETURN(std::vector<std::string> tags, never->StringList("tags"));
      for (const std::string& t : tags) {
        const size_t eq = t.find('=');
        const std::string key = t.substr(0, eq);
        if (key.empty()) {
          return never->Child("tags")->Error(
              absl::StrFormat("expected key=value or key, got '%s'", t));
        }
        c.response.never_isolate_tags[key] = eq == std::string::npos ? "" : t.substr(eq + 1);
      }
    }
  }
  if (std::optional<ConfigNode> ct = root.Child("cloudtrail")) {
    RETURN_IF_ERROR(ct->ExpectKeys({"regions", "poll_interval", "lookback", "overlap",
                                    "max_calls_per_second", "endpoint"}));
    ASSIGN_OR_RETURN(c.cloudtrail.regions, ct->StringList("regions"));
    if (c.cloudtrail.regions.empty()) {
      return ct->Error("regions: at least one region (e.g. [us-east-1]) to poll");
    }
    for (const std::string& r : c.cloudtrail.regions) {
      const bool ok = !r.empty() && r.size() <= 32 && std::all_of(r.begin(), r.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-';
      });
      if (!ok) {
        return ct->Child("regions")->Error(
            absl::StrFormat("'%s' is not a region name (e.g. eu-west-1)", r));
      }
      if (std::count(c.cloudtrail.regions.begin(), c.cloudtrail.regions.end(), r) > 1) {
        return ct->Child("regions")->Error(absl::StrFormat("region '%s' is listed twice", r));
      }
    }
    ASSIGN_OR_RETURN(c.cloudtrail.poll_interval_ms,
                     ct->DurationMs("poll_interval", c.cloudtrail.poll_interval_ms, 100,
                                    int64_t{3600} * 1000));
    ASSIGN_OR_RETURN(c.cloudtrail.lookback_ms,
                     ct->DurationMs("lookback", c.cloudtrail.lookback_ms, 0,
                                    int64_t{90} * 24 * 3600 * 1000));
    ASSIGN_OR_RETURN(c.cloudtrail.overlap_ms,
                     ct->DurationMs("overlap", c.cloudtrail.overlap_ms, 1000,
                                    int64_t{24} * 3600 * 1000));
    ASSIGN_OR_RETURN(int64_t rate, ct->Int("max_calls_per_second",
                                           c.cloudtrail.max_calls_per_second, 1, 2));
    c.cloudtrail.max_calls_per_second = static_cast<int>(rate);
    ASSIGN_OR_RETURN(c.cloudtrail.endpoint, ct->String("endpoint", ""));
    if (!c.cloudtrail.endpoint.empty() && c.cloudtrail.endpoint.rfind("http://", 0) != 0 &&
        c.cloudtrail.endpoint.rfind("https://", 0) != 0) {
      return ct->Child("endpoint")->Error(
          absl::StrFormat("expected an http:// or https:// URL, got '%s'", c.cloudtrail.endpoint));
    }
  }
  if (std::optional<ConfigNode> notify = root.Child("notify")) {
    RETURN_IF_ERROR(notify->ExpectKeys({"webhooks", "sns_topic_arn", "attempts", "smtp"}));
    if (std::optional<ConfigNode> smtp = notify->Child("smtp")) {
      RETURN_IF_ERROR(
          smtp->ExpectKeys({"url", "from", "to", "starttls", "username", "password_file"}));
      ASSIGN_OR_RETURN(c.notify.smtp.url, smtp->RequiredString("url"));
      if (c.notify.smtp.url.rfind("smtp://", 0) != 0 && c.notify.smtp.url.rfind("smtps://", 0) != 0) {
        return smtp->Child("url")->Error("expected smtp://host:port or smtps://host:port");
      }
      ASSIGN_OR_RETURN(c.notify.smtp.from, smtp->RequiredString("from"));
      ASSIGN_OR_RETURN(c.notify.smtp.to, smtp->StringList("to"));
      if (c.notify.smtp.to.empty()) return smtp->Error("to: at least one recipient");
      ASSIGN_OR_RETURN(c.notify.smtp.starttls, smtp->Bool("starttls", true));
      ASSIGN_OR_RETURN(c.notify.smtp.username, smtp->String("username", ""));
      ASSIGN_OR_RETURN(c.notify.smtp.password_file, smtp->String("password_file", ""));
    }
    if (std::optional<ConfigNode> hooks = notify->Child("webhooks")) {
      ASSIGN_OR_RETURN(std::vector<ConfigNode> list, hooks->Elements());
      for (const ConfigNode& h : list) {
        RETURN_IF_ERROR(h.ExpectKeys({"url", "format"}));
        NotifyConfig::Webhook hook;
        ASSIGN_OR_RETURN(hook.url, h.RequiredString("url"));
        if (hook.url.rfind("http://", 0) != 0 && hook.url.rfind("https://", 0) != 0) {
          return h.Child("url")->Error("expected an http:// or https:// URL");
        }
        ASSIGN_OR_RETURN(std::string format, h.Enum("format", "json", {"json", "slack"}));
        hook.slack = format == "slack";
        c.notify.webhooks.push_back(std::move(hook));
      }
    }
    ASSIGN_OR_RETURN(c.notify.sns_topic_arn, notify->String("sns_topic_arn", ""));
    if (!c.notify.sns_topic_arn.empty() && c.notify.sns_topic_arn.rfind("arn:", 0) != 0) {
      return notify->Child("sns_topic_arn")->Error("expected an SNS topic ARN (arn:aws:sns:...)");
    }
    ASSIGN_OR_RETURN(int64_t attempts, notify->Int("attempts", c.notify.attempts, 1, 20));
    c.notify.attempts = static_cast<int>(attempts);
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
