#pragma once

// The unit a KV library stores: an image's standalone prefill ("compiled"
// at positions 0..n_tokens-1 with nothing before it), i.e. the projector
// output plus every layer's K (BEFORE RoPE) and V.

#include <cstdint>
#include <vector>

#include "engine/model/token_grid.hpp"

namespace mosaic {

struct compiled_image {
  int n_tokens = 0; ///< image tokens (576 for LLaVA-1.5)
  int n_layers = 0; ///< decoder layers
  int hidden = 0;   ///< decoder hidden size
  int kv_dim = 0;   ///< n_kv_heads * head_dim
  /// M-RoPE models (Qwen2-VL): the token grid the image was compiled with,
  /// from the position origin; {} otherwise.
  token_grid grid{};

  std::vector<float> embeddings; // [n_tokens, hidden]  projector output
  std::vector<float> k;          // [n_layers, n_tokens, kv_dim]  pre-RoPE
  std::vector<float> v;          // [n_layers, n_tokens, kv_dim]

  size_t layer_elems() const { return static_cast<size_t>(n_tokens) * kv_dim; }
  const float* k_layer(int l) const { return k.data() + layer_elems() * l; }
  const float* v_layer(int l) const { return v.data() + layer_elems() * l; }
  float* k_layer(int l) { return k.data() + layer_elems() * l; }
  float* v_layer(int l) { return v.data() + layer_elems() * l; }
  /// Allocates the arrays for the given geometry.
  void resize(int tokens, int layers, int hidden_size, int kv) {
    n_tokens = tokens;
    n_layers = layers;
    hidden = hidden_size;
    kv_dim = kv;
    embeddings.assign(static_cast<size_t>(tokens) * hidden_size, 0.0f);
    k.assign(layer_elems() * layers, 0.0f);
    v.assign(layer_elems() * layers, 0.0f);
  }
};

} // namespace mosaic
