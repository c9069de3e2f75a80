// kv_transfer_netns_bench: the host KV data plane (kv/transfer/) from a
// "prefill" process to a "decode" process in two network namespaces
// joined by veth pairs and a bridge (the cluster test's layout), next to
// raw ZeroMQ moving the same bytes in the same chunks between the same
// two processes (DEALER -> ROUTER, no credits, no checksum, no copy into
// place; the receiver answers once it has every chunk). Both are run with
// a zero-copy send (the ZeroMQ message points at the caller's bytes, as
// `mosaic node` sends KV) and with a copying one (zmq::buffer); the ratio
// that counts is zero-copy against zero-copy.
//
//   kv_transfer_netns_bench [--layers 32] [--layer-mb 4] [--chunk-kb 1024] [--reps 15]
//                           [--window 64] [--queue-kb 2048] [--loopback]
//                           [--only kv|raw]
//
// Needs root for `ip netns`; without it (or with --loopback) the two
// processes talk over distinct loopback addresses instead, and the
// output says so. The namespaces are deleted on exit.

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <zmq.hpp>

#include "kv/transfer/receiver.hpp"
#include "kv/transfer/sender.hpp"

namespace {

using namespace mosaic::kv::transfer;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

int sh(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str());
}

struct layout {
  std::string prefix;
  bool namespaces = false;
  std::string send_host, recv_host;

  bool make() {
    const int s = int(getpid() % 250) + 1;
    prefix = "mzk" + std::to_string(getpid() % 100000);
    const std::string net = "10.214." + std::to_string(s) + ".";
    const std::string br = prefix + "b";
    bool ok = sh("ip link add " + br + " type bridge") == 0 && sh("ip link set " + br + " up") == 0;
    const char* roles[2] = {"s", "r"};
    for (int i = 0; ok && i < 2; ++i) {
      const std::string ns = prefix + roles[i], h = ns + "h", n = ns + "n";
      const std::string addr = net + std::to_string(i + 2);
      ok = sh("ip netns add " + ns) == 0 &&
           sh("ip link add " + h + " type veth peer name " + n) == 0 &&
           sh("ip link set " + n + " netns " + ns) == 0 &&
           sh("ip link set " + h + " master " + br) == 0 && sh("ip link set " + h + " up") == 0 &&
           sh("ip netns exec " + ns + " ip addr add " + addr + "/24 dev " + n) == 0 &&
           sh("ip netns exec " + ns + " ip link set " + n + " up") == 0;
      (i == 0 ? send_host : recv_host) = addr;
    }
    namespaces = ok;
    if (!ok) {
      drop();
      send_host = "127.0." + std::to_string(s) + ".2";
      recv_host = "127.0." + std::to_string(s) + ".3";
    }
    return ok;
  }
  /// Moves this (single-threaded) process into namespace `role`.
  bool enter(const char* role) const {
    if (!namespaces)
      return true;
    int fd = open(("/var/run/netns/" + prefix + role).c_str(), O_RDONLY);
    if (fd < 0)
      return false;
    bool ok = setns(fd, CLONE_NEWNET) == 0;
    close(fd);
    return ok;
  }
  void drop() const {
    for (const char* r : {"s", "r"}) {
      sh("ip link del " + prefix + r + "h");
      sh("ip netns del " + prefix + r);
    }
    sh("ip link del " + prefix + "b");
  }
};

struct shape {
  uint32_t layers = 32;
  uint64_t layer_bytes = 4 << 20;
  size_t chunk = 1 << 20;
  int reps = 15;
  uint32_t window = 64; ///< credits, as `mosaic node` grants them (actors/cluster_node.cpp)
  size_t queue_bytes = sender_options{}.max_queued_bytes; ///< --queue-kb
  bool run_kv = true, run_raw = true; ///< --only kv|raw runs one side (to profile it)
  uint64_t total() const { return uint64_t(layers) * layer_bytes; }
  size_t n_chunks() const { return size_t(layers) * size_t((layer_bytes + chunk - 1) / chunk); }
};

