#include "engine/stage_scheduler.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

namespace mosaic {

size_t memory_model::kv_bytes(int tokens) const noexcept {
  const size_t bs = static_cast<size_t>(std::max(1, block_size));
  const size_t blocks = (static_cast<size_t>(std::max(0, tokens)) + bs - 1) / bs;
  return blocks * bs * kv_bytes_per_token;
}

memory_model make_memory_model(const text_config& cfg, const kv_pool_stats& pool,
                               size_t budget_bytes, size_t weight_bytes) {
  const size_t h = static_cast<size_t>(cfg.hidden_size);
  const size_t qd = static_cast<size_t>(cfg.num_heads) * static_cast<size_t>(cfg.head_dim());
  const size_t kv = static_cast<size_t>(cfg.kv_dim());
  const size_t ff = static_cast<size_t>(cfg.intermediate_size);
  const size_t f = sizeof(float);
  memory_model m;
  m.budget_bytes = budget_bytes;
  m.weight_bytes = weight_bytes;
  m.block_size = std::max(1, pool.block_size);
  m.kv_bytes_per_token = pool.bytes_per_block / static_cast<size_t>(m.block_size);
  // hidden + layer_scratch row (x, q, k, v, attn, o, gate, up) + working K, V.
  m.prefill_act_bytes_per_token = f * (3 * h + 2 * qd + 4 * kv + 2 * ff);
  // The gathered K and V of a layer per prompt token (scores are host side).
  m.compress_act_bytes_per_token = f * 2 * kv;
  // One row of the above plus its logits.
  m.decode_act_bytes_per_seq =
      f * (3 * h + 2 * qd + 2 * kv + 2 * ff + static_cast<size_t>(cfg.vocab_size));
  return m;
}

size_t decoder_weight_bytes(const text_config& cfg) noexcept {
  const size_t h = static_cast<size_t>(cfg.hidden_size);
  const size_t qd = static_cast<size_t>(cfg.num_heads) * static_cast<size_t>(cfg.head_dim());
  const size_t kv = static_cast<size_t>(cfg.kv_dim());
  const size_t ff = static_cast<size_t>(cfg.intermediate_size);
  const size_t v = static_cast<size_t>(cfg.vocab_size);
  const size_t layer = 2 * h + 2 * qd * h + 2 * kv * h + 3 * ff * h;
  return sizeof(float) * (v * h * (cfg.tie_word_embeddings ? 1 : 2) + h +
                          static_cast<size_t>(cfg.num_layers) * layer);
}

float kv_keep_fraction(const compression_spec& spec, int image_tokens, int text_tokens,
                       learned_groups groups) noexcept {
  const int total = image_tokens + text_tokens;
  if (!spec.enabled() || total <= 0)
    return 1.0f;
  if (spec.method == compression_method::learned) {
    if (!groups.known())
      return 1.0f;
    auto rows = [](int n, int g) { return n / g + n % g; };
    const int kept = rows(image_tokens, groups.image) + rows(text_tokens, groups.text);
    return std::min(1.0f, static_cast<float>(kept) / static_cast<float>(total));
  }
  int must_text = std::min(text_tokens, 1);
  if (spec.method == compression_method::snapkv)
    must_text = std::min(text_tokens, spec.window);
  const int kept = kept_count(image_tokens, spec.image_ratio) +
                   std::max(kept_count(text_tokens, spec.text_ratio), must_text);
  return std::min(1.0f, static_cast<float>(kept) / static_cast<float>(total));
}

} // namespace mosaic
