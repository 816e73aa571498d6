// A small HTTP/1.1 client for one kind of peer: a service at a numeric address on a link-local or
// loopback network that speaks plain HTTP (the EC2 instance metadata service). No TLS, no name
// resolution, no proxy, no redirects, no keep-alive: one connection per request, closed after it.
// The agent uses it instead of libcurl because libcurl's dependency tree (GnuTLS, Kerberos, LDAP,
// SSH, RTMP, ...) costs every instance about 4 MB of resident memory for two requests at start-up.
//
// Answers are hostile bytes: the status line and headers are bounded and checked, the body is read
// by Content-Length, chunked transfer coding or to the close, and capped at `max_body`.
// Threads: none; blocking calls bounded by `timeout` as a whole (connect, send and receive).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tripline {

// "http://" + an IPv4 address or a bracketed IPv6 address, an optional ":port" (default 80), and
// nothing after it but slashes. InvalidArgument naming what is wrong otherwise.
struct PlainHttpEndpoint {
  std::string host;  // the address as written, without brackets
  uint16_t port = 80;
};
absl::StatusOr<PlainHttpEndpoint> ParsePlainHttpEndpoint(const std::string& url);

struct PlainHttpRequest {
  std::string method = "GET";
  std::string path = "/";
  std::vector<std::string> headers;  // "Name: value", no CR or LF
  absl::Duration timeout = absl::Seconds(2);
  size_t max_body = 16 << 10;
};

struct PlainHttpAnswer {
  int status = 0;
  std::string body;
};

// Unavailable when the peer cannot be reached, the connection fails or the time runs out;
// FailedPrecondition for an answer that is not HTTP/1.x or breaks a limit. Errors name the method,
// the address and the path, never a header's value (they may carry tokens).
absl::StatusOr<PlainHttpAnswer> PlainHttpCall(const PlainHttpEndpoint& endpoint,
                                              const PlainHttpRequest& request);

}  // namespace tripline
