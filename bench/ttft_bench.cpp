// Time to first token of `mpic:32` vs `prefix` on a 3-image prompt whose
// images are cached (compiled standalone, as a KV library holds them) but
// NOT as a prefix: text comes before the first image, so prefix caching
// finds no match and recomputes everything, while MPIC links the cached
// image KV in place and recomputes text + the first 32 tokens of each
// image. TTFT here = link plan + prefill pass + first token (argmax); the
// KV is already in host memory (no load time), the vision encoder is not
// run (a cache hit carries the projector output).
//
// Usage: ttft_bench [--model builtin:small] [--threads N] [--runs R]

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <CLI/CLI.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_model.hpp"
#include "engine/policies.hpp"
#include "engine/prefill.hpp"
#include "engine/sampler.hpp"

namespace mosaic::bench {
namespace {

struct options {
  std::string model = "builtin:small";
  int threads = 0;
  int runs = 5;
};

struct timed {
  double seconds = 1e30;
  double recomputed = 0.0;
  int first_token = -1;
};

result<timed> measure(bench_model& m, const prompt& p, const policy_spec& policy, int runs) {
  timed out;
  for (int r = 0; r <= runs; ++r) { // run 0 warms up
    const auto t0 = std::chrono::steady_clock::now();
    auto plan = build_link_plan(p, policy, m.cfg.text);
    if (!plan)
      return std::move(plan).err();
    auto res = run_prefill(*m.be, *m.decoder, *m.pool, *plan);
    if (!res)
      return std::move(res).err();
    const int32_t tok = argmax(res->logits);
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    if (r > 0)
      out.seconds = std::min(out.seconds, dt.count());
    out.recomputed = res->stats.recomputed_fraction;
    out.first_token = tok;
  }
  return out;
}

int fail(const error& e) {
  std::fprintf(stderr, "ttft_bench: %s\n", e.to_string().c_str());
  return 1;
}

int run(const options& opt) {
  auto model = load_bench_model(opt.model, opt.threads, 4096);
  if (!model)
    return fail(model.err());
  bench_model& m = *model;
  std::mt19937 rng(77);

  // Compile three images standalone (what an upload does ahead of questions).
  std::vector<compiled_image> entries;
  double compile_s = 0.0;
  for (int i = 0; i < 3; ++i) {
    auto emb = m.random_image_embeddings(rng);
    if (!emb)
      return fail(emb.err());
    const auto t0 = std::chrono::steady_clock::now();
    auto c = compile_image(*m.be, *m.decoder, *m.pool, emb->data(), m.cfg.image_tokens());
    compile_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!c)
      return fail(c.err());
    entries.push_back(std::move(*c));
  }

  // "<system text> <img> <text> <img> <text> <img> <question>": text first.
  prompt p;
  const int text_runs[4] = {40, 16, 16, 32};
  for (int r = 0; r < 4; ++r) {
    prompt_part t;
    t.kind = segment_kind::text;
    t.text_ids = m.random_text(rng, text_runs[r]);
    if (r == 0)
      t.text_ids[0] = m.cfg.text.bos_token_id;
    p.parts.push_back(std::move(t));
    if (r < 3) {
      prompt_image img;
      img.key = "cached-image-" + std::to_string(r);
      img.n_tokens = m.cfg.image_tokens();
      img.cached = &entries[static_cast<size_t>(r)];
      p.images.push_back(img);
      prompt_part ip;
      ip.kind = segment_kind::image;
      ip.image = r;
      p.parts.push_back(std::move(ip));
    }
  }
  const int n_tokens = 40 + 16 + 16 + 32 + 3 * m.cfg.image_tokens();

  auto mpic = measure(m, p, *parse_policy("mpic:32"), opt.runs);
  if (!mpic)
    return fail(mpic.err());
  auto prefix = measure(m, p, *parse_policy("prefix"), opt.runs);
  if (!prefix)
    return fail(prefix.err());

  std::printf("ttft_bench: %s on %s, 3 cached images not at the prefix, %d prompt tokens\n",
              opt.model.c_str(), std::string{m.be->name()}.c_str(), n_tokens);
  std::printf("compile (standalone prefill of 3 images, done ahead of the question): %.3f s\n\n",
              compile_s);
  std::printf("%-10s %10s %12s\n", "policy", "ttft_ms", "recomputed");
  std::printf("%-10s %10.1f %11.1f%%\n", "prefix", prefix->seconds * 1e3,
              prefix->recomputed * 100.0);
  std::printf("%-10s %10.1f %11.1f%%\n", "mpic:32", mpic->seconds * 1e3, mpic->recomputed * 100.0);
  std::printf("\nmpic:32 / prefix TTFT = %.3f (%.1f%% lower)\n", mpic->seconds / prefix->seconds,
              (1.0 - mpic->seconds / prefix->seconds) * 100.0);
  return 0;
}

} // namespace
} // namespace mosaic::bench

int main(int argc, char** argv) {
  mosaic::bench::options opt;
  CLI::App app{"TTFT of mpic:32 vs prefix on a 3-image prompt whose images are cached"};
  app.add_option("--model", opt.model, "model (builtin:small or an HF LLaVA directory)");
  app.add_option("--threads", opt.threads, "CPU threads (0: every core)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--runs", opt.runs, "runs per policy (best is kept)")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  return mosaic::bench::run(opt);
}
