#include "platform/aws/ec2_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"
#include "pugixml.hpp"

namespace tripline::aws {
namespace {

constexpr char kApiVersion[] = "2016-11-15";
constexpr size_t kMaxMessageBytes = 1024;  // AWS's message as kept in CallInfo

using Params = std::vector<std::pair<std::string, std::string>>;

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
// and EC2's form decoding expect.
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

std::string FormBody(const std::string& action, const Params& params) {
  std::string body = absl::StrCat("Action=", PercentEncode(action), "&Version=", kApiVersion);
  for (const auto& [name, value] : params) {
    absl::StrAppend(&body, "&", PercentEncode(name), "=", PercentEncode(value));
  }
  return body;
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
         code == "InternalError" || code == "InternalFailure";
}

bool IsAuthCode(const std::string& code) {
  return code == "AuthFailure" || code == "SignatureDoesNotMatch" ||
         code == "UnauthorizedOperation" || code == "MissingAuthenticationToken" ||
         code == "InvalidClientTokenId" || code == "RequestExpired" || code == "OptInRequired" ||
         code == "Blocked";
}

absl::StatusCode CodeForAwsError(int http_status, const std::string& code) {
  if (http_status >= 500 || IsThrottlingOrServerCode(code)) return absl::StatusCode::kUnavailable;
  if (absl::EndsWith(code, ".NotFound") || absl::EndsWith(code, "NotFound")) {
    return absl::StatusCode::kNotFound;
  }
  if (http_status == 401 || http_status == 403 || IsAuthCode(code)) {
    return absl::StatusCode::kPermissionDenied;
  }
  return absl::StatusCode::kFailedPrecondition;
}

// Fills `info` with a failure and returns the matching Status.
absl::Status Fail(CallInfo* info, absl::StatusCode code, std::string error_code,
                  std::string message) {
  info->error_code = std::move(error_code);
  info->error_message = Capped(std::move(message), kMaxMessageBytes);
  return absl::Status(code, absl::StrCat(info->action, ": ", info->error_code, ": ",
                                         Printable(info->error_message, 512)));
}

std::string ChildText(const pugi::xml_node& node, const char* name) {
  return node.child(name).text().as_string();
}

// What the write callback collects; refuses to grow past `limit`.
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

absl::StatusOr<Slist> AppendHeader(Slist list, const std::string& header) {
  curl_slist* grown = curl_slist_append(list.get(), header.c_str());
  if (grown == nullptr) return absl::ResourceExhaustedError("curl_slist_append failed");
  list.release();
  return Slist(grown);
}

absl::Status ValidateEndpoint(const std::string& endpoint) {
  std::string_view rest;
  const std::string lower = absl::AsciiStrToLower(endpoint);
  if (absl::StartsWith(lower, "https://")) {
    rest = std::string_view(endpoint).substr(8);
  } else if (absl::StartsWith(lower, "http://")) {
    rest = std::string_view(endpoint).substr(7);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("EC2 endpoint '", Printable(endpoint), "': not http:// or https://"));
  }
  if (rest.empty() || rest.front() == '/' || HasControlBytes(rest) ||
      rest.find_first_of(" ?#@") != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EC2 endpoint '", Printable(endpoint), "': expected scheme://host[:port] with no path"));
  }
  const size_t slash = rest.find('/');
  if (slash != std::string_view::npos && slash != rest.size() - 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("EC2 endpoint '", Printable(endpoint), "': a path is not allowed"));
  }
  return absl::OkStatus();
}

}  // namespace

struct Ec2Client::Connection {
  struct EasyDeleter {
    void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
  };
  std::unique_ptr<CURL, EasyDeleter> curl;
  std::string url;        // endpoint + "/"
  std::string sigv4;      // "aws:amz:<region>:ec2"
  bool loopback = false;  // a local endpoint (tests): never sent through a proxy

  // Sends one signed call; on success `doc` holds the parsed <Action>Response. Fills `info`.
  absl::Status Call(const Options& options, const std::string& action, const Params& params,
                    CallInfo* info, pugi::xml_document* doc);
};

