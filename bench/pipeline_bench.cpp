// TTFT through the whole actor pipeline (router → linker → kv_loader /
// encoder → prefill → decode) for N concurrent multi-image requests whose
// images are already in the tenant's library (uploaded ahead) but NOT at
// the prefix: text comes first, so `prefix` recomputes every image while
// `mpic:32` loads the cached KV layer by layer and recomputes text + the
// first 32 tokens of each image. The library's RAM tier is off, so every
// hit is read from disk by the loader (the OS page cache may still serve
// the bytes). Prints TTFT mean and p90 per policy, their ratio, and the
// fraction of prefill time spent waiting for library layers.
//
// Usage: pipeline_bench [--model builtin:small] [--requests N] [--images K]
//                       [--threads T] [--max-tokens M]

// GCC 12 at -O3 reports a false maybe-uninitialized inside std::variant's
// copy of wire::segment (a string of image_data_segment).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "actors/local_cluster.hpp"
#include "engine/cpu/blas_threads.hpp"
#include "engine/model/image.hpp"
#include "engine/model/random_image.hpp"

namespace mosaic::bench {
namespace {

struct options {
  std::string model = "builtin:small";
  int requests = 8;
  int images = 3;
  int threads = 0;
  int max_tokens = 4;
};

struct summary {
  double mean = 0.0;
  double p90 = 0.0;
  double wait_fraction = 0.0;
  int failed = 0;
};

summary run_policy(actors::local_cluster& cluster, const options& o, const std::string& policy,
                   const std::vector<std::vector<uint8_t>>& images) {
  const auto before = cluster.stats();
  std::vector<std::shared_ptr<actors::token_stream>> streams;
  for (int r = 0; r < o.requests; ++r) {
    wire::generate_request req;
    req.tenant = "bench";
    req.reuse_policy = policy;
    req.sampling.temperature = 0.0f;
    req.sampling.max_tokens = static_cast<uint32_t>(o.max_tokens);
    req.segments.push_back(
        wire::text_segment{"Request " + std::to_string(r) + ": compare the following pictures. "});
    for (int i = 0; i < o.images; ++i) {
      const auto& img = images[size_t(r * o.images + i) % images.size()];
      req.segments.push_back(wire::image_data_segment{img, "image/png"});
      req.segments.push_back(wire::text_segment{" then "});
    }
    req.segments.push_back(wire::text_segment{"which one is brighter?"});
    streams.push_back(cluster.submit(req));
  }
  summary s;
  std::vector<double> ttft;
  for (auto& st : streams) {
    auto done = st->wait(std::chrono::minutes{10});
    if (!done) {
      std::fprintf(stderr, "%s: %s\n", policy.c_str(), done.err().to_string().c_str());
      ++s.failed;
      continue;
    }
    ttft.push_back(done->ttft_seconds);
  }
  if (!ttft.empty()) {
    std::sort(ttft.begin(), ttft.end());
    for (double t : ttft)
      s.mean += t;
    s.mean /= double(ttft.size());
    s.p90 = ttft[std::min(ttft.size() - 1, size_t(double(ttft.size()) * 0.9))];
  }
  const auto after = cluster.stats();
  const double prefill = double(after.prefill_us - before.prefill_us);
  s.wait_fraction = prefill > 0 ? double(after.load_wait_us - before.load_wait_us) / prefill : 0.0;
  return s;
}

int run(const options& o) {
  const auto lib = std::filesystem::temp_directory_path() /
                   ("mosaic_pipeline_bench_" + std::to_string(std::random_device{}()));
  actors::node_options no;
  no.model = o.model;
  no.threads = o.threads;
  no.library_dir = lib;
  no.ram_budget_bytes = 0;
  no.io = kv::io_mode::automatic;
  no.default_deadline_ms = 600000;
  no.max_inflight = o.requests;
  auto cluster = actors::local_cluster::start(no);
  if (!cluster) {
    std::fprintf(stderr, "pipeline_bench: %s\n", cluster.err().to_string().c_str());
    return 1;
  }
  auto& c = **cluster;
  const int size = c.context().engine->config().vision.image_size;
  std::mt19937_64 rng{42};
  std::vector<std::vector<uint8_t>> images;
  for (int i = 0; i < o.requests * o.images; ++i) {
    images.push_back(random_png(rng, size));
    if (auto up = c.upload("bench", images.back()); !up) {
      std::fprintf(stderr, "upload: %s\n", up.err().to_string().c_str());
      return 1;
    }
  }
  std::printf("pipeline_bench: %s, %d concurrent requests x %d images (%d tokens each), "
              "library hits from disk (%s)\n",
              o.model.c_str(), o.requests, o.images, c.context().engine->config().image_tokens(),
              std::string(c.context().loader->io_name()).c_str());
  run_policy(c, o, "mpic:32", images); // warm-up: page cache, allocator
  const auto prefix = run_policy(c, o, "prefix", images);
  const auto mpic = run_policy(c, o, "mpic:32", images);
  std::printf("%-8s  %10s  %10s  %14s  %s\n", "POLICY", "TTFT mean", "TTFT p90", "load wait",
              "failed");
  for (const auto& [name, s] : {std::pair{"prefix", prefix}, std::pair{"mpic:32", mpic}})
    std::printf("%-8s  %8.3f s  %8.3f s  %12.1f %%  %d\n", name, s.mean, s.p90,
                100.0 * s.wait_fraction, s.failed);
  std::printf("TTFT ratio prefix / mpic:32: mean %.2fx, p90 %.2fx\n",
              mpic.mean > 0 ? prefix.mean / mpic.mean : 0.0,
              mpic.p90 > 0 ? prefix.p90 / mpic.p90 : 0.0);
  cluster->reset();
  std::error_code ec;
  std::filesystem::remove_all(lib, ec);
  return 0;
}

} // namespace
} // namespace mosaic::bench

int main(int argc, char** argv) {
  // OpenBLAS's idle threads spin briefly, as in the mosaic CLI, so that
  // the figures are the product's (engine/cpu/blas_threads.hpp).
  mosaic::cpu::blas_exec_with_short_spin(argv);
  mosaic::bench::options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* v = argv[i + 1];
    if (flag == "--model")
      o.model = v;
    else if (flag == "--requests")
      o.requests = std::max(1, std::atoi(v));
    else if (flag == "--images")
      o.images = std::max(1, std::atoi(v));
    else if (flag == "--threads")
      o.threads = std::atoi(v);
    else if (flag == "--max-tokens")
      o.max_tokens = std::max(1, std::atoi(v));
    else {
      std::fprintf(stderr, "unknown option %s\n", flag.c_str());
      return 2;
    }
  }
  return mosaic::bench::run(o);
}
