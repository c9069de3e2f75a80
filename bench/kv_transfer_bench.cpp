// kv_transfer_bench: throughput of the host KV data plane (kv/transfer/,
// prefill -> decode over ZeroMQ with credits and per-chunk checksums)
// against raw ZeroMQ moving the same bytes in the same chunks over the
// same socket types (DEALER -> ROUTER, no header, credit, checksum or copy
// into place, timed until the receiver answers that it has every chunk),
// measured in the same run, interleaved. Each is run
// with a copying send (zmq::buffer) and a zero-copy send (the message
// points at the caller's bytes; what `mosaic node` does); the ratio that
// counts is zero-copy against zero-copy.
//
//   kv_transfer_bench [--endpoint tcp://127.0.0.1:*] [--layers 32]
//                     [--layer-mb 4] [--chunk-kb 1024] [--window 16] [--reps 15]
//                     [--queue-kb 2048] [--only kv|raw]   (one side alone, to profile it)
//
// The default shape is a 7B model's prefill of ~500 tokens in f32 (32
// layers x 4 MiB of K and V). Across network namespaces, pass an endpoint
// on the veth address (the receiver binds it, the sender connects to it).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "kv/transfer/receiver.hpp"
#include "kv/transfer/sender.hpp"

namespace {

using namespace mosaic::kv::transfer;

size_t queue_bytes = sender_options{}.max_queued_bytes; // --queue-kb
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Ratio raw time / kv time of each interleaved pair of runs: median and
/// quartiles (a busy machine slows both runs of a pair alike).
struct pair_ratios {
  double median, low, high;
};
pair_ratios ratios(const std::vector<double>& raw, const std::vector<double>& ours) {
  std::vector<double> r;
  for (size_t i = 0; i < raw.size(); ++i)
    r.push_back(raw[i] / ours[i]);
  std::sort(r.begin(), r.end());
  return {r[r.size() / 2], r[r.size() / 4], r[r.size() * 3 / 4]};
}

/// Seconds to move `data` as `layers` x `layer_bytes` through kv_sender /
/// kv_receiver, the consumer waiting layer by layer.
using bytes_ptr = std::shared_ptr<const std::vector<std::byte>>;

double transfer_once(zmq::context_t& ctx, kv_receiver& receiver, const bytes_ptr& owner,
                     uint32_t layers, uint64_t layer_bytes, size_t chunk, uint64_t id,
                     bool zero_copy) {
  const auto& data = *owner;
  sender_options so;
  so.chunk_bytes = chunk;
  so.max_queued_bytes = queue_bytes;
  auto sender = kv_sender::connect(ctx, receiver.endpoint(), so);
  if (!sender)
    throw std::runtime_error(sender.err().to_string());
  auto t0 = clock_type::now();
  std::thread consumer([&] {
    auto kv = receiver.take(id, 30s);
    if (!kv)
      return;
    for (uint32_t l = 0; l < layers; ++l)
      if (!(*kv)->wait_layer(l, 30s))
        return;
  });
  auto st = (*sender)->begin(id, layers, layer_bytes);
  for (uint32_t l = 0; st && l < layers; ++l)
    st =
        zero_copy
            ? (*sender)->send_layer(l, std::span{data}.subspan(l * layer_bytes, layer_bytes), owner)
            : (*sender)->send_layer(l, std::span{data}.subspan(l * layer_bytes, layer_bytes));
  if (st)
    st = (*sender)->finish();
  consumer.join();
  if (!st)
    throw std::runtime_error(st.err().to_string());
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// Seconds to move the same bytes in the same chunks over a DEALER ->
/// ROUTER pair (the sockets the transfer uses) with nothing on top: no
/// header, credit, checksum or copy into place. The receiving thread takes
/// every chunk off the socket, then answers once (as `done` does), and
/// the time runs until the sender has that answer.
double raw_once(zmq::context_t& ctx, const std::string& bind_endpoint,
                const std::vector<std::byte>& data, size_t chunk, bool zero_copy) {
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind(bind_endpoint);
  auto endpoint = router.get(zmq::sockopt::last_endpoint);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::rcvtimeo, 30000);
  dealer.connect(endpoint);
  size_t n_chunks = (data.size() + chunk - 1) / chunk;
  auto t0 = clock_type::now();
  std::thread receiver([&] {
    zmq::message_t peer;
    for (size_t i = 0; i < n_chunks; ++i) {
      zmq::message_t body;
      if (!router.recv(peer) || !router.recv(body))
        return;
    }
    router.send(peer, zmq::send_flags::sndmore);
    router.send(zmq::str_buffer("done"));
  });
  static constexpr auto keep = [](void*, void*) noexcept {}; // `data` outlives the run
  for (size_t off = 0; off < data.size(); off += chunk) {
    const size_t n = std::min(chunk, data.size() - off);
    if (zero_copy) {
      zmq::message_t m(const_cast<std::byte*>(data.data()) + off, n, +keep);
      dealer.send(m, zmq::send_flags::none);
    } else {
      dealer.send(zmq::buffer(data.data() + off, n));
    }
  }
  zmq::message_t done;
  auto answered = dealer.recv(done);
  receiver.join();
  if (!answered)
    throw std::runtime_error("the raw ZeroMQ receiver did not answer");
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"KV transfer throughput vs raw ZeroMQ"};
  std::string endpoint = "tcp://127.0.0.1:*";
  uint32_t layers = 32;
  double layer_mb = 4;
  size_t chunk_kb = 1024;
  int reps = 15;
  uint32_t window = receiver_options{}.window_chunks;
  app.add_option("--endpoint", endpoint, "where the receiver binds (port * = any)");
  app.add_option("--layers", layers, "sections per transfer")->check(CLI::Range(1, 1024));
  app.add_option("--layer-mb", layer_mb, "MiB per section")->check(CLI::Range(0.001, 256.0));
  app.add_option("--chunk-kb", chunk_kb, "KiB per chunk")->check(CLI::Range(4, 65536));
  size_t queue_kb = queue_bytes >> 10;
  app.add_option("--queue-kb", queue_kb, "KiB a sender may have queued in ZeroMQ, unsent")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--window", window, "chunks a sender may have unacknowledged")
      ->check(CLI::Range(2, 4096));
  app.add_option("--reps", reps, "timed runs of each, interleaved (median)")
      ->check(CLI::Range(1, 100));
  std::string only;
  app.add_option("--only", only, "run one side alone (to profile it)")
      ->check(CLI::IsMember({"kv", "raw"}));
  CLI11_PARSE(app, argc, argv);
  const bool run_kv = only != "raw", run_raw = only != "kv";
  queue_bytes = queue_kb << 10;