absl::Status Ec2Client::Connection::Call(const Options& options, const std::string& action,
                                         const Params& params, CallInfo* info,
                                         pugi::xml_document* doc) {
  *info = CallInfo();
  info->action = action;
  CURL* h = curl.get();
  curl_easy_reset(h);

  const std::string body = FormBody(action, params);
  Slist headers;
  {
    auto h1 = AppendHeader(std::move(headers),
                           "Content-Type: application/x-www-form-urlencoded; charset=utf-8");
    if (!h1.ok()) return Fail(info, absl::StatusCode::kInternal, "ClientError", "out of memory");
    headers = std::move(*h1);
    if (!options.credentials.session_token.empty()) {
      auto h2 = AppendHeader(std::move(headers),
                             "X-Amz-Security-Token: " + options.credentials.session_token);
      if (!h2.ok()) return Fail(info, absl::StatusCode::kInternal, "ClientError", "out of memory");
      headers = std::move(*h2);
    }
  }

  ResponseSink sink;
  sink.limit = options.max_response_bytes;
  char errbuf[CURL_ERROR_SIZE] = {0};

  bool set_ok = true;
  auto set = [&set_ok](CURLcode rc) { set_ok = set_ok && rc == CURLE_OK; };
  set(curl_easy_setopt(h, CURLOPT_URL, url.c_str()));
  set(curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https"));
  set(curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L));
  set(curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L));
  set(curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, options.timeout_ms));
  set(curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, options.timeout_ms));
  set(curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L));
  set(curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L));
  if (!options.ca_file.empty()) set(curl_easy_setopt(h, CURLOPT_CAINFO, options.ca_file.c_str()));
  set(curl_easy_setopt(h, CURLOPT_POST, 1L));
  set(curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.c_str()));
  set(curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size())));
  set(curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get()));
  set(curl_easy_setopt(h, CURLOPT_USERAGENT, "tripline/0.1"));
  set(curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4.c_str()));
  set(curl_easy_setopt(h, CURLOPT_USERNAME, options.credentials.access_key_id.c_str()));
  set(curl_easy_setopt(h, CURLOPT_PASSWORD, options.credentials.secret_access_key.c_str()));
  set(curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE,
                       static_cast<curl_off_t>(options.max_response_bytes)));
  set(curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &WriteToSink));
  set(curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink));
  set(curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf));
  if (loopback) set(curl_easy_setopt(h, CURLOPT_NOPROXY, "*"));
  if (!set_ok) {
    return Fail(info, absl::StatusCode::kInternal, "ClientError",
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
    return Fail(info, absl::StatusCode::kResourceExhausted, "ResponseTooLarge",
                absl::StrCat("response body exceeds ", options.max_response_bytes, " bytes"));
  }
  if (rc != CURLE_OK) {
    std::string message = curl_easy_strerror(rc);
    if (errbuf[0] != '\0') absl::StrAppend(&message, ": ", errbuf);
    info->http_status = 0;
    spdlog::debug("ec2 call action={} transport_error={}", action, Printable(message));
    return Fail(info, absl::StatusCode::kUnavailable, "TransportError", message);
  }

  const pugi::xml_parse_result parsed =
      doc->load_buffer(sink.body.data(), sink.body.size(), pugi::parse_default);
  if (http_status >= 200 && http_status < 300) {
    const pugi::xml_node root = doc->document_element();
    if (!parsed || std::string_view(root.name()) != action + "Response") {
      return Fail(info, absl::StatusCode::kInternal, "MalformedResponse",
                  absl::StrCat("HTTP ", http_status, " but not a ", action,
                               "Response: ", parsed ? root.name() : parsed.description()));
    }
    info->request_id = Capped(ChildText(root, "requestId"), 128);
    spdlog::debug("ec2 call action={} http_status={} request_id={}", action, http_status,
                  Printable(info->request_id));
    return absl::OkStatus();
  }

  // An error answer: EC2's <Response><Errors><Error>, or the <ErrorResponse> other AWS query
  // services use.
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
                           " with no AWS error in the body: ", Printable(sink.body, 200));
  }
  code = Capped(code, 128);
  spdlog::debug("ec2 call action={} http_status={} request_id={} error_code={}", action,
                http_status, Printable(info->request_id), Printable(code));
  if (http_status >= 300 && http_status < 400) {
    return Fail(info, absl::StatusCode::kFailedPrecondition, code,
                absl::StrCat("unexpected redirect (HTTP ", http_status, "); ", message));
  }
  return Fail(info, CodeForAwsError(static_cast<int>(http_status), code), code, message);
}

absl::StatusOr<Credentials> CredentialsFromEnvironment() {
  auto get = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v == nullptr ? std::string() : std::string(v);
  };
  Credentials creds;
  creds.access_key_id = get("AWS_ACCESS_KEY_ID");
  creds.secret_access_key = get("AWS_SECRET_ACCESS_KEY");
  creds.session_token = get("AWS_SESSION_TOKEN");
  if (creds.access_key_id.empty() || creds.secret_access_key.empty()) {
    return absl::NotFoundError(
        "AWS credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set");
  }
  return creds;
}

