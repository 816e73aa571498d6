// Ingest end to end: signed batches from 1, 100 and 1,000 concurrent agent streams into a
// collector in its own process (this program again, with --serve, so it is measured alone), verified,
// chained and committed to SQLite. Prints events/s, ack latency p50/p99 and the collector's CPU
// time and peak RSS next to the targets the design sets (>= 200,000 events/s on 2 cores; 1,000
// streams in <= 1 GiB). Figures only; nothing is asserted.
//
//   ingest_bench [--events N] [--streams 1,100,1000] [--batch 512] [--window 64]
//
// Each stream is an agent: its own key, enrollment, connection and chain; batches are built and
// signed before the clock starts (signing is the agent's cost, not the collector's), sent with
// at most `window` unacked, and a batch's latency runs from its Write to the ack covering it.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "collector/daemon/collector_daemon.h"
#include "grpcpp/grpcpp.h"
#include "platform/crypto/batch_signature.h"
#include "platform/crypto/digest.h"
#include "platform/crypto/signing_key.h"
#include "platform/runtime/logging.h"
#include "tests/support/temp_dir.h"
#include "tripline/v1/ingest.grpc.pb.h"

namespace tripline::collector {
namespace {

constexpr char kToken[] = "bench-enrollment-token";

struct Options {
  int64_t events = 300000;
  std::vector<int> streams = {1, 100, 1000};
  int batch = 512;
  int window = 64;
};

struct CollectorUsage {
  double cpu_seconds = 0;
  int64_t peak_rss_kib = 0;
};

int64_t PeakRssKib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      int64_t kib = 0;
      std::sscanf(line.c_str(), "VmHWM: %ld", &kib);
      return kib;
    }
  }
  return 0;
}

