// `mosaic bench --profile --model M --out profile.json`: measures the
// engine's per-stage costs on this machine and fits the linear models of
// sim/cost_profile.hpp, which `mosaic sim des` replays.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cli/bench_pipeline.hpp"
#include "cli/commands.hpp"
#include "engine/image_encoder.hpp"
#include "engine/llava_engine.hpp"
#include "engine/weight_lookup.hpp"
#include "sim/cost_profile.hpp"
#include "sim/procedural_image.hpp"
#include "sim/workload.hpp"

namespace mosaic::cli {

namespace {

using steady = std::chrono::steady_clock;

struct bench_options {
  bool profile = false;
  std::string model = "builtin:small";
  std::string device = "cpu";
  int threads = 0;
  std::string out = "profile.json";
  int repeats = 4;
};

int fail(const error& e) {
  std::fprintf(stderr, "error: %s\n", e.to_string().c_str());
  return 1;
}

double since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

/// The median of `v` (not empty).
double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Tokens per workload word of this tokenizer, over a generated workload's text.
double tokens_per_word(const tokenizer& tok) {
  auto spec = sim::load_workload_spec("sparkles", sim::builtin_workload_dir());
  if (!spec)
    return 1.3;
  sim::arrival_spec a = spec->arrivals;
  a.max_requests = 20;
  auto w = sim::generate_workload(*spec, a, 7);
  if (!w)
    return 1.3;
  double words = 0, tokens = 0;
  for (const auto& r : w->requests)
    for (const auto& p : r.pieces)
      if (!p.is_image && !p.text.empty()) {
        words += double(std::count(p.text.begin(), p.text.end(), ' ') + 1);
        tokens += double(tok.encode(p.text).size());
      }
  return words > 0 ? tokens / words : 1.3;
}

int run_profile(const bench_options& o) {
  auto be = make_backend(o.device, o.threads);
  if (!be)
    return fail(be.err());
  auto engine_r = llava_engine::load(o.model, **be, kv_pool_options{4096, 16});
  if (!engine_r)
    return fail(engine_r.err());
  auto& engine = **engine_r;
  const auto& cfg = engine.config();
  auto encoder = image_encoder::create(**be, cfg, lookup_in(engine.weights()));
  if (!encoder)
    return fail(encoder.err());

  sim::cost_profile p;
  p.model = o.model;
  p.device = o.device;
  p.n_layers = cfg.text.num_layers;
  p.image_tokens = cfg.image_tokens();
  p.tokens_per_word = tokens_per_word(engine.tokenizer());
  p.provenance["tokens_per_word"] = "measured: tokenizer over generated sparkles text";

  // -- encode and compile three images --------------------------------------------
  std::vector<std::vector<float>> embeddings;
  std::vector<compiled_image> compiled;
  double encode_s = 0, compile_s = 0;
  for (int i = 0; i < 3; ++i) {
    const auto img = sim::procedural_image(1, i, cfg.vision.image_size);
    auto t0 = steady::now();
    auto emb = encoder->encode(img);
    if (!emb)
      return fail(emb.err());
    encode_s += since(t0);
    t0 = steady::now();
    auto grid = cfg.image_token_grid(img.height, img.width); // M-RoPE models
    if (!grid)
      return fail(grid.err());
    auto c = engine.compile_image(*emb, {}, 0, *grid);
    if (!c)
      return fail(c.err());
    compile_s += since(t0);
    embeddings.push_back(std::move(*emb));
    compiled.push_back(std::move(*c));
  }
  // Anyres: an image's count depends on its size; the profile keeps the
  // mean of the measured images'.
  p.image_tokens = 0;
  for (const auto& c : compiled)
    p.image_tokens += c.n_tokens;
  p.image_tokens /= int(compiled.size());
  if (cfg.variable_image_tokens())
    p.provenance["image_tokens"] = "measured: mean of the 3 procedural images (size-dependent)";
  p.encode_per_image_s = encode_s / 3;
  p.compile_per_image_s = compile_s / 3;
  p.provenance["encode_per_image_s"] = "measured: vision tower + projector, 3 images";
  p.provenance["compile_per_image_s"] = "measured: standalone image prefill, 3 images";
  std::fprintf(stderr, "encode %.3f s/image, compile %.3f s/image\n", p.encode_per_image_s,
               p.compile_per_image_s);

  // -- prefill at a few sizes and policies ----------------------------------------
  std::vector<std::vector<double>> rows;
  std::vector<double> secs;
  const std::string words = "describe what the image shows and compare it with the other one ";
  for (int n_images : {1, 2, 3})
    for (int text_reps : {1, 6})
      for (const char* pol : {"full", "mpic:32", "full_reuse"}) {
        std::string text = "USER: ";
        for (int i = 0; i < n_images; ++i)
          text += "Image " + std::to_string(i + 1) + ": <image>\n";
        for (int r = 0; r < text_reps; ++r)
          text += words;
        text += "ASSISTANT:";
        std::vector<prompt_image> images;
        for (int i = 0; i < n_images; ++i)
          images.push_back({"img" + std::to_string(i), compiled[size_t(i)].n_tokens,
                            &compiled[size_t(i)], embeddings[size_t(i)].data()});
        auto pr = split_prompt(engine.tokenizer().encode_prompt(text),
                               engine.tokenizer().image_token_id(), images);
        if (!pr)
          return fail(pr.err());
        auto spec = parse_policy(pol);
        auto plan = engine.plan(*pr, *spec);
        if (!plan)
          return fail(plan.err());
        double computed = 0, attended = 0;
        for (const auto& layer : plan->compute)
          for (int32_t t : layer) {
            computed += 1;
            attended += plan->positions[size_t(t)] + 1;
          }
        computed /= p.n_layers;
        attended /= p.n_layers;
        std::vector<double> times;
        for (int rep = 0; rep < o.repeats; ++rep) {
          const auto t0 = steady::now();
          auto res = engine.prefill(*plan);
          if (!res)
            return fail(res.err());
          if (rep > 0 || o.repeats == 1) // the first of several warms up
            times.push_back(since(t0));
        }
        // The median: robust to other jobs taking the cores for a moment.
        const double s = median_of(times);
        // Linked from the cache, not computed (the positions a reuse
        // policy re-rotates and copies into the sequence).
        const double reused = double(plan->n_tokens()) - computed;
        rows.push_back({1.0, computed, attended, reused});
        secs.push_back(s);
        std::fprintf(stderr, "prefill %-10s %d image(s), %5.0f computed, %9.0f attended: %.3f s\n",
                     pol, n_images, computed, attended, s);
      }
  auto fit = sim::fit_costs(rows, secs);
  if (!fit)
    return fail(fit.err());
  p.prefill_base_s = (*fit)[0];
  p.prefill_per_computed_token_s = (*fit)[1];
  p.prefill_per_attended_token_s = (*fit)[2];
  p.prefill_per_reused_token_s = (*fit)[3];
  p.provenance["prefill"] = "measured: " + std::to_string(secs.size()) +
                            " prefill shapes (1-3 images; full, mpic:32, full_reuse; median of " +
                            std::to_string(std::max(1, o.repeats - 1)) +
                            " runs each), non-negative least squares of the relative error";

  // -- decode steps at a few batch sizes and context lengths -------------------------
  // Attention reads every cached token, so a step costs more the longer
  // the sequences: 8 short (~20 tokens) and 8 long (~1,000 tokens) ones,
  // the first b of either decoded together.
  rows.clear();
  secs.clear();
  for (int reps : {1, 60}) {
    std::string text = "USER: ";
    for (int r = 0; r < reps; ++r)
      text += words;
    const auto ids = engine.tokenizer().encode_prompt(text + "ASSISTANT:");
    std::vector<prefill_result> seqs;
    for (int b = 0; b < 8; ++b) {
      prompt pr;
      pr.parts.push_back({segment_kind::text, ids, -1});
      auto plan = engine.plan(pr, policy_spec{});
      if (!plan)
        return fail(plan.err());
      auto res = engine.prefill(*plan);
      if (!res)
        return fail(res.err());
      seqs.push_back(std::move(*res));
    }
    for (int batch : {1, 2, 4, 8}) {
      constexpr int steps = 6;
      std::vector<double> times;
      double context = 0;
      for (int s = 0; s < steps; ++s) {
        std::vector<decode_input> in;
        context = 0;
        for (int b = 0; b < batch; ++b) {
          auto& r = seqs[size_t(b)];
          in.push_back({&r.sequence, ids.back(), r.sequence.length()});
          context += r.sequence.length();
        }
        const auto t0 = steady::now();
        auto logits = engine.decode_step(in);
        if (!logits)
          return fail(logits.err());
        if (s > 0) // the first step is a warm-up
          times.push_back(since(t0));
      }
      rows.push_back({1.0, double(batch), context});
      secs.push_back(median_of(times));
      std::fprintf(stderr, "decode batch %d, %6.0f context tokens: %.4f s/step\n", batch, context,
                   secs.back());
    }
  }
  auto dfit = sim::fit_costs(rows, secs);
  if (!dfit)
    return fail(dfit.err());
  p.decode_step_base_s = (*dfit)[0];
  p.decode_step_per_seq_s = (*dfit)[1];
  p.decode_step_per_context_token_s = (*dfit)[2];
  p.provenance["decode"] =
      "measured: decode_step at batch 1, 2, 4, 8 x ~20 and ~1,000 context "
      "tokens (median of 5 steps each), non-negative least squares of the relative error";

  // -- bytes and bandwidths ---------------------------------------------------------
  p.kv_bytes_per_token = 2.0 * p.n_layers * cfg.text.kv_dim() * 2.0; // K+V, f16 as stored
  p.provenance["kv_bytes_per_token"] = "computed: 2 (K,V) x layers x kv_dim x 2 bytes (f16)";
  {
    const size_t bytes = size_t(p.kv_bytes_per_token * p.image_tokens);
    std::vector<char> a(bytes, 1), b(bytes);
    std::memcpy(b.data(), a.data(), bytes); // touch both
    const auto t0 = steady::now();
    for (int i = 0; i < 8; ++i)
      std::memcpy(b.data(), a.data(), bytes);
    p.load_ram_bytes_per_s = 8.0 * double(bytes) / since(t0);
    p.provenance["load_ram_bytes_per_s"] = "measured: memcpy of one image entry";
  }
  p.provenance["transfer_bytes_per_s"] = "assumed: 1.25 GB/s (10 GbE); not measured";

  // -- the actor pipeline around the engine -----------------------------------------
  if (auto st = profile_pipeline({o.model, o.device, o.threads, 3}, p); !st)
    return fail(st.err());

  if (auto st = sim::save_profile(p, o.out); !st)
    return fail(st.err());
  std::printf("profile of %s on %s written to %s\n", o.model.c_str(), o.device.c_str(),
              o.out.c_str());
  std::printf("  prefill = %.4f s + %.3g s/computed token + %.3g s/attended token + %.3g "
              "s/reused token\n",
              p.prefill_base_s, p.prefill_per_computed_token_s, p.prefill_per_attended_token_s,
              p.prefill_per_reused_token_s);
  std::printf("  decode step = %.4f s + %.4f s/sequence + %.4f s pipeline\n", p.decode_step_base_s,
              p.decode_step_per_seq_s, p.decode_step_overhead_s);
  std::printf("  pipeline before prefill = %.4f s + %.4f s/image; disk load %.2f GB/s\n",
              p.pipeline_base_s, p.pipeline_per_image_s, p.load_disk_bytes_per_s / 1e9);
  return 0;
}

} // namespace

void add_bench_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<bench_options>();
  auto* bench = app.add_subcommand("bench", "Measure the engine on this machine");
  bench
      ->add_flag("--profile", o->profile,
                 "measure per-stage costs (prefill, compile, decode) for `mosaic sim des`")
      ->required();
  bench->add_option("--model", o->model, "builtin:tiny, builtin:small or an HF LLaVA directory")
      ->capture_default_str();
  bench->add_option("--device", o->device, "cpu or cuda:N")->capture_default_str();
  bench->add_option("--threads", o->threads, "CPU backend threads (0 = every core)");
  bench
      ->add_option("--repeats", o->repeats,
                   "runs per prefill measurement (the first warms up, the median of the rest "
                   "counts)")
      ->capture_default_str();
  bench->add_option("--out", o->out, "profile JSON")->capture_default_str();
  bench->callback([o, exit_code] { *exit_code = run_profile(*o); });
}

} // namespace mosaic::cli
