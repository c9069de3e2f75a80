#pragma once

// The vision tower of Qwen2-VL and Qwen2.5-VL (HF
// Qwen2VisionTransformerPretrainedModel and
// Qwen2_5_VisionTransformerPretrainedModel), run through the backend:
//
//   patch embedding: a Conv3d over temporal_patch x patch x patch, no bias
//     (one matmul over preprocess_qwen2vl's rows);
//   blocks: x += proj(attention(rope2d(qkv(norm1(x))))); x += mlp(norm2(x)),
//     with the 2-D RoPE of each patch's (row, column) in the head's two
//     halves of frequencies. Qwen2-VL: LayerNorm, fc1 / quick_gelu / fc2,
//     every block attends over the whole image. Qwen2.5-VL: RMSNorm, SwiGLU
//     (gate, up, down, with biases), and attention inside windows of
//     window_size pixels except in fullatt_block_indexes; the patches are
//     regrouped window by window for the blocks and put back after the
//     merger, as HF does;
//   merger: norm (LayerNorm / RMSNorm), then every 2x2 group of patches
//     (consecutive rows) concatenated, Linear, GELU, Linear to the
//     decoder's hidden size.
//
// The output rows are an image's tokens in the prompt, in raster order of
// the merged grid (t x h/2 x w/2).

#include <functional>
#include <span>
#include <vector>

#include "engine/backend.hpp"
#include "engine/error.hpp"
#include "engine/model/model_config.hpp"
#include "engine/model/qwen2vl_image.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic {

class qwen_vision {
public:
  /// Uploads `visual.*` (canonical names) for cfg (model_config::qwen_vl()).
  /// The backend must outlive the tower.
  static result<qwen_vision> create(backend& be, const model_config& cfg,
                                    const weight_lookup& lookup);

  /// Width of an output row (the decoder's hidden size).
  int out_dim() const { return cfg_.vision.out_hidden_size; }

  /// Encodes one image's patches ([grid.t * grid.h * grid.w,
  /// 3 * temporal_patch * patch * patch], preprocess_qwen2vl's rows) into
  /// [grid.t * grid.h/m * grid.w/m, out_dim()] (host). `between_blocks`,
  /// when set, runs between two blocks with the backend idle (a node lets a
  /// waiting decode step go first); its error stops the encode.
  result<std::vector<float>> encode(std::span<const float> patches, const vision_grid& grid,
                                    const std::function<status()>& between_blocks = {});

  /// Qwen2.5-VL's window grouping of an image's merged units (HF
  /// get_window_index): `order[j]` is the unit at place j when units are
  /// taken window by window, `window_units` the units of each window.
  struct windows {
    std::vector<int32_t> order;
    std::vector<int> window_units;
  };
  static windows window_order(const vision_grid& grid, int merge, int window_units_per_side);

private:
  struct block {
    device_buffer norm1_w, norm1_b; // [E] (no bias with RMSNorm)
    device_buffer qkv_w, qkv_b;     // [3E, E], [3E]
    device_buffer proj_w, proj_b;   // [E, E], [E]
    device_buffer norm2_w, norm2_b; // [E]
    device_buffer fc1_w, fc1_b;     // Qwen2-VL: [I, E], [I];  Qwen2.5-VL: gate
    device_buffer up_w, up_b;       // Qwen2.5-VL: [I, E], [I]
    device_buffer fc2_w, fc2_b;     // [E, I], [E] (Qwen2.5-VL: down)
  };

  qwen_vision(backend& be, const model_config& cfg) : be_(&be), cfg_(cfg) {}
  bool rms() const { return cfg_.qwen25_vl(); }
  void norm(const float* x, const device_buffer& w, const device_buffer& b, float* y,
            int rows) const;

  backend* be_;
  model_config cfg_;
  device_buffer patch_w_; // [E, 3 * temporal * patch * patch]
  std::vector<block> blocks_;
  device_buffer ln_q_w_, ln_q_b_; // [E]
  device_buffer mlp0_w_, mlp0_b_; // [4E, 4E], [4E]
  device_buffer mlp2_w_, mlp2_b_; // [out, 4E], [out]
};

} // namespace mosaic
