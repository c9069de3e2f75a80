#pragma once

// An image's token grid under M-RoPE (engine/mrope.hpp), shared by the
// model config (which computes it from an image's size) and the link plan
// (which positions the tokens by it).

#include <limits>

namespace mosaic {

/// An image's tokens as M-RoPE lays them out, t x rows x cols (Qwen2-VL:
/// its grid after the 2x2 merge); all 0 for a model with plain RoPE.
struct token_grid {
  int t = 0;
  int rows = 0;
  int cols = 0;
  /// t * rows * cols; -1 when a side is negative or the product would not
  /// fit (a grid read from a file or a message can hold anything).
  long long count() const {
    if (t < 0 || rows < 0 || cols < 0)
      return -1;
    const long long tr = static_cast<long long>(t) * rows; // < 2^62
    if (cols > 0 && tr > std::numeric_limits<long long>::max() / cols)
      return -1;
    return tr * cols;
  }
  friend bool operator==(const token_grid&, const token_grid&) = default;
};

} // namespace mosaic