  auto layer_bytes = static_cast<uint64_t>(layer_mb * (1 << 20));
  auto owned = std::make_shared<std::vector<std::byte>>(layers * layer_bytes);
  std::mt19937_64 rng{1};
  for (auto& b : *owned)
    b = static_cast<std::byte>(rng());
  const bytes_ptr data_ptr = owned;
  const auto& data = *owned;
  size_t chunk = chunk_kb << 10;

  zmq::context_t ctx{2};
  receiver_options ro;
  ro.window_chunks = window;
  auto receiver = kv_receiver::bind(ctx, endpoint, ro);
  if (!receiver) {
    std::fprintf(stderr, "kv_transfer_bench: %s\n", receiver.err().to_string().c_str());
    return 1;
  }
  try {
    std::vector<double> ours_copy, ours_zc, raw_copy, raw_zc;
    for (int r = -1; r < reps; ++r) { // r = -1 warms up; interleaved: all see the same machine
      auto kv = [&](bool zc, uint64_t id) {
        return run_kv ? transfer_once(ctx, **receiver, data_ptr, layers, layer_bytes, chunk, id, zc)
                      : 1.0;
      };
      auto raw = [&](bool zc) { return run_raw ? raw_once(ctx, endpoint, data, chunk, zc) : 1.0; };
      double a = kv(true, 100 + r), b = raw(true), c = kv(false, 1000 + r), d = raw(false);
      if (r < 0)
        continue;
      ours_zc.push_back(a);
      raw_zc.push_back(b);
      ours_copy.push_back(c);
      raw_copy.push_back(d);
    }
    double gb = double(data.size()) / 1e9;
    std::printf("bytes per transfer      %.1f MiB (%u layers x %.2f MiB, %zu KiB chunks)\n",
                double(data.size()) / (1 << 20), layers, layer_mb, chunk_kb);
    std::printf(
        "raw ZeroMQ baseline     the same bytes in the same chunks, DEALER -> ROUTER as the "
        "transfer uses, payload only (no header, credit, checksum or copy into place), timed "
        "until the receiver answers that it has every chunk\n");
    std::printf("kv transfer, zero-copy send (credits + XXH3 + copy in place)  %.2f GB/s  (median "
                "of %d)\n",
                gb / median(ours_zc), reps);
    std::printf("raw ZeroMQ DEALER/ROUTER, zero-copy send, same bytes+chunks   %.2f GB/s\n",
                gb / median(raw_zc));
    std::printf("kv transfer, copying send                                     %.2f GB/s\n",
                gb / median(ours_copy));
    std::printf("raw ZeroMQ DEALER/ROUTER, copying send                        %.2f GB/s\n",
                gb / median(raw_copy));
    for (bool zc : {true, false}) {
      auto p = zc ? ratios(raw_zc, ours_zc) : ratios(raw_copy, ours_copy);
      std::printf("ratio kv transfer / raw ZeroMQ, both %-9s  %.2f  (median of %d pairs, "
                  "quartiles %.2f-%.2f)%s\n",
                  zc ? "zero-copy" : "copying", p.median, reps, p.low, p.high,
                  zc ? "  target >= 0.80" : "");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kv_transfer_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
