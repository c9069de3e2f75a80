// Where one request's time goes, stage by stage, through the whole actor
// pipeline of a single node (router → linker → kv_loader / encoder →
// prefill → decode), for three requests one after another on an idle node:
//
//   new images     text and K images the node has never seen (policy
//                  mpic:32: they are encoded and computed in full, then
//                  compiled into the library after use)
//   new position   the same images behind other text: library hits, linked
//   exact repeat   the previous request again: the prefix cache
//
// The stages are the node's request_stage counters (actors/node_context.hpp,
// also on /metrics as mosaic:request_stage_seconds_total), read before and
// after each request; the front door's part (JSON + base64 of the same
// request with its images as data URLs) is timed here on the server's own
// parser. Each stage is printed in ms and as a share of the request's
// TTFT; the vision tower + projector also as GFLOP/s against the
// in-process OpenBLAS sgemm peak (the limit a GEMM-bound stage can reach).
//
// Usage: stage_profile [--model builtin:small] [--images K] [--threads T]
//                      [--words N]

// GCC 12 at -O3 reports a false maybe-uninitialized inside std::variant's
// copy of wire::segment (a string of image_data_segment).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "actors/local_cluster.hpp"
#include "bench/bench_model.hpp"
#include "bench/sgemm_peak.hpp"
#include "engine/cpu/blas_threads.hpp"
#include "engine/model/random_image.hpp"
#include "server/openai_request.hpp"
#include "sim/http_target.hpp"

