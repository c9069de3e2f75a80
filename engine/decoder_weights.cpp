#include "engine/decoder_weights.hpp"

#include <initializer_list>
#include <string>

namespace mosaic {

result<decoder_weights> upload_decoder_weights(backend& be, const text_config& cfg,
                                               const weight_lookup& lookup) {
  decoder_weights w;
  w.config = cfg;
  const int64_t h = cfg.hidden_size;
  const int64_t q_dim = static_cast<int64_t>(cfg.num_heads) * cfg.head_dim();
  const int64_t kv = cfg.kv_dim();
  const int64_t ff = cfg.intermediate_size;
  const int64_t vocab = cfg.vocab_size;
  const std::string prefix = "language_model.model.";

  auto up = [&](device_buffer& dst, std::string_view name, std::initializer_list<int64_t> shape) {
    return upload_weight_into(dst, be, lookup, name, shape);
  };

  MOSAIC_TRY(up(w.embed_tokens, prefix + "embed_tokens.weight", {vocab, h}));
  MOSAIC_TRY(up(w.final_norm, prefix + "norm.weight", {h}));
  // Tied embeddings: the output projection reads embed_tokens (no copy).
  if (!cfg.tie_word_embeddings)
    MOSAIC_TRY(up(w.lm_head, "language_model.lm_head.weight", {vocab, h}));
  w.layers.resize(static_cast<size_t>(cfg.num_layers));
  for (int l = 0; l < cfg.num_layers; ++l) {
    auto& L = w.layers[static_cast<size_t>(l)];
    const std::string p = prefix + "layers." + std::to_string(l) + ".";
    MOSAIC_TRY(up(L.attn_norm, p + "input_layernorm.weight", {h}));
    MOSAIC_TRY(up(L.q_proj, p + "self_attn.q_proj.weight", {q_dim, h}));
    MOSAIC_TRY(up(L.k_proj, p + "self_attn.k_proj.weight", {kv, h}));
    MOSAIC_TRY(up(L.v_proj, p + "self_attn.v_proj.weight", {kv, h}));
    MOSAIC_TRY(up(L.o_proj, p + "self_attn.o_proj.weight", {h, q_dim}));
    if (cfg.attention_bias) {
      MOSAIC_TRY(up(L.q_bias, p + "self_attn.q_proj.bias", {q_dim}));
      MOSAIC_TRY(up(L.k_bias, p + "self_attn.k_proj.bias", {kv}));
      MOSAIC_TRY(up(L.v_bias, p + "self_attn.v_proj.bias", {kv}));
    }
    MOSAIC_TRY(up(L.mlp_norm, p + "post_attention_layernorm.weight", {h}));
    MOSAIC_TRY(up(L.gate_proj, p + "mlp.gate_proj.weight", {ff, h}));
    MOSAIC_TRY(up(L.up_proj, p + "mlp.up_proj.weight", {ff, h}));
    MOSAIC_TRY(up(L.down_proj, p + "mlp.down_proj.weight", {h, ff}));
  }
  return w;
}

} // namespace mosaic
