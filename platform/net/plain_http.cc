#include "platform/net/plain_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "platform/runtime/logging.h"

namespace tripline {
namespace {

constexpr size_t kMaxHead = 16 << 10;      // status line and headers together
constexpr size_t kMaxChunkLine = 1 << 10;  // a chunk-size line with its extensions

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// One request on one connection: reads what the answer needs, never more than the limits allow.
class Exchange {
 public:
  Exchange(int fd, absl::Time deadline, std::string what)
      : fd_(fd), deadline_(deadline), what_(std::move(what)) {}

  absl::Status Connect(const sockaddr* addr, socklen_t len) {
    if (::connect(fd_, addr, len) == 0) return absl::OkStatus();
    if (errno != EINPROGRESS) return Unreachable(std::strerror(errno));
    if (absl::Status st = Wait(POLLOUT); !st.ok()) return st;
    int err = 0;
    socklen_t err_len = sizeof(err);
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &err_len) != 0) err = errno;
    return err == 0 ? absl::OkStatus() : Unreachable(std::strerror(err));
  }

  absl::Status Send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n > 0) {
        bytes.remove_prefix(static_cast<size_t>(n));
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (absl::Status st = Wait(POLLOUT); !st.ok()) return st;
      } else {
        return Unreachable(absl::StrFormat("sending: %s", std::strerror(errno)));
      }
    }
    return absl::OkStatus();
  }

  // Bytes received and not consumed yet; Fill() appends more. False at the peer's close.
  std::string& buffered() { return buf_; }
  absl::StatusOr<bool> Fill() {
    char chunk[4096];
    while (true) {
      const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n > 0) {
        buf_.append(chunk, static_cast<size_t>(n));
        return true;
      }
      if (n == 0) return false;
      if (errno != EAGAIN && errno != EINTR) {
        return Unreachable(absl::StrFormat("receiving: %s", std::strerror(errno)));
      }
      if (absl::Status st = Wait(POLLIN); !st.ok()) return st;
    }
  }

  absl::Status Bad(const std::string& why) const {
    return absl::FailedPreconditionError(absl::StrFormat("%s: %s", what_, why));
  }
  absl::Status Unreachable(const std::string& why) const {
    return absl::UnavailableError(absl::StrFormat("%s: %s", what_, why));
  }

 private:
  absl::Status Wait(short events) {
    while (true) {
      const absl::Duration left = deadline_ - absl::Now();
      if (left <= absl::ZeroDuration()) return Unreachable("timed out");
      pollfd p{fd_, events, 0};
      const int ms = static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(left)));
      const int rc = ::poll(&p, 1, ms);
      if (rc > 0) return absl::OkStatus();
      if (rc < 0 && errno != EINTR) return Unreachable(std::strerror(errno));
    }
  }

  int fd_;
  absl::Time deadline_;
  std::string what_;
  std::string buf_;
};

bool Token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c <= ' ' || c >= 0x7f) return false;
  }
  return true;
}

// Reads `n` body bytes (appending to `body`), bounded by `max_body`.
absl::Status ReadExactly(Exchange& x, size_t n, size_t max_body, std::string* body) {
  if (body->size() + n > max_body) {
    return x.Bad(absl::StrFormat("answer body over %d bytes", max_body));
  }
  std::string& buf = x.buffered();
  while (buf.size() < n) {
    absl::StatusOr<bool> more = x.Fill();
    if (!more.ok()) return more.status();
    if (!*more) return x.Bad("connection closed before the body ended");
  }
  body->append(buf, 0, n);
  buf.erase(0, n);
  return absl::OkStatus();
}

// One CRLF-terminated line (without it), at most `max` bytes.
absl::StatusOr<std::string> ReadLine(Exchange& x, size_t max) {
  std::string& buf = x.buffered();
  while (true) {
    if (size_t end = buf.find("\r\n"); end != std::string::npos) {
      if (end > max) break;
      std::string line = buf.substr(0, end);
      buf.erase(0, end + 2);
      return line;
    }
    if (buf.size() > max) break;
    absl::StatusOr<bool> more = x.Fill();
    if (!more.ok()) return more.status();
    if (!*more) return x.Bad("connection closed in the middle of a line");
  }
  return x.Bad(absl::StrFormat("a line of the answer is over %d bytes", max));
}

