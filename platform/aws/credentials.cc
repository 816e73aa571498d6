#include "platform/aws/credentials.h"

#include <curl/curl.h>

#include <cstdlib>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::aws {
namespace {

constexpr size_t kMaxAnswer = 64 << 10;
constexpr size_t kMaxFile = 1 << 20;

struct HttpAnswer {
  long status = 0;
  std::string body;
};

size_t Collect(char* data, size_t size, size_t n, void* user) {
  auto* out = static_cast<std::string*>(user);
  if (out->size() + size * n > kMaxAnswer) return 0;
  out->append(data, size * n);
  return size * n;
}

// One small HTTP request (IMDS, container endpoint): never through a proxy, no redirects.
absl::StatusOr<HttpAnswer> Http(const std::string& method, const std::string& url,
                                const std::vector<std::string>& headers, long timeout_ms) {
  CURL* h = curl_easy_init();
  if (h == nullptr) return absl::InternalError("curl_easy_init failed");
  curl_slist* list = nullptr;
  for (const std::string& header : headers) list = curl_slist_append(list, header.c_str());
  HttpAnswer answer;
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "PUT") curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
  if (method == "PUT") curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &Collect);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &answer.body);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  const CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &answer.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(h);
  if (rc != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(method, " ", Printable(url), ": ",
                                               errbuf[0] ? errbuf : curl_easy_strerror(rc)));
  }
  return answer;
}

bool ControlFree(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

// Credentials from a container or IMDS JSON answer.
absl::StatusOr<TemporaryCredentials> FromJson(const std::string& body, const std::string& source) {
  absl::StatusOr<std::map<std::string, std::string>> json = ParseFlatJsonObject(body);
  if (!json.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", json.status().message()));
  }
  auto get = [&](const char* key) {
    auto it = json->find(key);
    return it == json->end() ? std::string() : it->second;
  };
  if (!get("Code").empty() && get("Code") != "Success") {
    return absl::UnavailableError(
        absl::StrCat(source, ": credentials not available: ", Printable(get("Code"), 64)));
  }
  TemporaryCredentials t;
  t.source = source;
  t.credentials.access_key_id = get("AccessKeyId");
  t.credentials.secret_access_key = get("SecretAccessKey");
  t.credentials.session_token = get("Token");
  if (t.credentials.access_key_id.empty() || t.credentials.secret_access_key.empty() ||
      !ControlFree(t.credentials.access_key_id) || !ControlFree(t.credentials.secret_access_key) ||
      !ControlFree(t.credentials.session_token)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": answer without a usable AccessKeyId / SecretAccessKey"));
  }
  if (!get("Expiration").empty()) {
    absl::StatusOr<int64_t> when = ParseAwsTime(get("Expiration"));
    if (!when.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", when.status().message()));
    }
    t.expires_unix_ns = *when;
  }
  return t;
}

// An http:// container URI must stay on this host or the ECS/EKS agent addresses.
bool AllowedContainerUri(const std::string& uri) {
  if (absl::StartsWith(uri, "https://")) return true;
  if (!absl::StartsWith(uri, "http://")) return false;
  std::string host = uri.substr(7, uri.find_first_of("/?", 7) - 7);
  if (absl::StartsWith(host, "[")) {
    host = host.substr(0, host.find(']') + 1);
  } else {
    host = host.substr(0, host.find(':'));
  }
  return host == "localhost" || absl::StartsWith(host, "127.") || host == "[::1]" ||
         host == "169.254.170.2" || host == "169.254.170.23" || host == "[fd00:ec2::23]";
}

}  // namespace