namespace mosaic::bench {
namespace {

using actors::request_stage;
using steady = std::chrono::steady_clock;

struct options {
  std::string model = "builtin:small";
  int images = 3;
  int threads = 0;
  int words = 200; ///< text words around the images
};

std::string words(std::mt19937_64& rng, int n) {
  static const char* pool[] = {"the", "harbour", "at",  "dawn", "boats", "light", "over", "water",
                               "and", "a",       "red", "roof", "near",  "two",   "gulls"};
  std::string out;
  for (int i = 0; i < n; ++i)
    out += std::string{i == 0 ? "" : " "} + pool[rng() % std::size(pool)];
  return out;
}

struct request_shape {
  std::string before, between, after; ///< text around the images
};

wire::generate_request make_request(const request_shape& s,
                                    const std::vector<std::vector<uint8_t>>& images) {
  wire::generate_request req;
  req.tenant = "bench";
  req.reuse_policy = "mpic:32";
  req.sampling.temperature = 0.0f;
  req.sampling.max_tokens = 1;
  req.segments.push_back(wire::text_segment{s.before});
  for (const auto& img : images) {
    req.segments.push_back(wire::image_data_segment{img, "image/png"});
    req.segments.push_back(wire::text_segment{s.between});
  }
  req.segments.push_back(wire::text_segment{s.after});
  return req;
}

/// The same request as an OpenAI chat body with data URLs, parsed by the
/// front door's parser: seconds (best of 3).
double front_door_parse_seconds(const request_shape& s,
                                const std::vector<std::vector<uint8_t>>& images) {
  nlohmann::json content = nlohmann::json::array();
  content.push_back({{"type", "text"}, {"text", s.before}});
  for (const auto& img : images) {
    content.push_back({{"type", "image_url"},
                       {"image_url", {{"url", "data:image/png;base64," + sim::base64(img)}}}});
    content.push_back({{"type", "text"}, {"text", s.between}});
  }
  content.push_back({{"type", "text"}, {"text", s.after}});
  const nlohmann::json body = {
      {"model", "m"},
      {"max_tokens", 1},
      {"messages", nlohmann::json::array({{{"role", "user"}, {"content", content}}})}};
  const std::string text = body.dump();
  double best = 1e9;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = steady::now();
    auto parsed = server::parse_chat_request(text, server::request_limits{});
    best = std::min(best, std::chrono::duration<double>(steady::now() - t0).count());
    if (!parsed)
      std::fprintf(stderr, "stage_profile: the body did not parse: %s\n",
                   parsed.error.message.c_str());
  }
  return best;
}

struct profile {
  std::string name;
  double ttft_s = 0.0;
  double parse_s = 0.0;
  actors::node_stats before, after;
  double stage_ms(request_stage s) const {
    return double(after.stage_us[size_t(s)] - before.stage_us[size_t(s)]) / 1e3;
  }
};

/// Runs `req` alone and waits (up to 30 s) until `compiles` more compiles
/// are done, so that store after use is in the profile and off the next.
profile run_one(actors::local_cluster& c, const std::string& name,
                const wire::generate_request& req, double parse_s, uint64_t compiles) {
  profile p;
  p.name = name;
  p.parse_s = parse_s;
  p.before = c.stats();
  auto done = c.submit(req)->wait(std::chrono::minutes{5});
  if (!done) {
    std::fprintf(stderr, "stage_profile: %s: %s\n", name.c_str(), done.err().to_string().c_str());
    std::exit(1);
  }
  p.ttft_s = done->ttft_seconds;
  const auto until = steady::now() + std::chrono::seconds{30};
  const size_t k = size_t(request_stage::compile);
  while (c.stats().stage_count[k] < p.before.stage_count[k] + compiles && steady::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  std::this_thread::sleep_for(std::chrono::milliseconds{200}); // the stores' writes
  p.after = c.stats();
  return p;
}

void print(const std::vector<profile>& ps, double vision_gflop, double peak) {
  std::printf("\n%-44s", "stage (ms; % of TTFT)");
  for (const auto& p : ps)
    std::printf(" %22s", p.name.c_str());
  std::printf("\n");
  auto row = [&](const char* label, auto value, bool share) {
    std::printf("%-44s", label);
    for (const auto& p : ps) {
      const double ms = value(p);
      if (share && p.ttft_s > 0)
        std::printf(" %12.1f (%5.1f%%)", ms, 100.0 * ms / (p.ttft_s * 1e3));
      else
        std::printf(" %12.1f %9s", ms, share ? "" : "off path");
    }
    std::printf("\n");
  };
  auto stage = [](request_stage s) { return [s](const profile& p) { return p.stage_ms(s); }; };
  row(
      "front door: JSON + base64 (before submit)", [](const profile& p) { return p.parse_s * 1e3; },
      true);
  row("linker: tokenize, decode + key images", stage(request_stage::prepare), true);
  row("linker: library lookup", stage(request_stage::library_lookup), true);
  row("linker: images resolved (wall), of which", stage(request_stage::resolve_images), true);
  row("  encoder: decode + key (0: linker's pixels)", stage(request_stage::image_decode), true);
  row("  encoder: wait for the compute lock", stage(request_stage::encode_lock_wait), true);
  row("  encoder: vision tower + projector", stage(request_stage::vision_encode), true);
  row("prefill: queue", stage(request_stage::prefill_queue), true);
  row("prefill: wait for library layers", stage(request_stage::prefill_load_wait), true);
  row("prefill: plan, link, compute, first token", stage(request_stage::prefill_compute), true);
  row(
      "rest: router, messages, decode hand-off",
      [](const profile& p) {
        double staged = 0.0;
        for (auto s : {request_stage::prepare, request_stage::library_lookup,
                       request_stage::resolve_images, request_stage::prefill_queue,
                       request_stage::prefill_load_wait, request_stage::prefill_compute})
          staged += p.stage_ms(s);
        return p.ttft_s * 1e3 - staged;
      },
      true);
  row(
      "TTFT (submit to first token, node)", [](const profile& p) { return p.ttft_s * 1e3; }, true);
  row("store after use: compile", stage(request_stage::compile), false);
  for (const auto& p : ps) {
    const double ms = p.stage_ms(request_stage::vision_encode);
    const uint64_t encodes = p.after.encodes - p.before.encodes;
    if (ms > 0 && encodes > 0) {
      const double gflops = vision_gflop * double(encodes) / (ms / 1e3);
      std::printf("\n%s: vision tower + projector %.2f GFLOP x %llu images in %.1f ms = %.1f "
                  "GFLOP/s, %.2f of the sgemm peak (%.1f GFLOP/s, this process, same threads)\n",
                  p.name.c_str(), vision_gflop, (unsigned long long)encodes, ms, gflops,
                  peak > 0 ? gflops / peak : 0.0, peak);
    }
  }
}

int run(const options& o) {
  const auto lib = std::filesystem::temp_directory_path() /
                   ("mosaic_stage_profile_" + std::to_string(std::random_device{}()));
  actors::node_options no;
  no.model = o.model;
  no.threads = o.threads;
  no.library_dir = lib;
  no.default_deadline_ms = 600000;
  auto cluster = actors::local_cluster::start(no);
  if (!cluster) {
    std::fprintf(stderr, "stage_profile: %s\n", cluster.err().to_string().c_str());
    return 1;
  }
  auto& c = **cluster;
  const auto& cfg = c.context().engine->config();
  std::mt19937_64 rng{std::random_device{}()};
  auto fresh_images = [&] {
    std::vector<std::vector<uint8_t>> v;
    for (int i = 0; i < o.images; ++i)
      v.push_back(random_png(rng, cfg.vision.image_size));
    return v;
  };
  const request_shape first{words(rng, o.words / 2), " and ", words(rng, o.words / 2)};
  const request_shape moved{words(rng, o.words / 2 + 7), " then ", words(rng, o.words / 2)};
  // Warm-up on other images: first-call costs (allocator, thread pools).
  const auto warm = fresh_images();
  run_one(c, "warm-up", make_request(first, warm), 0.0, uint64_t(o.images));
  const double peak = measure_sgemm_peak_gflops(1024, 3);

  const auto images = fresh_images();
  std::vector<profile> ps;
  ps.push_back(run_one(c, "new images", make_request(first, images),
                       front_door_parse_seconds(first, images), uint64_t(o.images)));
  ps.push_back(run_one(c, "new position", make_request(moved, images),
                       front_door_parse_seconds(moved, images), 0));
  ps.push_back(run_one(c, "exact repeat", make_request(moved, images),
                       front_door_parse_seconds(moved, images), 0));
  std::printf("stage_profile: %s, %d images of %d tokens, ~%d words of text, policy mpic:32, "
              "one request at a time on an idle node\n",
              o.model.c_str(), o.images, cfg.image_tokens(), o.words);
  print(ps, vision_flops(cfg) / 1e9, peak);
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
  CLI::App app{"Where one request's time goes, stage by stage, through a node's actors"};
  app.add_option("--model", o.model, "builtin:tiny, builtin:small or an HF LLaVA directory")
      ->capture_default_str();
  app.add_option("--images", o.images, "images per request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--words", o.words, "words of text around them")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU backend threads (0 = every core)");
  CLI11_PARSE(app, argc, argv);
  return mosaic::bench::run(o);
}