// The child: a collector on 127.0.0.1:0 with no rules; writes its port to `out`, waits for a
// byte on `in`, then writes its CPU time and peak RSS. Returns the exit code; the database goes
// with `dir` on return (the child leaves through _exit, which runs no destructors).
int RunCollector(int in, int out) {
  tripline::testing::TempDir dir;
  CollectorParts parts;
  parts.config.listen = "127.0.0.1:0";
  parts.config.tls.plaintext = true;
  // The load generator signs batches like an agent but runs off EC2: no identity document.
  parts.config.identity.require_document = false;
  parts.config.database = dir.Sub("collector.db");
  parts.enrollment_token = kToken;
  parts.operator_token = "bench-operator-token";
  absl::StatusOr<RuleSet> rules = ParseRules("rules: []\n", "rules.yaml");
  if (!rules.ok()) return 2;
  parts.rules = *std::move(rules);
  absl::StatusOr<std::unique_ptr<CollectorDaemon>> daemon = CollectorDaemon::Start(std::move(parts));
  if (!daemon.ok()) {
    std::fprintf(stderr, "collector: %s\n", daemon.status().ToString().c_str());
    return 2;
  }
  const int port = (*daemon)->port();
  if (write(out, &port, sizeof(port)) != sizeof(port)) return 2;
  char c;
  while (read(in, &c, 1) < 0 && errno == EINTR) {
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  CollectorUsage u;
  u.cpu_seconds = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                  static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  u.peak_rss_kib = PeakRssKib();
  const bool sent = write(out, &u, sizeof(u)) == sizeof(u);
  (*daemon)->Stop();
  daemon->reset();
  return sent ? 0 : 2;
}

struct Stream {
  std::string agent_id;
  std::unique_ptr<SigningKey> key;
  std::vector<tripline::v1::SignedBatch> batches;
  std::vector<absl::Time> sent;
  std::vector<double> latency_ms;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t acked = 0;
  bool ended = false;
  grpc::Status status;
};

std::vector<tripline::v1::SignedBatch> MakeBatches(const std::string& agent_id,
                                                   const SigningKey& key, int64_t events,
                                                   int per_batch) {
  std::vector<tripline::v1::SignedBatch> out;
  std::string prev = GenesisDigest();
  uint64_t event_seq = 0;
  for (int64_t done = 0; done < events;) {
    tripline::v1::EventBatch b;
    b.set_agent_id(agent_id);
    b.set_batch_seq(out.size() + 1);
    b.set_prev_digest(prev);
    b.set_created_unix_ns(absl::ToUnixNanos(absl::Now()));
    for (int i = 0; i < per_batch && done < events; ++i, ++done) {
      tripline::v1::Event* e = b.add_events();
      e->set_seq(++event_seq);
      e->set_time_unix_ns(absl::ToUnixNanos(absl::Now()));
      tripline::v1::FileEvent* f = e->mutable_file();
      f->set_path(absl::StrFormat("/var/lib/app/data/file-%08d.db", event_seq));
      f->set_change(tripline::v1::FileEvent::MODIFIED);
      f->mutable_after()->set_size(4096 + event_seq);
      f->mutable_after()->set_mode(0100644);
      f->mutable_after()->set_mtime_ns(1700000000000000000 + static_cast<int64_t>(event_seq));
      f->mutable_after()->set_inode(1000 + event_seq);
      f->mutable_after()->set_sha256(Sha256(f->path()));
    }
    tripline::v1::SignedBatch sb;
    sb.set_batch(b.SerializeAsString());
    sb.set_signature(SignBatch(key, sb.batch()));
    prev = ChainDigest(sb.batch());
    out.push_back(std::move(sb));
  }
  return out;
}

void Publish(const std::string& address, Stream* s, int window) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per agent, as in a fleet
  auto stub = tripline::v1::Ingest::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  ctx.AddMetadata("tripline-agent-id", s->agent_id);
  auto stream = stub->Publish(&ctx);
  const uint64_t last = s->batches.size();
  std::thread reader([&] {
    tripline::v1::PublishAck ack;
    while (stream->Read(&ack)) {
      const absl::Time now = absl::Now();
      std::lock_guard<std::mutex> lock(s->mu);
      for (uint64_t q = s->acked + 1; q <= ack.durable_seq() && q <= last; ++q) {
        s->latency_ms.push_back(absl::ToDoubleMilliseconds(now - s->sent[q - 1]));
      }
      s->acked = std::max(s->acked, ack.durable_seq());
      s->cv.notify_all();
      if (s->acked >= last) break;
    }
    std::lock_guard<std::mutex> lock(s->mu);
    s->ended = true;
    s->cv.notify_all();
  });
  for (uint64_t q = 1; q <= last; ++q) {
    {
      std::unique_lock<std::mutex> lock(s->mu);
      s->cv.wait(lock, [&] { return s->ended || q <= s->acked + window; });
      if (s->ended) break;
      s->sent[q - 1] = absl::Now();
    }
    if (!stream->Write(s->batches[q - 1])) break;
  }
  reader.join();
  stream->WritesDone();
  tripline::v1::PublishAck rest;
  while (stream->Read(&rest)) {
  }
  s->status = stream->Finish();
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

int Round(const Options& o, int streams) {
  int to_child[2], from_child[2];
  if (pipe(to_child) != 0 || pipe(from_child) != 0) return 1;
  const pid_t pid = fork();
  if (pid < 0) return 1;
  if (pid == 0) {
    // A fresh program image: gRPC's threads in this process do not survive a fork.
    close(to_child[1]);
    close(from_child[0]);
    const std::string in = std::to_string(to_child[0]), out = std::to_string(from_child[1]);
    // By its real path, so that profilers attribute the child's samples to this binary.
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) _exit(127);
    self[n] = '\0';
    execl(self, "ingest_bench", "--serve", in.c_str(), out.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(to_child[0]);
  close(from_child[1]);
  int port = 0;
  if (read(from_child[0], &port, sizeof(port)) != sizeof(port)) {
    std::fprintf(stderr, "ingest_bench: the collector did not start\n");
    return 1;
  }
  const std::string address = absl::StrFormat("127.0.0.1:%d", port);

  // Setup, not timed: keys, enrollment, signed batches.
  std::vector<std::unique_ptr<Stream>> all;
  const int64_t per_stream = std::max<int64_t>(1, o.events / streams);
  auto enroll_stub = tripline::v1::Ingest::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  for (int i = 0; i < streams; ++i) {
    auto s = std::make_unique<Stream>();
    s->agent_id = absl::StrFormat("i-bench%010d", i);
    s->key = SigningKey::Generate();
    tripline::v1::EnrollRequest req;
    req.set_agent_id(s->agent_id);
    req.set_public_key(s->key->public_key());
    req.set_enrollment_token(kToken);
    tripline::v1::EnrollResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status st = enroll_stub->Enroll(&ctx, req, &resp);
    if (!st.ok()) {
      std::fprintf(stderr, "ingest_bench: enroll %s: %s\n", s->agent_id.c_str(),
                   st.error_message().c_str());
      return 1;
    }
    s->batches = MakeBatches(s->agent_id, *s->key, per_stream, o.batch);
    s->sent.resize(s->batches.size());
    all.push_back(std::move(s));
  }

  const absl::Time t0 = absl::Now();
  std::vector<std::thread> threads;
  for (auto& s : all) threads.emplace_back(Publish, address, s.get(), o.window);
  for (std::thread& t : threads) t.join();
  const absl::Duration elapsed = absl::Now() - t0;

  const char stop = 'x';
  CollectorUsage u;
  if (write(to_child[1], &stop, 1) != 1 ||
      read(from_child[0], &u, sizeof(u)) != static_cast<ssize_t>(sizeof(u))) {
    std::fprintf(stderr, "ingest_bench: no usage figures from the collector\n");
  }
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  close(to_child[1]);
  close(from_child[0]);

  std::vector<double> lat;
  int64_t failed = 0;
  for (auto& s : all) {
    lat.insert(lat.end(), s->latency_ms.begin(), s->latency_ms.end());
    if (!s->status.ok() || s->acked < s->batches.size()) {
      if (failed++ == 0) {
        std::fprintf(stderr, "ingest_bench: %s: %d of %d batches acked, status %d %s\n",
                     s->agent_id.c_str(), static_cast<int>(s->acked),
                     static_cast<int>(s->batches.size()), static_cast<int>(s->status.error_code()),
                     s->status.error_message().c_str());
      }
    }
  }
  const double events = static_cast<double>(per_stream) * streams;
  std::printf("%7d  %10.0f  %10d  %8.2f  %8.2f  %9.2f  %10.0f  %10d  %s\n", streams,
              events / absl::ToDoubleSeconds(elapsed), 200000, Percentile(lat, 0.50),
              Percentile(lat, 0.99), u.cpu_seconds,
              static_cast<double>(u.peak_rss_kib) / 1024.0, 1024,
              failed == 0 ? "ok" : absl::StrFormat("%d streams failed", failed).c_str());
  std::fflush(stdout);
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tripline::collector

int main(int argc, char** argv) {
  using tripline::collector::Options;
  if (argc == 4 && std::string(argv[1]) == "--serve") {
    (void)tripline::InitLogging("ingest_bench-collector", "warn");
    _exit(tripline::collector::RunCollector(std::atoi(argv[2]), std::atoi(argv[3])));
  }
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    bool ok = true;
    if (flag == "--events") {
      ok = absl::SimpleAtoi(value, &o.events) && o.events > 0;
    } else if (flag == "--batch") {
      ok = absl::SimpleAtoi(value, &o.batch) && o.batch > 0;
    } else if (flag == "--window") {
      ok = absl::SimpleAtoi(value, &o.window) && o.window > 0;
    } else if (flag == "--streams") {
      o.streams.clear();
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        int n = 0;
        ok = ok && absl::SimpleAtoi(part, &n) && n > 0;
        o.streams.push_back(n);
      }
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "ingest_bench: bad %s %s\n", flag.c_str(), value.c_str());
      return 2;
    }
  }
  (void)tripline::InitLogging("ingest_bench", "warn");
  std::printf("ingest: %ld events per round, %d events per batch, window %d, collector in its own "
              "process, plaintext loopback, SQLite WAL\n",
              static_cast<long>(o.events), o.batch, o.window);
  std::printf("%7s  %10s  %10s  %8s  %8s  %9s  %10s  %10s\n", "streams", "events/s", "target",
              "p50 ms", "p99 ms", "cpu s", "RSS MiB", "target MiB");
  int rc = 0;
  for (int streams : o.streams) rc |= tripline::collector::Round(o, streams);
  return rc;
}
