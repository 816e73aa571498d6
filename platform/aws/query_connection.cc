#include "platform/aws/query_connection.h"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <random>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "platform/aws/credentials.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::aws {
namespace {

constexpr size_t kMaxMessageBytes = 1024;  // AWS's message as kept in CallInfo

absl::Status InitCurlOnce() {
  static std::once_flag once;
  static CURLcode result = CURLE_OK;
  std::call_once(once, [] { result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (result != CURLE_OK) {
    return absl::InternalError(absl::StrCat("curl_global_init: ", curl_easy_strerror(result)));
  }
  return absl::OkStatus();
}

// RFC 3986: unreserved characters stay, every other byte becomes %XX (upper-case hex), as SigV4
// and the services' form decoding expect.
std::string PercentEncode(std::string_view in) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(in.size() * 3);
  for (unsigned char c : in) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0x0f]);
    }
  }
  return out;
}

bool HasControlBytes(std::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

std::string Capped(std::string s, size_t max) {
  if (s.size() > max) s.resize(max);
  return s;
}

bool IsThrottlingOrServerCode(const std::string& code) {
  return code == "RequestLimitExceeded" || code == "Throttling" || code == "ThrottlingException" ||
         code == "RequestThrottled" || code == "ServiceUnavailable" || code == "Unavailable" ||
         code == "InternalError" || code == "InternalFailure" || code == "ServiceFailure";
}

bool IsAuthCode(const std::string& code) {
  return code == "AuthFailure" || code == "SignatureDoesNotMatch" ||
         code == "UnauthorizedOperation" || code == "MissingAuthenticationToken" ||
         code == "InvalidClientTokenId" || code == "RequestExpired" || code == "OptInRequired" ||
         code == "Blocked" || code == "AccessDenied" ||
         // The JSON protocol's names (CloudTrail).
         code == "InvalidSignatureException" || code == "UnrecognizedClientException" ||
         code == "AccessDeniedException" || code == "ExpiredTokenException";
}

absl::StatusCode CodeForAwsError(int http_status, const std::string& code) {
  if (IsRetryableAwsError(http_status, code)) return absl::StatusCode::kUnavailable;
  if (absl::EndsWith(code, "NotFound") || code == "NoSuchEntity") {
    return absl::StatusCode::kNotFound;
  }
  if (http_status == 401 || http_status == 403 || IsAuthCode(code)) {
    return absl::StatusCode::kPermissionDenied;
  }
  return absl::StatusCode::kFailedPrecondition;
}

std::string ChildText(const pugi::xml_node& node, const char* name) {
  return node.child(name).text().as_string();
}

struct ResponseSink {
  std::string body;
  size_t limit = 0;
  bool overflowed = false;
};

size_t WriteToSink(char* data, size_t size, size_t nmemb, void* user) {
  auto* sink = static_cast<ResponseSink*>(user);
  const size_t n = size * nmemb;
  if (n > sink->limit - sink->body.size()) {
    sink->overflowed = true;
    return 0;  // libcurl aborts the transfer with CURLE_WRITE_ERROR
  }
  sink->body.append(data, n);
  return n;
}

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

bool AppendHeader(Slist& list, const std::string& header) {
  curl_slist* grown = curl_slist_append(list.get(), header.c_str());
  if (grown == nullptr) return false;
  list.release();
  list.reset(grown);
  return true;
}

absl::Status ValidateEndpoint(const std::string& service, const std::string& endpoint) {
  std::string_view rest;
  const std::string lower = absl::AsciiStrToLower(endpoint);
  if (absl::StartsWith(lower, "https://")) {
    rest = std::string_view(endpoint).substr(8);
  } else if (absl::StartsWith(lower, "http://")) {
    rest = std::string_view(endpoint).substr(7);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(absl::AsciiStrToUpper(service), " endpoint '",
                                                   Printable(endpoint),
                                                   "': not http:// or https://"));
  }
  if (rest.empty() || rest.front() == '/' || HasControlBytes(rest) ||
      rest.find_first_of(" ?#@") != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(absl::AsciiStrToUpper(service), " endpoint '", Printable(endpoint),
                     "': expected scheme://host[:port] with no path"));
  }
  const size_t slash = rest.find('/');
  if (slash != std::string_view::npos && slash != rest.size() - 1) {
    return absl::InvalidArgumentError(absl::StrCat(absl::AsciiStrToUpper(service), " endpoint '",
                                                   Printable(endpoint),
                                                   "': a path is not allowed"));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsRetryableAwsError(int http_status, const std::string& code) {
  return http_status >= 500 || IsThrottlingOrServerCode(code);
}

absl::Status FailCall(CallInfo* info, absl::StatusCode code, std::string error_code,
                      std::string message) {
  info->error_code = std::move(error_code);
  info->error_message = Capped(std::move(message), kMaxMessageBytes);
  return absl::Status(code, absl::StrCat(info->action, ": ", info->error_code, ": ",
                                         Printable(info->error_message, 512)));
}

struct QueryConnection::Curl {
  struct EasyDeleter {
    void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
  };
  std::unique_ptr<CURL, EasyDeleter> handle;
  std::string url;        // endpoint + "/"
  std::string sigv4;      // "aws:amz:<region>:<service>"
  bool loopback = false;  // a local endpoint (tests): never sent through a proxy
  std::mt19937_64 jitter{std::random_device{}()};
};

absl::StatusOr<std::unique_ptr<QueryConnection>> QueryConnection::Create(Options options) {
  if (options.region.empty() ||
      !std::all_of(options.region.begin(), options.region.end(), [](char c) {
        return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-';
      })) {
    return absl::InvalidArgumentError(
        absl::StrCat("AWS region '", Printable(options.region), "': expected e.g. eu-west-1"));
  }
  if (options.service.empty() || options.api_version.empty()) {
    return absl::InvalidArgumentError("AWS query connection: service and api_version required");
  }
  if (!options.credentials) {
    return absl::InvalidArgumentError("AWS query connection: no credential source");
  }
  RETURN_IF_ERROR(ValidateEndpoint(options.service, options.endpoint));
  if (options.timeout_ms <= 0 || options.max_response_bytes == 0 || options.max_attempts < 1 ||
      options.retry_base_ms < 0 || options.retry_max_ms < 0) {
    return absl::InvalidArgumentError(
        "AWS query connection: timeout, response size and attempts must be positive");
  }
  RETURN_IF_ERROR(InitCurlOnce());
  auto curl = std::make_unique<Curl>();
  curl->handle.reset(curl_easy_init());
  if (!curl->handle) return absl::InternalError("curl_easy_init failed");
  std::string base = options.endpoint;
  if (!absl::EndsWith(base, "/")) base.push_back('/');
  curl->url = std::move(base);
  curl->sigv4 = absl::StrCat("aws:amz:", options.region, ":", options.service);
  const std::string_view host = std::string_view(curl->url).substr(curl->url.find("://") + 3);
  curl->loopback =
      host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
  std::unique_ptr<QueryConnection> c(new QueryConnection(std::move(options)));
  c->curl_ = std::move(curl);
  return c;
}

QueryConnection::QueryConnection(Options options) : options_(std::move(options)) {}
QueryConnection::~QueryConnection() = default;

absl::Status QueryConnection::Call(const std::string& action, Params params, bool dry_run,
                                   CallInfo* info, pugi::xml_document* doc) {
  *info = CallInfo();
  info->action = action;
  if (dry_run) params.emplace_back("DryRun", "true");
  std::string body =
      absl::StrCat("Action=", PercentEncode(action), "&Version=", options_.api_version);
  for (const auto& [name, value] : params) {
    if (HasControlBytes(name)) {
      return FailCall(info, absl::StatusCode::kInvalidArgument, "ClientValidation",
                      "parameter name with control characters");
    }
    absl::StrAppend(&body, "&", PercentEncode(name), "=", PercentEncode(value));
  }
  absl::Status st;
  for (int attempt = 1;; ++attempt) {
    info->attempts = attempt;
    st = CallOnce(action, body, info, doc);
    if (dry_run && !st.ok() && info->error_code == "DryRunOperation") {
      info->dry_run = true;
      info->error_code.clear();
      info->error_message.clear();
      return absl::OkStatus();
    }
    if (st.ok() || attempt >= options_.max_attempts || info->http_status == 0 ||
        !IsRetryableAwsError(info->http_status, info->error_code)) {
      break;
    }
    WaitBeforeRetry(action, attempt, *info);
  }
  return st;
}

void QueryConnection::WaitBeforeRetry(const std::string& action, int attempt,
                                      const CallInfo& info) {
  const long cap =
      std::min(options_.retry_max_ms, options_.retry_base_ms << std::min(attempt - 1, 20));
  const long wait_ms = cap <= 0 ? 0 : std::uniform_int_distribution<long>(0, cap)(curl_->jitter);
  spdlog::warn("aws call action={} service={} attempt={} error_code={} retry_in_ms={}", action,
               options_.service, attempt, Printable(info.error_code), wait_ms);
  std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
}

absl::Status QueryConnection::CallJson(const std::string& target, const std::string& body,
                                       CallInfo* info, std::string* response) {
  *info = CallInfo();
  info->action = target.substr(target.rfind('.') + 1);
  if (target.empty() || HasControlBytes(target)) {
    return FailCall(info, absl::StatusCode::kInvalidArgument, "ClientValidation",
                    "JSON target is empty or has control characters");
  }
  absl::Status st;
  for (int attempt = 1;; ++attempt) {
    info->attempts = attempt;
    st = CallJsonOnce(target, body, info, response);
    if (st.ok() || attempt >= options_.max_attempts || info->http_status == 0 ||
        !IsRetryableAwsError(info->http_status, info->error_code)) {
      break;
    }
    WaitBeforeRetry(info->action, attempt, *info);
  }
  return st;
}

absl::Status QueryConnection::CallJsonOnce(const std::string& target, const std::string& body,
                                           CallInfo* info, std::string* response) {
  RETURN_IF_ERROR(Send(info->action,
                       {"Content-Type: application/x-amz-json-1.1", "X-Amz-Target: " + target},
                       body, info, response));
  const int http_status = info->http_status;
  if (http_status >= 200 && http_status < 300) {
    if (response->empty() || response->front() != '{') {
      return FailCall(info, absl::StatusCode::kInternal, "MalformedResponse",
                      absl::StrCat("HTTP ", http_status, " but not a JSON object: ",
                                   Printable(*response, 200)));
    }
    return absl::OkStatus();
  }
  // A JSON 1.1 error: {"__type": "[namespace#]Code", "message" | "Message": "..."}.
  std::string code;
  std::string message;
  absl::StatusOr<std::map<std::string, std::string>> fields = ParseFlatJsonObject(*response);
  if (fields.ok()) {
    auto get = [&](const char* key) {
      auto it = fields->find(key);
      return it == fields->end() ? std::string() : it->second;
    };
    code = get("__type");
    if (const size_t hash = code.rfind('#'); hash != std::string::npos) code.erase(0, hash + 1);
    message = get("message");
    if (message.empty()) message = get("Message");
  }
  if (code.empty()) {
    code = "UnknownError";
    message = absl::StrCat("HTTP ", http_status,
                           " with no AWS error in the body: ", Printable(*response, 200));
  }
  response->clear();
  code = Capped(code, 128);
  spdlog::debug("aws call action={} http_status={} error_code={}", info->action, http_status,
                Printable(code));
  return FailCall(info, CodeForAwsError(http_status, code), code, message);
}

absl::Status QueryConnection::Send(const std::string& action,
                                   const std::vector<std::string>& headers_in,
                                   const std::string& body, CallInfo* info, std::string* response) {
  info->http_status = 0;
  info->request_id.clear();
  info->error_code.clear();
  info->error_message.clear();
  response->clear();

  absl::StatusOr<Credentials> creds = options_.credentials();
  if (!creds.ok()) {
    return FailCall(info, absl::StatusCode::kUnauthenticated, "NoCredentials",
                    std::string(creds.status().message()));
  }
  if (creds->access_key_id.empty() || creds->secret_access_key.empty() ||
      HasControlBytes(creds->access_key_id) || HasControlBytes(creds->secret_access_key) ||
      HasControlBytes(creds->session_token)) {
    return FailCall(info, absl::StatusCode::kUnauthenticated, "NoCredentials",
                    "AWS credentials: access key id or secret key missing or malformed");
  }

  CURL* h = curl_->handle.get();
  curl_easy_reset(h);
  Slist headers;
  for (const std::string& header : headers_in) {
    if (!AppendHeader(headers, header)) {
      return FailCall(info, absl::StatusCode::kInternal, "ClientError", "out of memory");
    }
  }
  if (!creds->session_token.empty() &&
      !AppendHeader(headers, "X-Amz-Security-Token: " + creds->session_token)) {
    return FailCall(info, absl::StatusCode::kInternal, "ClientError", "out of memory");
  }

  ResponseSink sink;
  sink.limit = options_.max_response_bytes;
  char errbuf[CURL_ERROR_SIZE] = {0};
  bool set_ok = true;
  auto set = [&set_ok](CURLcode rc) { set_ok = set_ok && rc == CURLE_OK; };
  set(curl_easy_setopt(h, CURLOPT_URL, curl_->url.c_str()));
  set(curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https"));
  set(curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L));
  set(curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L));
  set(curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, options_.timeout_ms));
  set(curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, options_.timeout_ms));
  set(curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L));
  set(curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L));
  if (!options_.ca_file.empty()) {
    set(curl_easy_setopt(h, CURLOPT_CAINFO, options_.ca_file.c_str()));
  }
  set(curl_easy_setopt(h, CURLOPT_POST, 1L));
  set(curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.c_str()));
  set(curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size())));
  set(curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get()));
  set(curl_easy_setopt(h, CURLOPT_USERAGENT, "tripline/0.1"));
  set(curl_easy_setopt(h, CURLOPT_AWS_SIGV4, curl_->sigv4.c_str()));
  set(curl_easy_setopt(h, CURLOPT_USERNAME, creds->access_key_id.c_str()));
  set(curl_easy_setopt(h, CURLOPT_PASSWORD, creds->secret_access_key.c_str()));
  set(curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE,
                       static_cast<curl_off_t>(options_.max_response_bytes)));
  set(curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &WriteToSink));
  set(curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink));
  set(curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf));
  if (curl_->loopback) set(curl_easy_setopt(h, CURLOPT_NOPROXY, "*"));
  if (!set_ok) {
    curl_easy_reset(h);
    return FailCall(info, absl::StatusCode::kInternal, "ClientError",
                    "libcurl refused an option (built without SigV4 or TLS?)");
  }

  const CURLcode rc = curl_easy_perform(h);
  long http_status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http_status);
  info->http_status = static_cast<int>(http_status);
  // Drop libcurl's pointers to this call's buffers and its copy of the secret; the connection
  // cache survives a reset, so the next call can reuse the connection.
  curl_easy_reset(h);

  if (sink.overflowed || rc == CURLE_FILESIZE_EXCEEDED) {
    return FailCall(info, absl::StatusCode::kResourceExhausted, "ResponseTooLarge",
                    absl::StrCat("response body exceeds ", options_.max_response_bytes, " bytes"));
  }
  if (rc != CURLE_OK) {
    std::string message = curl_easy_strerror(rc);
    if (errbuf[0] != '\0') absl::StrAppend(&message, ": ", errbuf);
    info->http_status = 0;
    spdlog::debug("aws call action={} transport_error={}", action, Printable(message));
    return FailCall(info, absl::StatusCode::kUnavailable, "TransportError", message);
  }

  *response = std::move(sink.body);
  return absl::OkStatus();
}

