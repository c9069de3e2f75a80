// Routing over prefill nodes: what cache-aware routing saves on a
// repeated-image workload. Three nodes of one topology joined in this
// process (local_cluster::join over CAF links and the ZeroMQ data plane on
// 127.0.0.1): front (router, encoder, decode) and two prefill nodes, each
// with its own KV library. K distinct images, each asked R times in a
// shuffled order, C requests at a time; run once per router strategy on
// fresh libraries. Prints, per strategy, the images computed (library
// misses: encode + full prefill of the image) and loaded (hits), TTFT
// mean and p90; then cache_aware's computes next to the least possible (K,
// each image computed once) as a ratio, and its TTFT against round_robin.
//
// Usage: route_bench [--model builtin:small] [--images K] [--repeats R]
//                    [--concurrency C] [--max-tokens M] [--port-base P]

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized" // wire::segment copies (see pipeline_bench)

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "actors/local_cluster.hpp"
#include "engine/model/image.hpp"
#include "engine/model/random_image.hpp"
#include "topology/loader.hpp"

namespace mosaic::bench {
namespace {

struct options {
  std::string model = "builtin:small";
  int images = 4;
  int repeats = 3;
  int concurrency = 2;
  int max_tokens = 2;
  int port_base = 0; ///< 0: from the pid
};

struct outcome {
  uint64_t computed = 0; ///< library misses on the prefill nodes
  uint64_t loaded = 0;   ///< library hits
  double ttft_mean = 0.0, ttft_p90 = 0.0, seconds = 0.0;
  int failed = 0;
};

result<outcome> run_strategy(const options& o, const std::string& strategy, int base,
                             const std::filesystem::path& dir,
                             const std::vector<std::vector<uint8_t>>& images,
                             const std::vector<int>& order) {
  std::ostringstream y;
  y << "model: " << o.model << "\ndefaults: { policy: \"mpic:32\", deadline_ms: 600000 }\nnodes:\n"
    << "  - { name: front, host: 127.0.0.1, control_port: " << base << ", data_port: " << base + 1
    << ", threads: 1, actors: [ { kind: frontend, http_port: " << base + 2
    << ", zmq_port: " << base + 3 << " }, { kind: router, strategy: " << strategy
    << " }, { kind: encoder }, { kind: decode, max_batch: 8, pool_gb: 0.5 } ] }\n";
  for (int i = 0; i < 2; ++i)
    y << "  - { name: p" << i << ", host: 127.0.0.1, control_port: " << base + 4 + 2 * i
      << ", data_port: " << base + 5 + 2 * i << ", threads: 1, actors: [ { kind: kv_loader, "
      << "library: " << (dir / (strategy + std::to_string(i))).string()
      << ", io: pread, ram_gb: 0.5, disk_gb: 2 }, { kind: linker }, { kind: prefill } ] }\n";
  auto topo = parse_topology(y.str(), "route_bench.yaml");
  if (!topo)
    return std::move(topo).err();
  actors::join_options jo;
  jo.quiet = true;
  jo.connect_timeout = std::chrono::seconds{60};
  std::vector<std::future<result<std::unique_ptr<actors::local_cluster>>>> joins;
  for (const char* name : {"front", "p0", "p1"})
    joins.push_back(std::async(std::launch::async, [&topo, name, jo] {
      return actors::local_cluster::join(*topo, name, jo);
    }));
  std::vector<std::unique_ptr<actors::local_cluster>> nodes;
  for (auto& j : joins) {
    auto c = j.get();
    if (!c)
      return std::move(c).err();
    nodes.push_back(std::move(*c));
  }
  auto& front = *nodes[0];
  outcome out;
  std::vector<double> ttft;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t next = 0; next < order.size();) {
    std::vector<std::shared_ptr<actors::token_stream>> wave;
    for (int c = 0; c < o.concurrency && next < order.size(); ++c, ++next) {
      wire::generate_request req;
      req.tenant = "bench";
      req.sampling.temperature = 0.0f;
      req.sampling.max_tokens = static_cast<uint32_t>(o.max_tokens);
      req.segments = {wire::text_segment{"Describe "},
                      wire::image_data_segment{images[size_t(order[next])], "image/png"},
                      wire::text_segment{" briefly."}};
      wave.push_back(front.submit(req));
    }
    for (auto& s : wave) {
      auto done = s->wait(std::chrono::minutes{10});
      if (!done) {
        std::fprintf(stderr, "%s: %s\n", strategy.c_str(), done.err().to_string().c_str());
        ++out.failed;
        continue;
      }
      ttft.push_back(done->ttft_seconds);
    }
    // Store after use is asynchronous: let the wave's new images land in
    // their library before the next wave asks for them.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds{30};
    while (std::chrono::steady_clock::now() < until &&
           nodes[1]->stats().stores + nodes[2]->stats().stores <
               nodes[1]->stats().library_misses + nodes[2]->stats().library_misses)
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (int i = 1; i <= 2; ++i) {
    out.computed += nodes[size_t(i)]->stats().library_misses;
    out.loaded += nodes[size_t(i)]->stats().library_hits;
  }
  if (!ttft.empty()) {
    std::sort(ttft.begin(), ttft.end());
    for (double t : ttft)
      out.ttft_mean += t;
    out.ttft_mean /= double(ttft.size());
    out.ttft_p90 = ttft[std::min(ttft.size() - 1, size_t(double(ttft.size()) * 0.9))];
  }
  return out;
}

int run(const options& o) {
  const int base = o.port_base != 0 ? o.port_base : 11000 + int(getpid() % 250) * 40;
  const auto dir =
      std::filesystem::temp_directory_path() / ("mosaic_route_bench_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  ::setenv("OPENBLAS_NUM_THREADS", "1", 0);
  // The image size of the model: start a throwaway node for its config.
  actors::node_options probe;
  probe.model = o.model;
  probe.threads = 1;
  probe.library_dir = dir / "probe";
  probe.pool_bytes = uint64_t(16) << 20;
  auto p = actors::local_cluster::start(probe);
  if (!p) {
    std::fprintf(stderr, "route_bench: %s\n", p.err().to_string().c_str());
    return 1;
  }
  const int size = (*p)->context().engine->config().vision.image_size;
  const int tokens = (*p)->context().engine->config().image_tokens();
  p->reset();

  std::mt19937_64 rng{42};
  std::vector<std::vector<uint8_t>> images;
  for (int i = 0; i < o.images; ++i)
    images.push_back(random_png(rng, size));
  std::vector<int> order;
  for (int r = 0; r < o.repeats; ++r)
    for (int i = 0; i < o.images; ++i)
      order.push_back(i);
  std::shuffle(order.begin(), order.end(), rng);

  std::printf("route_bench: %s, 2 prefill nodes with their own libraries, %d images x %d "
              "asks (%d image tokens each), %d at a time\n",
              o.model.c_str(), o.images, o.repeats, tokens, o.concurrency);
  std::printf("%-13s %9s %7s %11s %11s %8s %s\n", "STRATEGY", "computed", "loaded", "TTFT mean",
              "TTFT p90", "total", "failed");
  std::vector<std::pair<std::string, outcome>> all;
  int k = 0;
  for (const char* s : {"cache_aware", "least_loaded", "round_robin"}) {
    auto r = run_strategy(o, s, base + 8 * k++, dir, images, order);
    if (!r) {
      std::fprintf(stderr, "route_bench: %s: %s\n", s, r.err().to_string().c_str());
      return 1;
    }
    std::printf("%-13s %9llu %7llu %9.3f s %9.3f s %6.1f s %d\n", s,
                static_cast<unsigned long long>(r->computed),
                static_cast<unsigned long long>(r->loaded), r->ttft_mean, r->ttft_p90, r->seconds,
                r->failed);
    all.emplace_back(s, *r);
  }
  const auto& ca = all[0].second;
  std::printf("cache_aware images computed / least possible (%d): %.2f (limit 1.00)\n", o.images,
              double(ca.computed) / double(o.images));
  for (size_t i = 1; i < all.size(); ++i)
    std::printf("images computed %s / cache_aware: %.2fx; TTFT mean %s / cache_aware: %.2fx\n",
                all[i].first.c_str(),
                ca.computed > 0 ? double(all[i].second.computed) / double(ca.computed) : 0.0,
                all[i].first.c_str(),
                ca.ttft_mean > 0 ? all[i].second.ttft_mean / ca.ttft_mean : 0.0);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}

} // namespace
} // namespace mosaic::bench

int main(int argc, char** argv) {
  mosaic::bench::options o;
  CLI::App app{"Prefill routing over two prefill nodes: images computed and TTFT per strategy"};
  app.add_option("--model", o.model, "builtin:tiny, builtin:small or an HF LLaVA directory");
  app.add_option("--images", o.images, "distinct images")->check(CLI::PositiveNumber);
  app.add_option("--repeats", o.repeats, "asks per image")->check(CLI::PositiveNumber);
  app.add_option("--concurrency", o.concurrency, "requests in flight")->check(CLI::PositiveNumber);
  app.add_option("--max-tokens", o.max_tokens, "tokens per answer")->check(CLI::PositiveNumber);
  app.add_option("--port-base", o.port_base, "first TCP port of the nodes (0: from the pid)")
      ->check(CLI::Range(0, 65000));
  CLI11_PARSE(app, argc, argv);
  return mosaic::bench::run(o);
}
