#pragma once

// LLaVA-1.6 (LLaVA-NeXT) "anyres" image geometry, as HF transformers'
// LlavaNextImageProcessor, LlavaNextProcessor and
// LlavaNextForConditionalGeneration.pack_image_features compute it:
//
// 1. The grid: of the configured resolutions (image_grid_pinpoints, each
//    (height, width), multiples of the vision tower's image size), the one
//    that keeps the most of the image's pixels, then wastes the fewest.
// 2. The views: the whole image squashed to image_size² (the base view),
//    then the image resized into the grid resolution keeping its aspect
//    ratio, padded with black to it (centred) and cut into image_size²
//    tiles, row by row. Each view then gets LLaVA-1.5's CLIP preprocessing.
// 3. The features: the base view's patch features, then the tiles' patch
//    features laid out as one (rows·P) × (cols·P) grid, with the rows or
//    columns that only show padding removed, and the image_newline vector
//    after every remaining row.
//
// So an image's token count depends on its size: anyres_feature_count.

#include <span>
#include <utility>
#include <vector>

#include "engine/model/image.hpp"
#include "engine/model/model_config.hpp"

namespace mosaic {

/// (height, width) in pixels.
using resolution = std::pair<int, int>;

/// HF select_best_resolution: the pinpoint that keeps the most of an
/// image of height × width pixels when scaled into it, ties broken by
/// the least wasted area; the first such in list order. Empty list → (0, 0).
resolution select_best_resolution(int height, int width, std::span<const resolution> pinpoints);

/// The tile grid of an image: the best resolution and its rows × columns
/// of tile_size² tiles.
struct anyres_grid {
  resolution best{0, 0};
  int rows = 0;
  int cols = 0;
  int tiles() const { return rows * cols; }
};

/// Grid resolutions that are not positive multiples of tile_size, an
/// empty list, an empty image, or an image so thin that every grid would
/// hold none of its rows (HF raises there too) → invalid_argument.
result<anyres_grid> anyres_grid_for(int height, int width, std::span<const resolution> pinpoints,
                                    int tile_size);

/// The views an image is encoded as, before CLIP preprocessing: the base
/// view (the whole image resized to tile_size², aspect not kept), then the
/// tiles row by row. A tile at the bottom or right edge can be one pixel
/// short where HF's centred padding is odd (as HF produces it); the CLIP
/// preprocessing resizes and crops it back to tile_size².
result<std::vector<decoded_image>>
anyres_views(const decoded_image& image, std::span<const resolution> pinpoints, int tile_size);

/// Every view through LLaVA-1.5's CLIP preprocessing (preprocess_image):
/// [1 + tiles, 3, image_size, image_size].
result<std::vector<float>> preprocess_anyres(const decoded_image& image,
                                             std::span<const resolution> pinpoints,
                                             const vision_config& cfg);

/// The part of the (rows·P) × (cols·P) feature grid that shows the image:
/// rows [top, top + height) and columns [left, left + width).
struct unpadded_region {
  int top = 0;
  int left = 0;
  int height = 0;
  int width = 0;
};

/// HF unpad_image on a grid of grid_height × grid_width features for an
/// image of image_height × image_width pixels.
unpadded_region unpad_region(int image_height, int image_width, int grid_height, int grid_width);

/// Image tokens of one image (an image too thin to cover a row of
/// features in its grid → invalid_argument): P² of the base view, then the unpadded
/// region's features plus one newline per row (P = image_size /
/// patch_size; the class token is never counted, as for
/// feature_select "default"; "full" adds one per view and is refused by
/// pack_anyres_features).
result<int> anyres_feature_count(int image_height, int image_width,
                                 std::span<const resolution> pinpoints, const vision_config& cfg);

/// pack_image_features for one image: features [1 + tiles, P², dim]
/// (the projector's output per view, in the order of anyres_views),
/// newline [dim] → [anyres_feature_count, dim]. Wrong sizes →
/// invalid_argument.
result<std::vector<float>> pack_anyres_features(std::span<const float> features,
                                                std::span<const float> newline, int dim,
                                                int image_height, int image_width,
                                                std::span<const resolution> pinpoints,
                                                const vision_config& cfg);

} // namespace mosaic
