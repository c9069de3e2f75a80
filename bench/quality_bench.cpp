// Quality of the reuse policies vs the full recompute on builtin:small:
// a fixed set of multi-image prompts (images inside the text, never a
// prefix), each image compiled standalone first (as a KV library holds
// it), then for every policy: first-token agreement with `full`, KL of the
// first-token distributions, identical greedy tokens and the recomputed
// fraction. Writes a markdown table (stdout, or --out FILE).
//
// Usage: quality_bench [--model builtin:small] [--threads N] [--max-tokens N] [--out FILE]

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <CLI/CLI.hpp>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/backend.hpp"
#include "engine/generation.hpp"
#include "engine/image_encoder.hpp"
#include "engine/llava_engine.hpp"
#include "engine/model/image.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic::bench {
namespace {

struct options {
  std::string model = "builtin:small";
  int threads = 0;
  int max_tokens = 8;
  std::string out;
};

/// A procedurally drawn image: stripes, rings or blobs in seeded colours.
decoded_image draw_image(uint32_t seed, int size) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> c(0, 255);
  const int kind = static_cast<int>(seed % 3);
  const int r0 = c(rng), g0 = c(rng), b0 = c(rng), r1 = c(rng), g1 = c(rng), b1 = c(rng);
  const double freq = 0.02 + 0.1 * (c(rng) / 255.0);
  decoded_image img;
  img.width = img.height = size;
  img.rgb.resize(static_cast<size_t>(size) * size * 3);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      double t = 0.0;
      const double dx = x - size / 2.0, dy = y - size / 2.0;
      if (kind == 0)
        t = 0.5 + 0.5 * std::sin(freq * (x + 0.5 * y));
      else if (kind == 1)
        t = 0.5 + 0.5 * std::sin(freq * std::sqrt(dx * dx + dy * dy));
      else
        t = 0.5 + 0.5 * std::sin(freq * x) * std::cos(freq * y);
      uint8_t* px = &img.rgb[(static_cast<size_t>(y) * size + x) * 3];
      px[0] = static_cast<uint8_t>(r0 + t * (r1 - r0));
      px[1] = static_cast<uint8_t>(g0 + t * (g1 - g0));
      px[2] = static_cast<uint8_t>(b0 + t * (b1 - b0));
    }
  return img;
}

struct test_prompt {
  std::string text; ///< with <image> markers, images never first
  int n_images;
};

const std::vector<test_prompt>& prompts() {
  static const std::vector<test_prompt> set = {
      {"Here are two photos. First: <image> Second: <image> What changed between them?", 2},
      {"I took this at noon <image> and this at night <image> and this one the next day <image> "
       "Which was taken first?",
       3},
      {"Describe the pattern in <image> and say whether it repeats in <image>.", 2},
      {"Look at the left panel <image>, the middle panel <image> and the right panel <image>. "
       "Count the stripes in each.",
       3},
  };
  return set;
}

struct policy_row {
  std::string name;
  int first_agree = 0;
  double kl_sum = 0.0;
  double match_sum = 0.0;
  double recomputed_sum = 0.0;
  double ttft_sum = 0.0;
  int n = 0;
};

int fail(const error& e) {
  std::fprintf(stderr, "quality_bench: %s\n", e.to_string().c_str());
  return 1;
}