absl::Status ReadChunked(Exchange& x, size_t max_body, std::string* body) {
  while (true) {
    absl::StatusOr<std::string> line = ReadLine(x, kMaxChunkLine);
    if (!line.ok()) return line.status();
    const absl::string_view size_text =
        absl::StripAsciiWhitespace(absl::string_view(*line).substr(0, line->find(';')));
    uint64_t size = 0;
    if (size_text.empty() || size_text.size() > 8 ||
        !absl::SimpleHexAtoi(std::string(size_text), &size)) {
      return x.Bad(absl::StrFormat("chunk size '%s' is not hexadecimal", Printable(*line, 32)));
    }
    if (size == 0) break;
    if (absl::Status st = ReadExactly(x, static_cast<size_t>(size), max_body, body); !st.ok()) {
      return st;
    }
    std::string crlf;
    if (absl::Status st = ReadExactly(x, 2, 2, &crlf); !st.ok()) return st;
    if (crlf != "\r\n") return x.Bad("a chunk's data is not followed by CRLF");
  }
  // Trailer fields, up to the empty line; ignored.
  size_t trailers = 0;
  while (true) {
    absl::StatusOr<std::string> line = ReadLine(x, kMaxHead);
    if (!line.ok()) return line.status();
    if (line->empty()) return absl::OkStatus();
    trailers += line->size();
    if (trailers > kMaxHead) return x.Bad("trailer fields over the limit");
  }
}

}  // namespace

absl::StatusOr<PlainHttpEndpoint> ParsePlainHttpEndpoint(const std::string& url) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrFormat("'%s': %s", Printable(url, 128), why));
  };
  constexpr absl::string_view kScheme = "http://";
  if (!absl::StartsWith(url, kScheme)) return bad("expected http:// and a numeric address");
  absl::string_view rest = absl::string_view(url).substr(kScheme.size());
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  PlainHttpEndpoint e;
  absl::string_view port;
  if (absl::StartsWith(rest, "[")) {
    const size_t close = rest.find(']');
    if (close == absl::string_view::npos) return bad("'[' without ']'");
    e.host = std::string(rest.substr(1, close - 1));
    in6_addr a6;
    if (::inet_pton(AF_INET6, e.host.c_str(), &a6) != 1) return bad("not an IPv6 address");
    rest.remove_prefix(close + 1);
  } else {
    const size_t colon = rest.find(':');
    e.host = std::string(rest.substr(0, colon));
    in_addr a4;
    if (::inet_pton(AF_INET, e.host.c_str(), &a4) != 1) {
      return bad("the host must be an IPv4 address or a bracketed IPv6 address");
    }
    rest.remove_prefix(colon == absl::string_view::npos ? rest.size() : colon);
  }
  if (!rest.empty()) {
    if (rest[0] != ':') return bad("nothing may follow the address but a port");
    port = rest.substr(1);
    uint32_t p = 0;
    if (port.empty() || port.size() > 5 || !absl::SimpleAtoi(port, &p) || p == 0 || p > 65535 ||
        port.find_first_not_of("0123456789") != absl::string_view::npos) {
      return bad("the port must be a number from 1 to 65535");
    }
    e.port = static_cast<uint16_t>(p);
  }
  return e;
}

