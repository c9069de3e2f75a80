#pragma once

// A model loaded for the engine benchmarks: config, host weights, a CPU
// backend, the decoder weights and image encoder on it, and a KV pool.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <string_view>
#include <vector>

#include "engine/backend.hpp"
#include "engine/decoder_weights.hpp"
#include "engine/error.hpp"
#include "engine/image_encoder.hpp"
#include "engine/kv_pool.hpp"
#include "engine/model/model_config.hpp"
#include "engine/model/weights.hpp"

namespace mosaic::bench {

struct bench_model {
  std::filesystem::path dir;
  model_config cfg;
  std::unique_ptr<model_weights> weights;
  std::unique_ptr<backend> be;
  std::unique_ptr<decoder_weights> decoder;
  std::unique_ptr<image_encoder> encoder;
  std::unique_ptr<kv_pool> pool;

  /// Decoder linear-layer parameters (q, k, v, o, gate, up, down of every
  /// layer): each prompt token costs 2x this many FLOPs in them.
  int64_t decoder_linear_params() const;
  /// FLOPs of attention QK^T and PV over `pairs` (query, key) pairs, summed
  /// over layers and heads.
  double attention_flops(double pairs) const;
  /// Random RGB pixels through the image encoder: [tokens, hidden]; a
  /// square of the tower's size, or for anyres a 4:3 photo (640 x 480 at
  /// 336-px tiles: 2,340 tokens on builtin:small-next), or for Qwen2-VL a
  /// 1280 x 960 photo (1,230 tokens on builtin:small-qwen2vl, whose
  /// max_pixels is Qwen's default). Sets `last_grid` (M-RoPE models).
  result<std::vector<float>> random_image_embeddings(std::mt19937& rng);
  /// The token grid of the last random image ({} without M-RoPE).
  token_grid last_grid{};
  /// `n` random text token ids from the SentencePiece range (no specials).
  std::vector<int32_t> random_text(std::mt19937& rng, int n) const;
};

/// Vision tower + projector FLOPs of one view (LLaVA-1.5: one image;
/// multiply-adds x 2).
double vision_flops(const model_config& c);

/// Resolves `spec` ("builtin:small"), loads it onto a CPU backend with
/// `threads` threads, with a KV pool holding `pool_tokens` tokens.
result<bench_model> load_bench_model(std::string_view spec, int threads, int pool_tokens);

} // namespace mosaic::bench