Environment ProcessEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> ParseAwsIniFile(
    const std::string& text, const std::string& name, bool config_file) {
  std::map<std::string, std::map<std::string, std::string>> out;
  std::string section;
  int line_no = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line_no;
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ":", line_no, ": section header without ']'"));
      }
      std::string header(absl::StripAsciiWhitespace(line.substr(1, line.size() - 2)));
      if (config_file && header != "default") {
        if (!absl::StartsWith(header, "profile ")) {
          section.clear();  // sso-session, services, ...: not profiles
          continue;
        }
        header = std::string(absl::StripAsciiWhitespace(header.substr(8)));
      }
      section = header;
      out[section];
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(name, ":", line_no, ": expected key = value"));
    }
    if (section.empty()) continue;
    out[section][absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, eq)))] =
        std::string(absl::StripAsciiWhitespace(line.substr(eq + 1)));
  }
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> ParseFlatJsonObject(const std::string& text) {
  if (text.size() > kMaxAnswer) return absl::InvalidArgumentError("JSON answer too large");
  std::map<std::string, std::string> out;
  size_t i = 0;
  auto ws = [&] {
    while (i < text.size() &&
           (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) {
      ++i;
    }
  };
  auto bad = [&](const char* what) {
    return absl::InvalidArgumentError(absl::StrCat("bad JSON at byte ", i, ": ", what));
  };
  auto string = [&](std::string* s) -> absl::Status {
    if (i >= text.size() || text[i] != '"') return bad("expected a string");
    ++i;
    while (i < text.size() && text[i] != '"') {
      char c = text[i++];
      if (static_cast<unsigned char>(c) < 0x20) return bad("control character in a string");
      if (c == '\\') {
        if (i >= text.size()) return bad("escape at the end");
        char e = text[i++];
        switch (e) {
          case '"':
          case '\\':
          case '/':
            s->push_back(e);
            break;
          case 'n':
            s->push_back('\n');
            break;
          case 't':
            s->push_back('\t');
            break;
          case 'r':
            s->push_back('\r');
            break;
          case 'b':
            s->push_back('\b');
            break;
          case 'f':
            s->push_back('\f');
            break;
          case 'u': {
            unsigned v = 0;
            if (i + 4 > text.size() || !absl::SimpleHexAtoi(text.substr(i, 4), &v)) {
              return bad("bad \\u escape");
            }
            i += 4;
            if (v < 0x80) {
              s->push_back(static_cast<char>(v));
            } else if (v < 0x800) {
              s->push_back(static_cast<char>(0xc0 | (v >> 6)));
              s->push_back(static_cast<char>(0x80 | (v & 0x3f)));
            } else {
              s->push_back(static_cast<char>(0xe0 | (v >> 12)));
              s->push_back(static_cast<char>(0x80 | ((v >> 6) & 0x3f)));
              s->push_back(static_cast<char>(0x80 | (v & 0x3f)));
            }
            break;
          }
          default:
            return bad("unknown escape");
        }
      } else {
        s->push_back(c);
      }
    }
    if (i >= text.size()) return bad("unterminated string");
    ++i;
    return absl::OkStatus();
  };
  ws();
  if (i >= text.size() || text[i] != '{') return bad("expected an object");
  ++i;
  ws();
  if (i < text.size() && text[i] == '}') {
    ++i;
  } else {
    for (;;) {
      ws();
      std::string key, value;
      RETURN_IF_ERROR(string(&key));
      ws();
      if (i >= text.size() || text[i] != ':') return bad("expected ':'");
      ++i;
      ws();
      if (i < text.size() && text[i] == '"') {
        RETURN_IF_ERROR(string(&value));
      } else {
        const size_t start = i;
        while (i < text.size() && (absl::ascii_isalnum(text[i]) || text[i] == '-' ||
                                   text[i] == '+' || text[i] == '.')) {
          ++i;
        }
        if (i == start) return bad("expected a scalar value");
        value = text.substr(start, i - start);
      }
      out[key] = std::move(value);
      ws();
      if (i < text.size() && text[i] == ',') {
        ++i;
        continue;
      }
      if (i < text.size() && text[i] == '}') {
        ++i;
        break;
      }
      return bad("expected ',' or '}'");
    }
  }
  ws();
  if (i != text.size()) return bad("trailing bytes");
  return out;
}

absl::StatusOr<int64_t> ParseAwsTime(const std::string& text) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, text, &t, &err)) {
    return absl::InvalidArgumentError(
        absl::StrCat("time '", Printable(text, 64), "' is not RFC 3339: ", err));
  }
  return absl::ToUnixNanos(t);
}

CredentialChain::CredentialChain(Options options) : options_(std::move(options)) {}

std::optional<std::string> CredentialChain::Env(const std::string& name) const {
  std::optional<std::string> v = options_.env(name);
  if (v && v->empty()) return std::nullopt;
  return v;
}

std::string CredentialChain::Profile() const {
  return Env("AWS_PROFILE").value_or(Env("AWS_DEFAULT_PROFILE").value_or("default"));
}

std::string CredentialChain::ConfigPath(const char* var, const char* file) const {
  if (std::optional<std::string> p = Env(var)) return *p;
  std::string home = options_.home.empty() ? Env("HOME").value_or("") : options_.home;
  if (home.empty()) return "";
  return absl::StrCat(home, "/.aws/", file);
}