int run(const options& opt, const std::string& command) {
  auto be = make_backend("cpu", opt.threads);
  if (!be)
    return fail(be.err());
  kv_pool_options pool;
  pool.block_size = 16;
  pool.n_blocks = 256; // 4096 tokens: one prompt of 3 images at a time
  auto eng = llava_engine::load(opt.model, **be, pool);
  if (!eng)
    return fail(eng.err());
  llava_engine& e = **eng;
  auto enc = image_encoder::create(**be, e.config(), lookup_in(e.weights()));
  if (!enc)
    return fail(enc.err());
  const tokenizer& tok = e.tokenizer();

  const std::vector<std::string> policies = {"full_reuse", "mpic:8", "mpic:32", "cacheblend:0.15",
                                             "vlcache:0.05"};
  std::vector<policy_row> rows;
  for (const auto& p : policies)
    rows.push_back({p});
  sampling_params greedy;
  greedy.stop_token_ids = {tok.eos_id()};
  double full_ttft = 0.0;

  uint32_t image_seed = 1;
  for (size_t pi = 0; pi < prompts().size(); ++pi) {
    const auto& tp = prompts()[pi];
    std::vector<std::vector<float>> emb;
    std::vector<compiled_image> entries;
    for (int i = 0; i < tp.n_images; ++i) {
      auto x = enc->encode(draw_image(image_seed++, e.config().vision.image_size));
      if (!x)
        return fail(x.err());
      auto c = e.compile_image(*x);
      if (!c)
        return fail(c.err());
      emb.push_back(std::move(*x));
      entries.push_back(std::move(*c));
    }
    auto images = [&](bool cached) {
      std::vector<prompt_image> v;
      for (int i = 0; i < tp.n_images; ++i) {
        prompt_image img;
        img.key = "image-" + std::to_string(i);
        img.n_tokens = enc->n_tokens();
        img.embeddings = emb[static_cast<size_t>(i)].data();
        img.cached = cached ? &entries[static_cast<size_t>(i)] : nullptr;
        v.push_back(img);
      }
      return v;
    };
    auto text = chat_prompt(tok, tp.text, tp.n_images);
    if (!text)
      return fail(text.err());
    auto full_prompt = build_prompt(tok, *text, images(false));
    if (!full_prompt)
      return fail(full_prompt.err());
    auto reference = generate(e, *full_prompt, *parse_policy("full"), greedy, opt.max_tokens);
    if (!reference)
      return fail(reference.err());
    full_ttft += reference->ttft_seconds;
    auto linked = build_prompt(tok, *text, images(true));
    if (!linked)
      return fail(linked.err());
    for (auto& row : rows) {
      auto g = generate(e, *linked, *parse_policy(row.name), greedy, opt.max_tokens);
      if (!g)
        return fail(g.err());
      const agreement a = compare_generations(*reference, *g);
      row.first_agree += a.first_token_match ? 1 : 0;
      row.kl_sum += a.first_token_kl;
      row.match_sum += a.token_match;
      row.recomputed_sum += g->stats.recomputed_fraction;
      row.ttft_sum += g->ttft_seconds;
      ++row.n;
    }
    std::fprintf(stderr, "quality_bench: prompt %zu/%zu done\n", pi + 1, prompts().size());
  }

  const int n_prompts = static_cast<int>(prompts().size());
  std::ostringstream md;
  md << "# Reuse-policy quality vs full recompute\n\n"
     << "Regenerate with `" << command << "`\n(bench/quality_bench.cpp; the calibration "
     << "writes the vlcache profile that `vlcache:R` uses).\n\n"
     << "**Read this as a plumbing check, not a quality claim.** `" << opt.model
     << "` has random\nweights: its outputs carry no meaning, and how far a policy drifts from the "
        "full\n"
     << "recompute on it says little about a trained LLaVA. What the table does show is that\n"
     << "every policy runs end to end (compile each image standalone, link its KV at a new\n"
     << "position, recompute the policy's tokens in one pass, decode) and that more recompute\n"
     << "moves the output towards `full`.\n\n"
     << "Setup: " << n_prompts
     << " fixed prompts with 2-3 procedurally drawn images each, the images\n"
     << "inside the text (never a prefix), LLaVA-1.5 chat template, greedy decoding of "
     << opt.max_tokens
     << "\ntokens. Each image is compiled standalone first, as a KV library entry, "
     << "then linked.\n`vlcache` used "
     << (e.vlcache().uniform ? "a uniform profile (no vlcache_profile.json)"
                             : "the calibrated vlcache_profile.json")
     << " in this run.\n\n"
     << "| policy | first-token agreement | mean first-token KL (nats) | identical greedy tokens "
        "| recomputed | mean TTFT (ms) |\n"
     << "|---|---|---|---|---|---|\n";
  char buf[256];
  std::snprintf(buf, sizeof buf, "| full | %d/%d | 0 | 100.0%% | 100.0%% | %.0f |\n", n_prompts,
                n_prompts, full_ttft / n_prompts * 1e3);
  md << buf;
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "| %s | %d/%d | %.4g | %.1f%% | %.1f%% | %.0f |\n",
                  r.name.c_str(), r.first_agree, r.n, r.kl_sum / r.n, r.match_sum / r.n * 100.0,
                  r.recomputed_sum / r.n * 100.0, r.ttft_sum / r.n * 1e3);
    md << buf;
  }
  md << "\n`recomputed` is the share of (token, layer) pairs computed in the linked prefill;\n"
     << "TTFT is plan + prefill + first token on the CPU backend of the machine that ran it\n"
     << "(image KV already in memory), shown for orientation only: use `bench/ttft_bench`\n"
     << "for timing comparisons.\n";
  const std::string text = md.str();
  std::fputs(text.c_str(), stdout);
  if (!opt.out.empty()) {
    std::ofstream f{opt.out};
    f << text;
    if (!f)
      return fail(make_error(errc::io_error, "cannot write ", opt.out));
  }
  return 0;
}

} // namespace
} // namespace mosaic::bench

int main(int argc, char** argv) {
  mosaic::bench::options opt;
  CLI::App app{"First-token agreement and KL of each reuse policy vs full"};
  app.add_option("--model", opt.model, "model (builtin:small or an HF LLaVA directory)");
  app.add_option("--threads", opt.threads, "CPU threads (0: every core)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-tokens", opt.max_tokens, "greedy tokens compared")
      ->check(CLI::PositiveNumber);
  app.add_option("--out", opt.out, "write the markdown table here (e.g. docs/quality.md)");
  CLI11_PARSE(app, argc, argv);
  const std::string model_arg = opt.model != "builtin:small" ? " --model " + opt.model : "";
  const std::string command = "mosaic model calibrate --model " + opt.model +
                              " && build/bench/quality_bench --out docs/quality.md" + model_arg;
  return mosaic::bench::run(opt, command);
}