absl::StatusOr<PlainHttpAnswer> PlainHttpCall(const PlainHttpEndpoint& endpoint,
                                              const PlainHttpRequest& request) {
  const bool v6 = endpoint.host.find(':') != std::string::npos;
  const std::string authority =
      absl::StrFormat(v6 ? "[%s]:%d" : "%s:%d", endpoint.host, endpoint.port);
  const std::string what =
      absl::StrFormat("%s http://%s%s", request.method, authority, Printable(request.path, 256));
  if (!Token(request.method) || request.path.empty() || request.path[0] != '/' ||
      !Token(request.path)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: not a valid request line", what));
  }
  for (const std::string& h : request.headers) {
    if (h.find_first_of("\r\n") != std::string::npos || h.find(':') == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: a header is not one 'Name: value' line", what));
    }
  }
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(endpoint.port);
    if (::inet_pton(AF_INET6, endpoint.host.c_str(), &a->sin6_addr) != 1) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: not an IPv6 address", what));
    }
    addr_len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(endpoint.port);
    if (::inet_pton(AF_INET, endpoint.host.c_str(), &a->sin_addr) != 1) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: not an IPv4 address", what));
    }
    addr_len = sizeof(sockaddr_in);
  }

  Fd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) {
    return absl::UnavailableError(absl::StrFormat("%s: socket: %s", what, std::strerror(errno)));
  }
  Exchange x(fd.get(), absl::Now() + request.timeout, what);
  if (absl::Status st = x.Connect(reinterpret_cast<sockaddr*>(&addr), addr_len); !st.ok()) {
    return st;
  }
  std::string head = absl::StrFormat("%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n",
                                     request.method, request.path, authority);
  if (request.method != "GET" && request.method != "HEAD") head += "Content-Length: 0\r\n";
  for (const std::string& h : request.headers) head += h + "\r\n";
  head += "\r\n";
  if (absl::Status st = x.Send(head); !st.ok()) return st;

  // Status line: HTTP/1.x SSS reason.
  absl::StatusOr<std::string> status_line = ReadLine(x, kMaxHead);
  if (!status_line.ok()) return status_line.status();
  PlainHttpAnswer answer;
  if (status_line->size() < 12 || !absl::StartsWith(*status_line, "HTTP/1.") ||
      (*status_line)[8] != ' ' || !absl::SimpleAtoi(status_line->substr(9, 3), &answer.status) ||
      answer.status < 100 || answer.status > 599 ||
      (status_line->size() > 12 && (*status_line)[12] != ' ')) {
    return x.Bad(absl::StrFormat("not an HTTP/1.x status line: '%s'", Printable(*status_line, 64)));
  }
  // Headers: only the framing ones matter.
  std::optional<uint64_t> content_length;
  bool chunked = false;
  size_t head_bytes = status_line->size();
  while (true) {
    absl::StatusOr<std::string> line = ReadLine(x, kMaxHead);
    if (!line.ok()) return line.status();
    if (line->empty()) break;
    head_bytes += line->size();
    if (head_bytes > kMaxHead) return x.Bad(absl::StrFormat("headers over %d bytes", kMaxHead));
    const size_t colon = line->find(':');
    if (colon == std::string::npos || colon == 0) {
      return x.Bad(absl::StrFormat("not a header line: '%s'", Printable(*line, 64)));
    }
    const std::string name = absl::AsciiStrToLower(line->substr(0, colon));
    const std::string value(absl::StripAsciiWhitespace(absl::string_view(*line).substr(colon + 1)));
    if (name == "content-length") {
      uint64_t n = 0;
      if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos ||
          !absl::SimpleAtoi(value, &n) || (content_length && *content_length != n)) {
        return x.Bad(absl::StrFormat("bad Content-Length '%s'", Printable(value, 32)));
      }
      content_length = n;
    } else if (name == "transfer-encoding") {
      if (absl::AsciiStrToLower(value) != "chunked") {
        return x.Bad(absl::StrFormat("unsupported Transfer-Encoding '%s'", Printable(value, 32)));
      }
      chunked = true;
    }
  }
  if (chunked && content_length) {
    return x.Bad("both Content-Length and Transfer-Encoding: the body's length is ambiguous");
  }
  const bool no_body = request.method == "HEAD" || answer.status < 200 || answer.status == 204 ||
                       answer.status == 304;
  if (no_body) return answer;
  if (chunked) {
    if (absl::Status st = ReadChunked(x, request.max_body, &answer.body); !st.ok()) return st;
  } else if (content_length) {
    if (*content_length > request.max_body) {
      return x.Bad(absl::StrFormat("answer body over %d bytes", request.max_body));
    }
    if (absl::Status st =
            ReadExactly(x, static_cast<size_t>(*content_length), request.max_body, &answer.body);
        !st.ok()) {
      return st;
    }
  } else {  // to the close
    while (true) {
      if (x.buffered().size() > request.max_body) {
        return x.Bad(absl::StrFormat("answer body over %d bytes", request.max_body));
      }
      absl::StatusOr<bool> more = x.Fill();
      if (!more.ok()) return more.status();
      if (!*more) break;
    }
    answer.body = std::move(x.buffered());
  }
  return answer;
}

}  // namespace tripline