/// The decode side: kv_receiver on port 1, raw ROUTER on port 2.
int run_receiver(const layout& l, const shape& s, int port) {
  zmq::context_t ctx{2};
  receiver_options ro;
  ro.budget_bytes = ro.max_transfer_bytes = s.total() * 2;
  ro.window_chunks = s.window;
  auto receiver = kv_receiver::bind(ctx, "tcp://" + l.recv_host + ":" + std::to_string(port), ro);
  if (!receiver) {
    std::fprintf(stderr, "receiver: %s\n", receiver.err().to_string().c_str());
    return 1;
  }
  zmq::socket_t raw(ctx, zmq::socket_type::router);
  raw.set(zmq::sockopt::linger, 0);
  raw.bind("tcp://" + l.recv_host + ":" + std::to_string(port + 1));
  // Per rep: a zero-copy transfer, a raw zero-copy run, a copying
  // transfer, a raw copying run (the sender's order).
  for (int r = 0; r < 2 * (s.reps + 1); ++r) {
    if (s.run_kv) {
      auto kv = (*receiver)->take(uint64_t(100 + r), 60s);
      if (!kv || !(*kv)->wait_all(60s)) {
        std::fprintf(stderr, "receiver: transfer %d failed\n", r);
        return 1;
      }
    }
    if (!s.run_raw)
      continue;
    std::string peer;
    for (size_t i = 0; i < s.n_chunks(); ++i) {
      zmq::message_t id, body;
      if (!raw.recv(id) || !raw.recv(body))
        return 1;
      peer = id.to_string();
    }
    raw.send(zmq::buffer(peer), zmq::send_flags::sndmore);
    raw.send(zmq::str_buffer("done"));
  }
  std::this_thread::sleep_for(200ms); // let the last answer leave (and the sender print first)
  auto st = (*receiver)->stats();
  std::printf("decode process          %llu transfers, %llu landed in a reused buffer\n",
              (unsigned long long)st.transfers, (unsigned long long)st.landing_reused);
  std::fflush(stdout); // _exit does not
  return 0;
}

