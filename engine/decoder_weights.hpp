#pragma once

// The Llama decoder's weights in backend memory, uploaded once from host
// tensors under their canonical HF LLaVA names
// (`language_model.model.layers.{i}.self_attn.q_proj.weight`, ...).

#include <vector>

#include "engine/backend.hpp"
#include "engine/error.hpp"
#include "engine/model/model_config.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic {

/// One decoder layer. Linear weights are PyTorch Linear layout [out, in].
struct decoder_layer_weights {
  device_buffer attn_norm; // [hidden]
  device_buffer q_proj;    // [n_heads * head_dim, hidden]
  device_buffer k_proj;    // [kv_dim, hidden]
  device_buffer v_proj;    // [kv_dim, hidden]
  device_buffer o_proj;    // [hidden, n_heads * head_dim]
  /// Qwen2 (text_config::attention_bias): biases of q, k and v; empty
  /// otherwise.
  device_buffer q_bias;    // [n_heads * head_dim]
  device_buffer k_bias;    // [kv_dim]
  device_buffer v_bias;    // [kv_dim]
  device_buffer mlp_norm;  // [hidden]
  device_buffer gate_proj; // [intermediate, hidden]
  device_buffer up_proj;   // [intermediate, hidden]
  device_buffer down_proj; // [hidden, intermediate]
};

/// The whole decoder.
struct decoder_weights {
  text_config config;
  device_buffer embed_tokens; // [vocab, hidden]
  std::vector<decoder_layer_weights> layers;
  device_buffer final_norm; // [hidden]
  device_buffer lm_head;    // [vocab, hidden]; empty when tied to embed_tokens

  /// The output projection (lm_head, or embed_tokens when tied).
  const float* output_weight() const {
    return lm_head.empty() ? embed_tokens.f32() : lm_head.f32();
  }
};

/// Uploads the decoder tensors found through `lookup` to `be`, checking
/// every shape against `cfg`. Errors name the tensor and both shapes.
result<decoder_weights> upload_decoder_weights(backend& be, const text_config& cfg,
                                               const weight_lookup& lookup);

} // namespace mosaic
