#pragma once

// Qwen2-VL / Qwen2.5-VL image preprocessing, as HF transformers'
// Qwen2VLImageProcessor computes it: smart_resize (each side a multiple of
// patch x merge, the area within [min_pixels, max_pixels], the aspect
// ratio kept as closely as that allows), Pillow's bicubic resize, rescale
// and normalise, the frame repeated to the temporal patch, and the pixels
// flattened patch by patch in the order the vision tower's 2x2 merger
// reads them.

#include <utility>
#include <vector>

#include "engine/error.hpp"
#include "engine/model/image.hpp"
#include "engine/model/token_grid.hpp"

namespace mosaic {

/// An image's grid in vision patches before the spatial merge (HF
/// image_grid_thw).
struct vision_grid {
  int t = 1;
  int h = 0;
  int w = 0;
};

struct qwen2vl_image_config {
  int patch_size = 14;
  int merge_size = 2;
  int temporal_patch_size = 2;
  int min_pixels = 56 * 56;
  int max_pixels = 28 * 28 * 1280;
  float image_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
  float image_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
};

/// HF smart_resize: (height, width) after resizing. A side shorter than
/// `factor`, or an aspect ratio over 200 → invalid_argument (HF raises).
result<std::pair<int, int>> smart_resize(int height, int width, int factor, int min_pixels,
                                         int max_pixels);

struct qwen2vl_pixels {
  /// [grid.t * grid.h * grid.w, 3 * temporal_patch * patch * patch]
  std::vector<float> values;
  vision_grid grid; ///< in patches, before the merge (image_grid_thw)
};

result<qwen2vl_pixels> preprocess_qwen2vl(const decoded_image& image,
                                          const qwen2vl_image_config& cfg);

} // namespace mosaic