absl::Status QueryConnection::CallOnce(const std::string& action, const std::string& body,
                                       CallInfo* info, pugi::xml_document* doc) {
  doc->reset();
  std::string response;
  RETURN_IF_ERROR(Send(action, {"Content-Type: application/x-www-form-urlencoded; charset=utf-8"},
                       body, info, &response));
  const long http_status = info->http_status;
  const pugi::xml_parse_result parsed =
      doc->load_buffer(response.data(), response.size(), pugi::parse_default);
  if (http_status >= 200 && http_status < 300) {
    const pugi::xml_node root = doc->document_element();
    if (!parsed || std::string_view(root.name()) != action + "Response") {
      return FailCall(info, absl::StatusCode::kInternal, "MalformedResponse",
                      absl::StrCat("HTTP ", http_status, " but not a ", action,
                                   "Response: ", parsed ? root.name() : parsed.description()));
    }
    // EC2 says <requestId>; IAM and Auto Scaling <ResponseMetadata><RequestId>.
    std::string request_id = ChildText(root, "requestId");
    if (request_id.empty()) request_id = ChildText(root.child("ResponseMetadata"), "RequestId");
    info->request_id = Capped(request_id, 128);
    spdlog::debug("aws call action={} http_status={} request_id={}", action, http_status,
                  Printable(info->request_id));
    return absl::OkStatus();
  }

  // An error answer: EC2's <Response><Errors><Error>, or the <ErrorResponse><Error> of IAM and
  // Auto Scaling.
  std::string code;
  std::string message;
  if (parsed) {
    const pugi::xml_node root = doc->document_element();
    pugi::xml_node error = root.child("Errors").child("Error");
    if (!error) error = root.child("Error");
    code = ChildText(error, "Code");
    message = ChildText(error, "Message");
    info->request_id = ChildText(root, "RequestID");
    if (info->request_id.empty()) info->request_id = ChildText(root, "RequestId");
    info->request_id = Capped(info->request_id, 128);
  }
  if (code.empty()) {
    code = "UnknownError";
    message = absl::StrCat("HTTP ", http_status,
                           " with no AWS error in the body: ", Printable(response, 200));
  }
  code = Capped(code, 128);
  spdlog::debug("aws call action={} http_status={} request_id={} error_code={}", action,
                http_status, Printable(info->request_id), Printable(code));
  if (http_status >= 300 && http_status < 400) {
    return FailCall(info, absl::StatusCode::kFailedPrecondition, code,
                    absl::StrCat("unexpected redirect (HTTP ", http_status, "); ", message));
  }
  return FailCall(info, CodeForAwsError(static_cast<int>(http_status), code), code, message);
}

}  // namespace tripline::aws
