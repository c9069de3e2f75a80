#pragma once

// The two halves of a Llama decoder layer around attention, for any set of
// rows, shared by prefill (rows = a compute set S_l) and decode (rows =
// one token per sequence). Attention itself differs (contiguous working
// KV vs the paged pool) and lives with its caller.

#include <vector>

#include "engine/backend.hpp"
#include "engine/decoder_weights.hpp"
#include "engine/error.hpp"

namespace mosaic {

/// Activation buffers for up to `rows` rows (backend memory).
struct layer_scratch {
  int rows = 0;
  device_buffer x;    // [rows, hidden]     normed input
  device_buffer q;    // [rows, q_dim]
  device_buffer k;    // [rows, kv_dim]
  device_buffer v;    // [rows, kv_dim]
  device_buffer attn; // [rows, q_dim]      attention output
  device_buffer o;    // [rows, hidden]
  device_buffer gate; // [rows, intermediate]
  device_buffer up;   // [rows, intermediate]

  static result<layer_scratch> allocate(backend& be, const text_config& cfg, int rows);
};

/// x = rms_norm(h); q, k, v = projections of x (no RoPE yet).
/// h: [rows, hidden].
void project_qkv(backend& be, const text_config& cfg, const decoder_layer_weights& w,
                 const float* h, int rows, layer_scratch& s);

/// h += o_proj(s.attn); h += down(silu(gate(norm(h))) * up(norm(h))).
/// h: [rows, hidden].
void output_and_mlp(backend& be, const text_config& cfg, const decoder_layer_weights& w, float* h,
                    int rows, layer_scratch& s);

/// Final norm and output projection of `rows` hidden rows, downloaded:
/// logits [rows, vocab].
result<std::vector<float>> compute_logits(backend& be, const decoder_weights& w, const float* h,
                                          int rows);

/// Allocates `n` floats of backend memory.
result<device_buffer> allocate_floats(backend& be, size_t n);
/// Allocates and uploads `values` (int32).
result<device_buffer> upload_ints(backend& be, const std::vector<int32_t>& values);

} // namespace mosaic
