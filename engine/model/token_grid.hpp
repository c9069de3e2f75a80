#pragma once

// An image's token grid under M-RoPE (engine/mrope.hpp), shared by the
// model config (which computes it from an image's size) and the link plan
// (which positions the tokens by it).

namespace mosaic {

/// An image's tokens as M-RoPE lays them out, t x rows x cols (Qwen2-VL:
/// its grid after the 2x2 merge); all 0 for a model with plain RoPE.
struct token_grid {
  int t = 0;
  int rows = 0;
  int cols = 0;
  long long count() const { return static_cast<long long>(t) * rows * cols; }
  friend bool operator==(const token_grid&, const token_grid&) = default;
};

} // namespace mosaic
