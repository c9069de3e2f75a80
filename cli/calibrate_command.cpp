// `mosaic model calibrate --model M`: measures VLCache's per-layer
// sensitivity and writes `vlcache_profile.json` beside the model. For each
// decoder layer l, a few seeded random multi-image prompts are prefilled
// with every image token recomputed at layers 0..l-1 and its cached
// (standalone-compiled) KV reused from layer l on (a plan must be nested:
// a token not computed at a layer has no output to continue from, so
// "reuse at layer l only" is not a prefill that exists). D_l is the KL
// divergence of the last-token distribution from the full recompute
// (D_L = 0); layer l's sensitivity is its marginal share D_l - D_{l+1},
// what recomputing one layer deeper buys. `vlcache:R` spends its budget
// in proportion, made non-increasing with depth (engine/policies.hpp).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "engine/backend.hpp"
#include "engine/generation.hpp"
#include "engine/image_encoder.hpp"
#include "engine/llava_engine.hpp"
#include "engine/model/builtin_model.hpp"
#include "engine/model/image.hpp"
#include "engine/model/safetensors.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic::cli {

namespace {

struct calibrate_options {
  std::string model = "builtin:small";
  int prompts = 3;
  int images = 2;
  uint64_t seed = 1;
  int threads = 0;
};

int fail(const error& e) {
  std::fprintf(stderr, "mosaic model calibrate: %s\n", e.to_string().c_str());
  return 1;
}

decoded_image random_image(std::mt19937_64& rng, int size) {
  decoded_image img;
  img.width = img.height = size;
  img.rgb.resize(static_cast<size_t>(size) * size * 3);
  for (auto& v : img.rgb)
    v = static_cast<uint8_t>(rng() & 0xff);
  return img;
}

/// One calibration prompt: text, image, text, image, ..., text.
struct calib_prompt {
  std::vector<std::vector<float>> embeddings;
  std::vector<compiled_image> entries;
  prompt cached; ///< images as cache hits
  prompt fresh;  ///< images as misses (for the full reference)
};

result<calib_prompt> make_prompt(llava_engine& eng, image_encoder& enc, std::mt19937_64& rng,
                                 int n_images) {
  calib_prompt cp;
  const auto& cfg = eng.config();
  // Ordinary tokens: below the image token (LLaVA), below Qwen's special
  // tokens, which follow its vocabulary from <|endoftext|> (= bos).
  const int32_t max_id = cfg.qwen_vl() ? cfg.text.bos_token_id
                                       : std::min(cfg.image_token_index, cfg.text.vocab_size);
  auto text = [&](int n, bool bos) {
    prompt_part part;
    part.kind = segment_kind::text;
    if (bos && eng.tokenizer().bos_id() >= 0) // Qwen2 has none
      part.text_ids.push_back(eng.tokenizer().bos_id());
    for (int i = 0; i < n; ++i)
      part.text_ids.push_back(3 + static_cast<int32_t>(rng() % static_cast<uint64_t>(max_id - 3)));
    return part;
  };
  for (int i = 0; i < n_images; ++i) {
    const auto img = random_image(rng, cfg.vision.image_size);
    auto emb = enc.encode(img);
    if (!emb)
      return std::move(emb).err();
    auto grid = cfg.image_token_grid(img.height, img.width); // M-RoPE models
    if (!grid)
      return std::move(grid).err();
    auto entry = eng.compile_image(*emb, {}, 0, *grid);
    if (!entry)
      return std::move(entry).err();
    cp.embeddings.push_back(std::move(*emb));
    cp.entries.push_back(std::move(*entry));
  }
  for (int i = 0; i < n_images; ++i) {
    prompt_image img;
    img.key = "calibration-image-" + std::to_string(i);
    img.n_tokens =
        static_cast<int>(cp.embeddings[static_cast<size_t>(i)].size() / size_t(enc.hidden()));
    img.embeddings = cp.embeddings[static_cast<size_t>(i)].data();
    cp.fresh.images.push_back(img);
    img.cached = &cp.entries[static_cast<size_t>(i)];
    cp.cached.images.push_back(img);
  }
  for (int i = 0; i <= n_images; ++i) {
    const auto part = text(8 + static_cast<int>(rng() % 16), i == 0);
    cp.cached.parts.push_back(part);
    cp.fresh.parts.push_back(part);
    if (i < n_images) {
      prompt_part img;
      img.kind = segment_kind::image;
      img.image = i;
      cp.cached.parts.push_back(img);
      cp.fresh.parts.push_back(img);
    }
  }
  return cp;
}

int run_calibrate(const calibrate_options& o) {
  if (o.prompts < 1 || o.images < 1)
    return fail(make_error(errc::invalid_argument, "--prompts and --images must be at least 1"));
  auto be = make_backend("cpu", o.threads);
  if (!be)
    return fail(be.err());
  auto dir = resolve_model(o.model);
  if (!dir)
    return fail(dir.err());
  auto model_cfg = load_model_config(*dir);
  if (!model_cfg)
    return fail(model_cfg.err());
  // The pool holds one calibration prompt (text runs are < 24 tokens).
  const int need = o.images * model_cfg->image_tokens() + 32 * (o.images + 1);
  kv_pool_options pool;
  pool.block_size = 16;
  pool.n_blocks = (need + 15) / 16 + 4;
  auto eng_r = llava_engine::load(o.model, **be, pool);
  if (!eng_r)
    return fail(eng_r.err());
  llava_engine& e = **eng_r;
  const auto& cfg = e.config();
  auto enc = image_encoder::create(**be, cfg, lookup_in(e.weights()));
  if (!enc)
    return fail(enc.err());

  const int n_layers = cfg.text.num_layers;
  std::vector<double> kl(static_cast<size_t>(n_layers), 0.0);
  std::mt19937_64 rng(o.seed);
  const auto full = *parse_policy("full");
  const auto reuse = *parse_policy("full_reuse");
  const auto t0 = std::chrono::steady_clock::now();
  for (int p = 0; p < o.prompts; ++p) {
    auto cp = make_prompt(e, *enc, rng, o.images);
    if (!cp)
      return fail(cp.err());
    auto ref_plan = e.plan(cp->fresh, full);
    if (!ref_plan)
      return fail(ref_plan.err());
    auto ref = e.prefill(*ref_plan);
    if (!ref)
      return fail(ref.err());
    const std::vector<float> ref_logits = std::move(ref->logits);
    ref->sequence.release();
    for (int l = 0; l < n_layers; ++l) {
      // Reuse from layer l on: everything before, full_reuse's set after.
      auto plan = e.plan(cp->cached, reuse);
      if (!plan)
        return fail(plan.err());
      std::vector<int32_t> all(static_cast<size_t>(plan->n_tokens()));
      std::iota(all.begin(), all.end(), 0);
      for (int m = 0; m < l; ++m)
        plan->compute[static_cast<size_t>(m)] = all;
      auto out = e.prefill(*plan);
      if (!out)
        return fail(out.err());
      kl[static_cast<size_t>(l)] += kl_divergence(ref_logits, out->logits) / o.prompts;
    }
    std::fprintf(stderr, "calibrate: prompt %d/%d done\n", p + 1, o.prompts);
  }

  // Weights proportional to each layer's marginal KL, D_l - D_{l+1}, mean
  // 1; a small floor keeps every layer in the budget (a zero, or a
  // negative marginal from noise, would starve it entirely).
  std::vector<double> marginal(kl.size());
  for (size_t i = 0; i < kl.size(); ++i)
    marginal[i] = kl[i] - (i + 1 < kl.size() ? kl[i + 1] : 0.0);
  const double max_m = std::max(0.0, *std::max_element(marginal.begin(), marginal.end()));
  std::vector<double> weights(kl.size());
  for (size_t i = 0; i < kl.size(); ++i)
    weights[i] = std::max(marginal[i], max_m * 0.01 + 1e-12);
  const double mean = std::accumulate(weights.begin(), weights.end(), 0.0) / n_layers;
  for (double& w : weights)
    w /= mean;

  nlohmann::json j;
  j["layer_weights"] = weights;
  j["kl_reuse_from_layer"] = kl;
  j["method"] = "D_l = KL(full || recompute image tokens at layers < l, reuse cached image KV "
                "from layer l on) of the last-token distribution, mean over random multi-image "
                "prompts; weight_l proportional to D_l - D_{l+1}";
  j["prompts"] = o.prompts;
  j["images_per_prompt"] = o.images;
  j["seed"] = o.seed;
  const std::string text = j.dump(2) + "\n";
  const auto path = e.model_dir() / "vlcache_profile.json";
  if (auto s = write_file_atomically(
          path,
          std::span<const uint8_t>{reinterpret_cast<const uint8_t*>(text.data()), text.size()});
      !s)
    return fail(s.err());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%-6s %14s %8s\n", "layer", "kl", "weight");
  for (int l = 0; l < n_layers; ++l)
    std::printf("%-6d %14.6g %8.3f\n", l, kl[static_cast<size_t>(l)],
                weights[static_cast<size_t>(l)]);
  std::printf("wrote %s (%d prompts x %d images, %.1f s)\n", path.c_str(), o.prompts, o.images,
              secs);
  return 0;
}

} // namespace

void add_calibrate_command(CLI::App& app, int* exit_code) {
  CLI::App* model = nullptr;
  try {
    model = app.get_subcommand("model");
  } catch (const CLI::OptionNotFound&) {
    return; // no `model` group in this build: nothing to attach to
  }
  auto opts = std::make_shared<calibrate_options>();
  auto* cmd = model->add_subcommand(
      "calibrate", "Measure per-layer reuse sensitivity and write vlcache_profile.json beside the "
                   "model (used by vlcache:R)");
  cmd->add_option("--model", opts->model, "builtin:tiny, builtin:small or an HF LLaVA directory")
      ->capture_default_str();
  cmd->add_option("--prompts", opts->prompts, "random multi-image prompts to average over")
      ->capture_default_str();
  cmd->add_option("--images", opts->images, "images per prompt")->capture_default_str();
  cmd->add_option("--seed", opts->seed, "seed of the random prompts")->capture_default_str();
  cmd->add_option("--threads", opts->threads, "CPU threads (0 = every core)")
      ->capture_default_str();
  cmd->callback([opts, exit_code] { *exit_code = run_calibrate(*opts); });
}

} // namespace mosaic::cli
