// `mosaic model init --preset tiny|small|tiny-next|small-next|tiny-qwen2vl|... --out DIR`:
// write a built-in model
// as an HF LLaVA directory. `mosaic model info MODEL`: config summary,
// parameter count and fingerprint of a model (builtin:NAME or a directory).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.hpp"
#include "engine/model/builtin_model.hpp"
#include "engine/model/model_config.hpp"
#include "engine/model/tokenizer.hpp"
#include "engine/model/weights.hpp"

namespace mosaic::cli {

namespace {

struct model_init_options {
  std::string preset = "small";
  std::string out;
};

int fail(const error& e) {
  std::fprintf(stderr, "mosaic model: %s\n", e.to_string().c_str());
  return 1;
}

int run_model_init(const model_init_options& opts) {
  auto preset = parse_builtin_preset(opts.preset);
  if (!preset)
    return fail(preset.err());
  auto start = std::chrono::steady_clock::now();
  if (auto s = write_builtin_model(*preset, opts.out); !s)
    return fail(s.err());
  auto fp = compute_model_fingerprint(opts.out);
  if (!fp)
    return fail(fp.err());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote builtin:%s to %s in %.1f s\nfingerprint %s\n", to_string(*preset),
              opts.out.c_str(), secs, to_hex(*fp).c_str());
  return 0;
}

int run_model_info(const std::string& spec) {
  auto dir = resolve_model(spec);
  if (!dir)
    return fail(dir.err());
  auto cfg = load_model_config(*dir);
  if (!cfg)
    return fail(cfg.err());
  auto weights = model_weights::load(*dir, *cfg);
  if (!weights)
    return fail(weights.err());
  auto tok = tokenizer::load(*dir, *cfg);
  if (!tok)
    return fail(tok.err());
  const auto& v = cfg->vision;
  const auto& t = cfg->text;
  std::printf("model        %s\ndirectory    %s\n", spec.c_str(), dir->c_str());
  if (cfg->qwen_vl()) {
    std::printf("vision       %s ViT: patch %d, merge %dx%d, hidden %d, %d blocks, %d heads, "
                "mlp %d (%s), %s\n",
                cfg->qwen25_vl() ? "Qwen2.5-VL" : "Qwen2-VL", v.patch_size, v.spatial_merge_size,
                v.spatial_merge_size, v.hidden_size, v.num_layers, v.num_heads, v.intermediate_size,
                v.hidden_act.c_str(), v.window_size > 0 ? "windowed attention" : "full attention");
    std::printf("merger       %d -> %d\n",
                v.hidden_size * v.spatial_merge_size * v.spatial_merge_size, v.out_hidden_size);
  } else {
    std::printf("vision       CLIP ViT: %d px, patch %d, hidden %d, %d layers (%d run, feature "
                "layer %d, %s), %d heads, mlp %d\n",
                v.image_size, v.patch_size, v.hidden_size, v.num_layers, v.layers_to_run(),
                v.feature_layer, v.feature_select.c_str(), v.num_heads, v.intermediate_size);
    std::printf("projector    2-layer MLP (%s), %d -> %d\n", cfg->projector_hidden_act.c_str(),
                v.hidden_size, t.hidden_size);
  }
  std::printf("text         %s: hidden %d, %d layers, %d heads / %d kv heads (head dim %d), "
              "mlp %d, vocab %d, max positions %d, rope theta %g%s\n",
              t.model_type.c_str(), t.hidden_size, t.num_layers, t.num_heads, t.num_kv_heads,
              t.head_dim(), t.intermediate_size, t.vocab_size, t.max_position_embeddings,
              static_cast<double>(t.rope_theta), t.tie_word_embeddings ? ", tied embeddings" : "");
  if (t.mrope())
    std::printf("rope         M-RoPE, sections %d/%d/%d (temporal/height/width)\n",
                t.mrope_section[0], t.mrope_section[1], t.mrope_section[2]);
  if (cfg->qwen_vl())
    std::printf("image        dynamic resolution: %d to %d tokens per image by its size "
                "(%d to %d pixels), image token id %d\n",
                std::max(1, cfg->vision.min_pixels / (v.image_size * v.image_size)),
                cfg->image_tokens(), cfg->vision.min_pixels, cfg->vision.max_pixels,
                cfg->image_token_index);
  else if (cfg->anyres())
    std::printf("image        anyres (LLaVA-1.6): up to %d tokens per image by its size (%d of "
                "the base view), %zu grids, image token id %d\n",
                cfg->image_tokens(), cfg->view_tokens(), cfg->vision.grid_pinpoints.size(),
                cfg->image_token_index);
  else
    std::printf("image        %d tokens per image, image token id %d\n", cfg->image_tokens(),
                cfg->image_token_index);
  std::printf("tokenizer    %d %s, vocab %d, bos %d, eos %d\n", tok->sp_vocab_size(),
              cfg->qwen_vl() ? "byte-level BPE tokens" : "SentencePiece pieces", tok->vocab_size(),
              tok->bos_id(), tok->eos_id());
  std::printf("parameters   %lld (%.1f M)\n", static_cast<long long>(weights->parameter_count()),
              static_cast<double>(weights->parameter_count()) / 1e6);
  std::printf("fingerprint  %s\n", to_hex(weights->fingerprint()).c_str());
  return 0;
}

} // namespace

CLI::App* add_model_command(CLI::App& app, int* exit_code) {
  auto* model = app.add_subcommand("model", "Create and inspect models");
  model->require_subcommand(1);

  auto* init = model->add_subcommand(
      "init", "Write a built-in model (generated from a fixed seed) as an HF LLaVA directory");
  auto init_opts = std::make_shared<model_init_options>();
  init->add_option("--preset", init_opts->preset,
                   "tiny (tests) or small (demos, benchmarks), LLaVA-1.5; tiny-next, small-next: "
                   "the same as LLaVA-1.6 (anyres, Mistral); tiny-qwen2vl, small-qwen2vl, "
                   "tiny-qwen25vl, small-qwen25vl: Qwen2-VL / Qwen2.5-VL (M-RoPE)")
      ->check(CLI::IsMember({"tiny", "small", "tiny-next", "small-next", "tiny-qwen2vl",
                             "small-qwen2vl", "tiny-qwen25vl", "small-qwen25vl"}))
      ->capture_default_str();
  init->add_option("--out", init_opts->out, "output directory (created if missing)")->required();
  init->callback([init_opts, exit_code] { *exit_code = run_model_init(*init_opts); });

  auto* info = model->add_subcommand(
      "info", "Print a model's configuration, parameter count and fingerprint");
  auto spec = std::make_shared<std::string>();
  info->add_option("MODEL", *spec, "builtin:tiny, builtin:small or an HF LLaVA directory")
      ->required();
  info->callback([spec, exit_code] { *exit_code = run_model_info(*spec); });
  return model;
}

} // namespace mosaic::cli