absl::StatusOr<std::optional<TemporaryCredentials>> CredentialChain::FromEnvironment() {
  std::optional<std::string> id = Env("AWS_ACCESS_KEY_ID");
  std::optional<std::string> secret = Env("AWS_SECRET_ACCESS_KEY");
  if (!id && !secret) return std::nullopt;
  if (!id || !secret) {
    return absl::InvalidArgumentError(
        "environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together");
  }
  TemporaryCredentials t;
  t.source = "environment";
  t.credentials = {*id, *secret, Env("AWS_SESSION_TOKEN").value_or("")};
  return t;
}

absl::StatusOr<std::optional<TemporaryCredentials>> CredentialChain::FromSharedFiles() {
  const std::string profile = Profile();
  for (const auto& [var, file, config] : {std::tuple<const char*, const char*, bool>{
                                              "AWS_SHARED_CREDENTIALS_FILE", "credentials", false},
                                          {"AWS_CONFIG_FILE", "config", true}}) {
    const std::string path = ConfigPath(var, file);
    if (path.empty()) continue;
    absl::StatusOr<std::string> text = ReadFileToString(path, kMaxFile);
    if (!text.ok()) {
      if (absl::IsNotFound(text.status())) continue;
      return text.status();
    }
    ASSIGN_OR_RETURN(auto sections, ParseAwsIniFile(*text, path, config));
    auto it = sections.find(profile);
    if (it == sections.end()) continue;
    auto get = [&](const char* key) {
      auto v = it->second.find(key);
      return v == it->second.end() ? std::string() : v->second;
    };
    if (get("aws_access_key_id").empty() && get("aws_secret_access_key").empty()) continue;
    if (get("aws_access_key_id").empty() || get("aws_secret_access_key").empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": profile ", profile,
                       ": aws_access_key_id and aws_secret_access_key must be set together"));
    }
    TemporaryCredentials t;
    t.source = absl::StrCat(path, " profile ", profile);
    t.credentials = {get("aws_access_key_id"), get("aws_secret_access_key"),
                     get("aws_session_token")};
    return t;
  }
  return std::nullopt;
}

absl::StatusOr<std::optional<TemporaryCredentials>> CredentialChain::FromContainer() {
  std::string uri;
  if (std::optional<std::string> rel = Env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")) {
    uri = options_.container_host + *rel;
  } else if (std::optional<std::string> full = Env("AWS_CONTAINER_CREDENTIALS_FULL_URI")) {
    uri = *full;
    if (!AllowedContainerUri(uri)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AWS_CONTAINER_CREDENTIALS_FULL_URI ", Printable(uri),
          ": http:// only to this host or the container agent (169.254.170.2, 169.254.170.23)"));
    }
  } else {
    return std::nullopt;
  }
  std::vector<std::string> headers;
  std::optional<std::string> token = Env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
  if (std::optional<std::string> file = Env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(*file, 16 << 10));
    token = std::string(absl::StripAsciiWhitespace(text));
  }
  if (token) {
    if (!ControlFree(*token)) {
      return absl::InvalidArgumentError("container authorization token has control characters");
    }
    headers.push_back("Authorization: " + *token);
  }
  ASSIGN_OR_RETURN(HttpAnswer a, Http("GET", uri, headers, options_.timeout_ms));
  if (a.status != 200) {
    return absl::UnavailableError(
        absl::StrCat("container credentials ", Printable(uri), ": HTTP ", a.status));
  }
  ASSIGN_OR_RETURN(TemporaryCredentials t, FromJson(a.body, "container credentials endpoint"));
  return t;
}

absl::StatusOr<std::string> CredentialChain::ImdsToken() {
  ASSIGN_OR_RETURN(HttpAnswer a,
                   Http("PUT",
                        Env("AWS_EC2_METADATA_SERVICE_ENDPOINT").value_or(options_.imds_endpoint) +
                            "/latest/api/token",
                        {"X-aws-ec2-metadata-token-ttl-seconds: 21600"}, options_.timeout_ms));
  if (a.status != 200 || a.body.empty() || !ControlFree(a.body)) {
    return absl::UnavailableError(absl::StrCat("IMDSv2 token: HTTP ", a.status));
  }
  return a.body;
}

absl::StatusOr<std::string> CredentialChain::ImdsGet(const std::string& path) {
  if (Env("AWS_EC2_METADATA_DISABLED").value_or("") == "true") {
    return absl::NotFoundError("IMDS: disabled by AWS_EC2_METADATA_DISABLED");
  }
  ASSIGN_OR_RETURN(std::string token, ImdsToken());
  const std::string base =
      Env("AWS_EC2_METADATA_SERVICE_ENDPOINT").value_or(options_.imds_endpoint);
  ASSIGN_OR_RETURN(HttpAnswer a, Http("GET", base + path, {"X-aws-ec2-metadata-token: " + token},
                                      options_.timeout_ms));
  if (a.status == 404) return absl::NotFoundError(absl::StrCat("IMDS ", path, ": not found"));
  if (a.status != 200) {
    return absl::UnavailableError(absl::StrCat("IMDS ", path, ": HTTP ", a.status));
  }
  return a.body;
}