absl::StatusOr<std::unique_ptr<Ec2Client>> Ec2Client::Create(Options options) {
  if (options.region.empty() ||
      !std::all_of(options.region.begin(), options.region.end(), [](char c) {
        return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-';
      })) {
    return absl::InvalidArgumentError(
        absl::StrCat("EC2 region '", Printable(options.region), "': expected e.g. eu-west-1"));
  }
  const Credentials& creds = options.credentials;
  if (creds.access_key_id.empty() || creds.secret_access_key.empty()) {
    return absl::InvalidArgumentError("EC2 credentials: access key id or secret key missing");
  }
  if (HasControlBytes(creds.access_key_id) || HasControlBytes(creds.secret_access_key) ||
      HasControlBytes(creds.session_token)) {
    return absl::InvalidArgumentError("EC2 credentials: control characters in a credential");
  }
  if (options.endpoint.empty()) {
    options.endpoint = absl::StrCat("https://ec2.", options.region, ".amazonaws.com");
  }
  RETURN_IF_ERROR(ValidateEndpoint(options.endpoint));
  if (options.timeout_ms <= 0) {
    return absl::InvalidArgumentError("EC2 client: timeout_ms must be positive");
  }
  if (options.max_response_bytes == 0) {
    return absl::InvalidArgumentError("EC2 client: max_response_bytes must be positive");
  }
  if (absl::Status st = InitCurlOnce(); !st.ok()) return st;

  auto connection = std::make_unique<Connection>();
  connection->curl.reset(curl_easy_init());
  if (!connection->curl) return absl::InternalError("curl_easy_init failed");
  std::string base = options.endpoint;
  if (!absl::EndsWith(base, "/")) base.push_back('/');
  connection->url = std::move(base);
  connection->sigv4 = absl::StrCat("aws:amz:", options.region, ":ec2");
  const std::string_view host =
      std::string_view(connection->url).substr(connection->url.find("://") + 3);
  connection->loopback =
      host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");

  std::unique_ptr<Ec2Client> client(new Ec2Client(std::move(options)));
  client->connection_ = std::move(connection);
  return client;
}

Ec2Client::Ec2Client(Options options) : options_(std::move(options)) {}

Ec2Client::~Ec2Client() = default;

absl::StatusOr<Instance> Ec2Client::DescribeInstance(const std::string& instance_id,
                                                     CallInfo* info) {
  CallInfo local;
  if (info == nullptr) info = &local;
  if (instance_id.empty() || HasControlBytes(instance_id)) {
    *info = CallInfo();
    info->action = "DescribeInstances";
    return Fail(info, absl::StatusCode::kInvalidArgument, "ClientValidation",
                "instance id is empty or has control characters");
  }
  pugi::xml_document doc;
  if (absl::Status st = connection_->Call(options_, "DescribeInstances",
                                          {{"InstanceId.1", instance_id}}, info, &doc);
      !st.ok()) {
    return st;
  }

  const pugi::xml_node root = doc.document_element();
  for (pugi::xml_node reservation : root.child("reservationSet").children("item")) {
    for (pugi::xml_node item : reservation.child("instancesSet").children("item")) {
      if (ChildText(item, "instanceId") != instance_id) continue;
      Instance inst;
      inst.instance_id = instance_id;
      inst.state = item.child("instanceState").child("name").text().as_string();
      inst.vpc_id = ChildText(item, "vpcId");
      inst.iam_instance_profile_arn =
          item.child("iamInstanceProfile").child("arn").text().as_string();
      for (pugi::xml_node tag : item.child("tagSet").children("item")) {
        inst.tags[ChildText(tag, "key")] = ChildText(tag, "value");
      }
      for (pugi::xml_node eni_node : item.child("networkInterfaceSet").children("item")) {
        NetworkInterface eni;
        eni.interface_id = ChildText(eni_node, "networkInterfaceId");
        eni.vpc_id = ChildText(eni_node, "vpcId");
        eni.subnet_id = ChildText(eni_node, "subnetId");
        eni.private_ip = ChildText(eni_node, "privateIpAddress");
        const std::string index =
            eni_node.child("attachment").child("deviceIndex").text().as_string();
        if (eni.interface_id.empty() || !absl::SimpleAtoi(index, &eni.device_index) ||
            eni.device_index < 0) {
          return Fail(info, absl::StatusCode::kInternal, "MalformedResponse",
                      absl::StrCat("network interface without an id or device index in ",
                                   Printable(instance_id)));
        }
        for (pugi::xml_node group : eni_node.child("groupSet").children("item")) {
          eni.group_ids.push_back(ChildText(group, "groupId"));
        }
        inst.interfaces.push_back(std::move(eni));
      }
      return inst;
    }
  }
  return Fail(info, absl::StatusCode::kNotFound, "InstanceNotInResponse",
              absl::StrCat("instance ", Printable(instance_id), " is not in the answer"));
}

absl::Status Ec2Client::SetInterfaceSecurityGroups(const std::string& interface_id,
                                                   const std::vector<std::string>& group_ids,
                                                   CallInfo* info) {
  CallInfo local;
  if (info == nullptr) info = &local;
  const std::string action = "ModifyNetworkInterfaceAttribute";
  if (interface_id.empty() || group_ids.empty()) {
    *info = CallInfo();
    info->action = action;
    return Fail(info, absl::StatusCode::kInvalidArgument, "ClientValidation",
                "an interface id and at least one security group are required");
  }
  Params params = {{"NetworkInterfaceId", interface_id}};
  for (size_t i = 0; i < group_ids.size(); ++i) {
    params.emplace_back(absl::StrCat("SecurityGroupId.", i + 1), group_ids[i]);
  }
  pugi::xml_document doc;
  if (absl::Status st = connection_->Call(options_, action, params, info, &doc); !st.ok()) {
    return st;
  }
  const std::string ret = ChildText(doc.document_element(), "return");
  if (ret != "true") {
    return Fail(info, absl::StatusCode::kInternal, "MalformedResponse",
                absl::StrCat("<return> is '", Printable(ret, 32), "', not 'true'"));
  }
  return absl::OkStatus();
}

}  // namespace tripline::aws
