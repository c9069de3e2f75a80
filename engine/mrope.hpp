#pragma once

// Qwen2-VL's multimodal rotary embedding (M-RoPE), as HF transformers
// computes it (Qwen2VLForConditionalGeneration.get_rope_index,
// apply_multimodal_rotary_pos_emb).
//
// Every token has three position components, (temporal, height, width).
// A text token has the same value in all three; an image of
// t x (h/merge) x (w/merge) tokens starts at s = (the largest position so
// far) + 1 and gives token (i, j, k) the components (s + i, s + j, s + k).
// The text after the image continues from s + max(t', h', w'), + 1: the
// image takes fewer positions than tokens. The head's frequencies are cut
// into three sections (mrope_section, e.g. 16/24/24 of 64), each rotated by
// its own component.
//
// Moving a cached image: every component of every image token moves by the
// same amount d = s_new - s_old, so each section's rotation moves by d, and
// a key rotated at the old place is placed at the new one by the ordinary
// 1-D rotation by d (backend::rope with pos = d) — the same re-rotation
// as for Llama's RoPE. What differs is the text after the image, which
// continues from the image's largest position + 1, not from its token count.

#include <cstdint>
#include <span>
#include <vector>

#include "engine/error.hpp"
#include "engine/model/qwen2vl_image.hpp" // vision_grid

namespace mosaic {

struct mrope_positions {
  std::vector<int32_t> t, h, w; ///< per token
  int32_t next = 0;             ///< the next token's position: largest + 1
  int32_t delta = 0;            ///< next - token count (HF's rope delta)
};

/// get_rope_index for a prompt whose images are runs of image_token_id,
/// one run per grid, in order, each t * (h / merge) * (w / merge) long.
/// A run of another length, a grid not divisible by merge, or more or
/// fewer runs than grids → invalid_argument.
result<mrope_positions> mrope_position_ids(std::span<const int32_t> ids, int32_t image_token_id,
                                           std::span<const vision_grid> images, int merge);

/// apply_multimodal_rotary_pos_emb in place: x [rows, n_heads * head_dim]
/// (rotate_half pairing, i with i + head_dim / 2); frequency f uses the
/// component of the section it falls in (section sums to head_dim / 2).
/// Sections that do not sum to head_dim / 2 → invalid_argument.
status mrope_rotate(float* x, const mrope_positions& pos, int rows, int n_heads, int head_dim,
                    std::span<const int> section, float theta);

} // namespace mosaic