absl::StatusOr<std::optional<TemporaryCredentials>> CredentialChain::FromImds() {
  absl::StatusOr<std::string> roles = ImdsGet("/latest/meta-data/iam/security-credentials/");
  if (!roles.ok()) {
    if (absl::IsNotFound(roles.status()) || absl::IsUnavailable(roles.status())) {
      return std::nullopt;  // not on EC2, or no role: the chain says what it tried
    }
    return roles.status();
  }
  std::string role(absl::StripAsciiWhitespace(roles->substr(0, roles->find('\n'))));
  if (role.empty() || role.find('/') != std::string::npos || !ControlFree(role)) {
    return absl::InvalidArgumentError("IMDS: bad role name in security-credentials/");
  }
  ASSIGN_OR_RETURN(std::string body, ImdsGet("/latest/meta-data/iam/security-credentials/" + role));
  ASSIGN_OR_RETURN(TemporaryCredentials t, FromJson(body, "IMDS role " + role));
  t.source = "imds role " + role;
  return t;
}

absl::StatusOr<TemporaryCredentials> CredentialChain::Get() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = options_.clock->NowUnixNanos();
  if (cached_ && (cached_->expires_unix_ns == 0 ||
                  cached_->expires_unix_ns - options_.refresh_before_ns > now)) {
    return *cached_;
  }
  std::vector<std::string> tried;
  using Source = absl::StatusOr<std::optional<TemporaryCredentials>> (CredentialChain::*)();
  for (const auto& [name, source] :
       {std::pair<const char*, Source>{"environment", &CredentialChain::FromEnvironment},
        {"shared credentials/config files", &CredentialChain::FromSharedFiles},
        {"container credentials endpoint", &CredentialChain::FromContainer},
        {"IMDSv2 role", &CredentialChain::FromImds}}) {
    absl::StatusOr<std::optional<TemporaryCredentials>> found = (this->*source)();
    if (!found.ok()) return found.status();
    if (*found) {
      if (!cached_ || cached_->source != (*found)->source) {
        spdlog::info("aws: credentials from {} access_key_id={}", (*found)->source,
                     Printable((*found)->credentials.access_key_id, 32));
      }
      cached_ = **found;
      return *cached_;
    }
    tried.push_back(name);
  }
  return absl::NotFoundError(
      absl::StrCat("AWS credentials: none found (tried ", absl::StrJoin(tried, ", "), ")"));
}

CredentialSource CredentialChain::AsSource() {
  return [this]() -> absl::StatusOr<Credentials> {
    ASSIGN_OR_RETURN(TemporaryCredentials t, Get());
    return t.credentials;
  };
}

absl::StatusOr<std::string> CredentialChain::Region() {
  if (std::optional<std::string> r = Env("AWS_REGION")) return *r;
  if (std::optional<std::string> r = Env("AWS_DEFAULT_REGION")) return *r;
  const std::string path = ConfigPath("AWS_CONFIG_FILE", "config");
  if (!path.empty()) {
    absl::StatusOr<std::string> text = ReadFileToString(path, kMaxFile);
    if (text.ok()) {
      ASSIGN_OR_RETURN(auto sections, ParseAwsIniFile(*text, path, true));
      auto it = sections.find(Profile());
      if (it != sections.end() && it->second.count("region") > 0) return it->second["region"];
    } else if (!absl::IsNotFound(text.status())) {
      return text.status();
    }
  }
  ASSIGN_OR_RETURN(std::string region, ImdsGet("/latest/meta-data/placement/region"));
  region = std::string(absl::StripAsciiWhitespace(region));
  if (region.empty() || !ControlFree(region)) return absl::NotFoundError("IMDS: empty region");
  return region;
}

absl::StatusOr<std::string> CredentialChain::InstanceId() {
  ASSIGN_OR_RETURN(std::string id, ImdsGet("/latest/meta-data/instance-id"));
  id = std::string(absl::StripAsciiWhitespace(id));
  if (!absl::StartsWith(id, "i-") || !ControlFree(id)) {
    return absl::InvalidArgumentError("IMDS: instance-id is not i-...");
  }
  return id;
}

}  // namespace tripline::aws