/// The prefill side: times both, prints the comparison.
int run_sender(const layout& l, const shape& s, int port) {
  auto owned = std::make_shared<std::vector<std::byte>>(s.total());
  std::mt19937_64 rng{1};
  for (auto& b : *owned)
    b = static_cast<std::byte>(rng());
  const std::shared_ptr<const void> owner = owned;
  const auto& data = *owned;
  zmq::context_t ctx{2};
  sender_options so;
  so.chunk_bytes = s.chunk;
  so.max_queued_bytes = s.queue_bytes;
  so.peer_timeout = 10s;
  auto sender = kv_sender::connect(ctx, "tcp://" + l.recv_host + ":" + std::to_string(port), so);
  if (!sender) {
    std::fprintf(stderr, "sender: %s\n", sender.err().to_string().c_str());
    return 1;
  }
  zmq::socket_t raw(ctx, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.set(zmq::sockopt::rcvtimeo, 60000);
  raw.connect("tcp://" + l.recv_host + ":" + std::to_string(port + 1));
  std::vector<double> ours[2], plain[2], credit_wait[2];     // [0] zero-copy, [1] copying
  static constexpr auto keep = [](void*, void*) noexcept {}; // `data` outlives every message
  for (int r = 0; r < 2 * (s.reps + 1); ++r) {               // the first two warm up; interleaved
    const bool zero_copy = r % 2 == 0;
    auto t0 = clock_type::now();
    const double waited =
        (*sender)->stats().credit_wait_seconds + (*sender)->stats().queue_wait_seconds;
    mosaic::status st;
    if (s.run_kv)
      st = (*sender)->begin(uint64_t(100 + r), s.layers, s.layer_bytes);
    for (uint32_t i = 0; s.run_kv && st && i < s.layers; ++i) {
      auto layer = std::span{data}.subspan(i * s.layer_bytes, s.layer_bytes);
      st = zero_copy ? (*sender)->send_layer(i, layer, owner) : (*sender)->send_layer(i, layer);
    }
    if (s.run_kv && st)
      st = (*sender)->finish();
    if (!st) {
      std::fprintf(stderr, "sender: %s\n", st.err().to_string().c_str());
      return 1;
    }
    auto t1 = clock_type::now();
    for (uint32_t i = 0; s.run_raw && i < s.layers; ++i)
      for (uint64_t off = 0; off < s.layer_bytes; off += s.chunk) {
        const auto* p = data.data() + i * s.layer_bytes + off;
        const size_t n = std::min<uint64_t>(s.chunk, s.layer_bytes - off);
        if (zero_copy) {
          zmq::message_t m(const_cast<std::byte*>(p), n, +keep);
          raw.send(m, zmq::send_flags::none);
        } else {
          raw.send(zmq::buffer(p, n));
        }
      }
    zmq::message_t done;
    if (s.run_raw && !raw.recv(done)) {
      std::fprintf(stderr, "sender: no answer from the raw receiver\n");
      return 1;
    }
    auto t2 = clock_type::now();
    if (r >= 2) {
      ours[zero_copy ? 0 : 1].push_back(std::chrono::duration<double>(t1 - t0).count());
      credit_wait[zero_copy ? 0 : 1].push_back((*sender)->stats().credit_wait_seconds +
                                               (*sender)->stats().queue_wait_seconds - waited);
      plain[zero_copy ? 0 : 1].push_back(std::chrono::duration<double>(t2 - t1).count());
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double gb = double(s.total()) / 1e9;
  std::printf("path                    %s: %s -> %s\n",
              l.namespaces ? "two network namespaces over veth + bridge"
                           : "two loopback addresses (no namespaces)",
              l.send_host.c_str(), l.recv_host.c_str());
  std::printf(
      "bytes per transfer      %.1f MiB (%u layers x %.2f MiB, %zu KiB chunks, window %u)\n",
      double(s.total()) / (1 << 20), s.layers, double(s.layer_bytes) / (1 << 20), s.chunk >> 10,
      s.window);
  std::printf("raw ZeroMQ baseline     the same bytes in the same chunks, DEALER -> ROUTER as the "
              "transfer uses, payload only (no header, credit, checksum or copy into place), timed "
              "until the receiver answers that it has every chunk\n");
  std::printf("kv transfer, zero-copy send (credits + XXH3 + copy in place, until verified)  "
              "%.2f GB/s  (median of %d)\n",
              gb / median(ours[0]), s.reps);
  std::printf("raw ZeroMQ DEALER/ROUTER, zero-copy send, same bytes and chunks, until received  "
              "%.2f GB/s\n",
              gb / median(plain[0]));
  std::printf("kv transfer, copying send  %.2f GB/s\n", gb / median(ours[1]));
  std::printf("raw ZeroMQ, copying send   %.2f GB/s\n", gb / median(plain[1]));
  std::printf("kv sender waiting for credit or for ZeroMQ to send its queue  %.0f%% (zero-copy), "
              "%.0f%% (copying) of its time\n",
              100 * median(credit_wait[0]) / median(ours[0]),
              100 * median(credit_wait[1]) / median(ours[1]));
  // Ratio raw time / kv time of each interleaved pair: median and
  // quartiles (a busy machine slows both runs of a pair alike).
  for (int k : {0, 1}) {
    std::vector<double> r;
    for (size_t i = 0; i < ours[k].size(); ++i)
      r.push_back(plain[k][i] / ours[k][i]);
    std::sort(r.begin(), r.end());
    std::printf("ratio kv transfer / raw ZeroMQ, both %-9s  %.2f  (median of %d pairs, "
                "quartiles %.2f-%.2f)%s\n",
                k == 0 ? "zero-copy" : "copying", r[r.size() / 2], s.reps, r[r.size() / 4],
                r[r.size() * 3 / 4], k == 0 ? "  target >= 0.80" : "");
  }
  std::fflush(stdout); // before the decode process adds its line
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"KV transfer prefill -> decode across network namespaces vs raw ZeroMQ"};
  shape s;
  double layer_mb = 4;
  size_t chunk_kb = 1024;
  bool loopback = false;
  app.add_option("--layers", s.layers, "sections per transfer")->check(CLI::Range(1, 1024));
  app.add_option("--layer-mb", layer_mb, "MiB per section")->check(CLI::Range(0.001, 256.0));
  app.add_option("--chunk-kb", chunk_kb, "KiB per chunk")->check(CLI::Range(4, 65536));
  app.add_option("--reps", s.reps, "timed runs of each (median)")->check(CLI::Range(1, 100));
  size_t queue_kb = s.queue_bytes >> 10;
  app.add_option("--queue-kb", queue_kb, "KiB the sender may have queued in ZeroMQ, unsent")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--window", s.window, "chunks a sender may have unacknowledged (credits)")
      ->check(CLI::Range(2, 4096));
  app.add_flag("--loopback", loopback, "use two loopback addresses instead of namespaces");
  std::string only;
  app.add_option("--only", only, "run one side alone (to profile it)")
      ->check(CLI::IsMember({"kv", "raw"}));
  CLI11_PARSE(app, argc, argv);
  s.queue_bytes = queue_kb << 10;
  s.run_kv = only != "raw";
  s.run_raw = only != "kv";
  s.layer_bytes = static_cast<uint64_t>(layer_mb * (1 << 20));
  s.chunk = chunk_kb << 10;

  layout l;
  if (loopback || geteuid() != 0) {
    const int sub = int(getpid() % 250) + 1;
    l.send_host = "127.0." + std::to_string(sub) + ".2";
    l.recv_host = "127.0." + std::to_string(sub) + ".3";
  } else if (!l.make()) {
    std::fprintf(stderr, "kv_transfer_netns_bench: cannot create network namespaces here; "
                         "using loopback addresses\n");
  }
  const int port = 23000 + int(getpid() % 1000) * 2;
  // Fork before any thread exists: each process then moves itself into
  // its namespace, and every socket and ZeroMQ thread it makes is there.
  pid_t child = fork();
  if (child == 0) {
    if (!l.enter("r"))
      _exit(3);
    _exit(run_receiver(l, s, port));
  }
  int rc = 1;
  if (l.enter("s")) {
    std::this_thread::sleep_for(300ms); // the receiver binds
    rc = run_sender(l, s, port);
  } else {
    std::fprintf(stderr, "kv_transfer_netns_bench: cannot enter the sender's namespace\n");
  }
  int status = 0;
  if (rc != 0)
    kill(child, SIGKILL);
  waitpid(child, &status, 0);
  if (l.namespaces) {
    // Back to the original namespace is not needed to delete them: `ip`
    // names them by file. Run it from the root namespace's view anyway.
    int fd = open("/proc/1/ns/net", O_RDONLY);
    if (fd >= 0) {
      (void)setns(fd, CLONE_NEWNET);
      close(fd);
    }
    l.drop();
  }
  return rc != 0 ? rc : (WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}
