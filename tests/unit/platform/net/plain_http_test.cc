#include "platform/net/plain_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tripline {
namespace {

using ::testing::HasSubstr;

// A peer on 127.0.0.1 that takes one connection, reads the request head, answers with `pieces`
// (each sent on its own) and closes, unless told to hold the connection open.
class OneShotPeer {
 public:
  explicit OneShotPeer(std::vector<std::string> pieces, bool hold_open = false)
      : pieces_(std::move(pieces)), hold_open_(hold_open) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
        ::listen(listener_, 1) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ADD_FAILURE() << "cannot listen on loopback";
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~OneShotPeer() {
    release_ = true;
    thread_.join();
    ::close(listener_);
  }

  PlainHttpEndpoint endpoint() const { return {"127.0.0.1", port_}; }
  const std::string& request() const { return request_; }

 private:
  void Serve() {
    const int c = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    char buf[4096];
    while (request_.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::recv(c, buf, sizeof(buf), 0);
      if (n <= 0) break;
      request_.append(buf, static_cast<size_t>(n));
    }
    for (const std::string& p : pieces_) {
      (void)::send(c, p.data(), p.size(), MSG_NOSIGNAL);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // separate reads on the client
    }
    while (hold_open_ && !release_) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ::close(c);
  }

  std::vector<std::string> pieces_;
  bool hold_open_;
  std::atomic<bool> release_{false};
  int listener_ = -1;
  uint16_t port_ = 0;
  std::string request_;
  std::thread thread_;
};

PlainHttpRequest Get(const std::string& path) {
  PlainHttpRequest r;
  r.path = path;
  r.timeout = absl::Seconds(5);
  return r;
}

TEST(PlainHttpEndpoint, AcceptsNumericAddressesOnly) {
  auto e = ParsePlainHttpEndpoint("http://169.254.169.254");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->host, "169.254.169.254");
  EXPECT_EQ(e->port, 80);
  e = ParsePlainHttpEndpoint("http://127.0.0.1:8080//");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->port, 8080);
  e = ParsePlainHttpEndpoint("http://[fd00:ec2::254]:81");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->host, "fd00:ec2::254");
  EXPECT_EQ(e->port, 81);
  for (const char* bad : {"https://169.254.169.254", "http://metadata.internal", "169.254.169.254",
                          "http://169.254.169.254:0", "http://169.254.169.254:65536",
                          "http://169.254.169.254:8o", "http://169.254.169.254/latest",
                          "http://[fd00:ec2::254", "http://[not-v6]", "http://1.2.3.4:+80"}) {
    EXPECT_EQ(ParsePlainHttpEndpoint(bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(PlainHttp, SendsOneRequestAndReadsByContentLength) {
  OneShotPeer peer({"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\n",
                    "i-0123", "45678trailing bytes the length excludes"});
  PlainHttpRequest r = Get("/latest/meta-data/instance-id");
  r.method = "PUT";
  r.headers = {"X-aws-ec2-metadata-token-ttl-seconds: 21600"};
  auto a = PlainHttpCall(peer.endpoint(), r);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->status, 200);
  EXPECT_EQ(a->body, "i-012345678");
  EXPECT_THAT(peer.request(), HasSubstr("PUT /latest/meta-data/instance-id HTTP/1.1\r\n"));
  EXPECT_THAT(peer.request(), HasSubstr("\r\nContent-Length: 0\r\n"));
  EXPECT_THAT(peer.request(), HasSubstr("\r\nConnection: close\r\n"));
  EXPECT_THAT(peer.request(), HasSubstr("\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n"));
}

TEST(PlainHttp, ReadsChunkedAndToTheClose) {
  {
    OneShotPeer peer({"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nab",
                      "cd\r\n3\r\nefg\r\n0\r\nX-Trailer: t\r\n\r\n"});
    auto a = PlainHttpCall(peer.endpoint(), Get("/"));
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->body, "abcdefg");
  }
  {
    OneShotPeer peer({"HTTP/1.0 404 Not Found\r\n\r\nno such ", "path"});
    auto a = PlainHttpCall(peer.endpoint(), Get("/x"));
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->status, 404);
    EXPECT_EQ(a->body, "no such path");
  }
}

TEST(PlainHttp, HostileAnswersAreRefusedWithTheReason) {
  struct Case {
    std::vector<std::string> pieces;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {{"SSH-2.0-OpenSSH\r\n\r\n"}, "not an HTTP/1.x status line"},
      {{"HTTP/1.1 2000 OK\r\n\r\n"}, "not an HTTP/1.x status line"},
      {{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef"},
       "bad Content-Length"},
      {{"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"}, "bad Content-Length"},
      {{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"},
       "ambiguous"},
      {{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"}, "unsupported Transfer-Encoding"},
      {{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}, "not hexadecimal"},
      {{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY"}, "not followed by CRLF"},
      {{"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"}, "answer body over 16384 bytes"},
      {{"HTTP/1.1 200 OK\r\n\r\n", std::string(20000, 'x')}, "answer body over 16384 bytes"},
      {{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4000\r\n" + std::string(0x4000, 'x') +
        "\r\n1\r\n"},
       "answer body over 16384 bytes"},
      {{"HTTP/1.1 200 OK\r\nX: " + std::string(20000, 'h') + "\r\n\r\n"}, "over 16384 bytes"},
      {{"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"}, "not a header line"},
      {{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"}, "closed before the body ended"},
  };
  for (const Case& c : cases) {
    OneShotPeer peer(c.pieces);
    auto a = PlainHttpCall(peer.endpoint(), Get("/latest/api/token"));
    ASSERT_FALSE(a.ok()) << c.reason;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition) << a.status();
    EXPECT_THAT(std::string(a.status().message()), HasSubstr(c.reason));
    EXPECT_THAT(std::string(a.status().message()), HasSubstr("GET http://127.0.0.1:"));
  }
}

TEST(PlainHttp, SilentOrAbsentPeersAreUnavailableWithinTheTimeout) {
  {
    OneShotPeer peer({"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"}, /*hold_open=*/true);
    PlainHttpRequest r = Get("/");
    r.timeout = absl::Milliseconds(200);
    auto a = PlainHttpCall(peer.endpoint(), r);  // returns although the peer never closes
    EXPECT_EQ(a.status().code(), absl::StatusCode::kUnavailable) << a.status();
    EXPECT_THAT(std::string(a.status().message()), HasSubstr("timed out"));
  }
  // Nothing listens on the port a closed listener had. (The peer closes without answering.)
  uint16_t port = 0;
  {
    OneShotPeer peer({});
    port = peer.endpoint().port;
    auto closed = PlainHttpCall(peer.endpoint(), Get("/"));
    EXPECT_THAT(std::string(closed.status().message()), HasSubstr("connection closed"));
  }
  auto a = PlainHttpCall({"127.0.0.1", port}, Get("/"));
  EXPECT_EQ(a.status().code(), absl::StatusCode::kUnavailable) << a.status();
}

TEST(PlainHttp, RequestsThatCouldSmuggleAreRefusedBeforeSending) {
  PlainHttpRequest r = Get("/a b");
  EXPECT_EQ(PlainHttpCall({"127.0.0.1", 9}, r).status().code(),
            absl::StatusCode::kInvalidArgument);
  r = Get("/");
  r.headers = {"X-aws-ec2-metadata-token: t\r\nHost: elsewhere"};
  auto a = PlainHttpCall({"127.0.0.1", 9}, r);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(a.status().message()), ::testing::Not(HasSubstr("elsewhere")));
}

}  // namespace
}  // namespace tripline
