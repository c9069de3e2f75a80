// LLaVA-NeXT anyres geometry; each function names the HF code it follows
// (transformers 4.49: image_processing_utils.select_best_resolution,
// image_processing_llava_next, processing_llava_next,
// modeling_llava_next.unpad_image / pack_image_features).

#include "engine/model/anyres.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace mosaic {

namespace {

// int(round(x, 7)) of Python for x ≥ 0: round to 7 decimals, then
// truncate. x + 5e-8 floors the same way but where x lies within a rounding
// error of an exact tie at the 8th decimal, which grid sizes never reach.
int py_int_round7(double x) {
  return static_cast<int>(std::floor(x + 5e-8));
}

// _get_patch_output_size: the size the image is resized to inside `target`.
resolution fit_inside(int height, int width, resolution target) {
  const auto [th, tw] = target;
  const double scale_w = static_cast<double>(tw) / width;
  const double scale_h = static_cast<double>(th) / height;
  if (scale_w < scale_h)
    return {std::min(static_cast<int>(std::ceil(height * scale_w)), th), tw};
  return {th, std::min(static_cast<int>(std::ceil(width * scale_h)), tw)};
}

decoded_image crop(const decoded_image& src, int x0, int y0, int w, int h) {
  decoded_image out;
  out.width = w;
  out.height = h;
  out.rgb.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    std::copy_n(src.rgb.begin() + (static_cast<ptrdiff_t>(y0 + y) * src.width + x0) * 3,
                static_cast<size_t>(w) * 3, out.rgb.begin() + static_cast<ptrdiff_t>(y) * w * 3);
  return out;
}

// An image whose unpadded feature grid has no row or no column: HF's
// pack_image_features fails on it (and its processor already misreads a
// resized 1-px-high view as channels-first).
error too_thin(int height, int width) {
  return make_error(errc::invalid_argument, "image of ", std::to_string(width), "x",
                    std::to_string(height),
                    " px is too thin: it covers no row of features in any grid resolution");
}

} // namespace

resolution select_best_resolution(int height, int width, std::span<const resolution> pinpoints) {
  resolution best{0, 0};
  if (height <= 0 || width <= 0)
    return best;
  long long max_effective = 0;
  long long min_wasted = std::numeric_limits<long long>::max();
  for (const auto& [h, w] : pinpoints) {
    const double scale = std::min(static_cast<double>(w) / width, static_cast<double>(h) / height);
    const auto down_w = static_cast<long long>(width * scale);
    const auto down_h = static_cast<long long>(height * scale);
    const long long effective = std::min(down_w * down_h, static_cast<long long>(width) * height);
    const long long wasted = static_cast<long long>(w) * h - effective;
    if (effective > max_effective || (effective == max_effective && wasted < min_wasted)) {
      max_effective = effective;
      min_wasted = wasted;
      best = {h, w};
    }
  }
  return best;
}

result<anyres_grid> anyres_grid_for(int height, int width, std::span<const resolution> pinpoints,
                                    int tile_size) {
  if (height <= 0 || width <= 0 || tile_size <= 0 || pinpoints.empty())
    return make_error(errc::invalid_argument, "anyres: empty image, tile or grid list");
  for (const auto& [h, w] : pinpoints)
    if (h <= 0 || w <= 0 || h % tile_size != 0 || w % tile_size != 0 || h > (1 << 15) ||
        w > (1 << 15))
      return make_error(errc::invalid_argument, "anyres: grid resolution ", std::to_string(h), "x",
                        std::to_string(w), " is not a multiple of the vision tower's ",
                        std::to_string(tile_size), " px");
  anyres_grid g;
  g.best = select_best_resolution(height, width, pinpoints);
  if (g.best.first == 0) // no pinpoint at all; guarded above
    return make_error(errc::invalid_argument, "anyres: no grid resolution");
  g.rows = g.best.first / tile_size;
  g.cols = g.best.second / tile_size;
  return g;
}

result<std::vector<decoded_image>>
anyres_views(const decoded_image& image, std::span<const resolution> pinpoints, int tile_size) {
  auto grid = anyres_grid_for(image.height, image.width, pinpoints, tile_size);
  if (!grid)
    return std::move(grid).err();
  std::vector<decoded_image> views;
  views.reserve(1 + static_cast<size_t>(grid->tiles()));
  views.push_back(resize_bicubic(image, tile_size, tile_size));
  // _resize_for_patching, then _pad_for_patching: the same padding on
  // both sides, (target - size) // 2, so an odd remainder leaves the padded
  // image one pixel short of the target.
  const auto [rh, rw] = fit_inside(image.height, image.width, grid->best);
  const decoded_image resized = resize_bicubic(image, rw, rh);
  const int pad_y = (grid->best.first - rh) / 2;
  const int pad_x = (grid->best.second - rw) / 2;
  decoded_image padded;
  padded.width = rw + 2 * pad_x;
  padded.height = rh + 2 * pad_y;
  padded.rgb.assign(static_cast<size_t>(padded.width) * padded.height * 3, 0);
  for (int y = 0; y < rh; ++y)
    std::copy_n(
        resized.rgb.begin() + static_cast<ptrdiff_t>(y) * rw * 3, static_cast<size_t>(rw) * 3,
        padded.rgb.begin() + (static_cast<ptrdiff_t>(pad_y + y) * padded.width + pad_x) * 3);
  // divide_to_patches: row by row; edge tiles keep what is left.
  for (int y = 0; y < padded.height; y += tile_size)
    for (int x = 0; x < padded.width; x += tile_size)
      views.push_back(crop(padded, x, y, std::min(tile_size, padded.width - x),
                           std::min(tile_size, padded.height - y)));
  return views;
}

result<std::vector<float>> preprocess_anyres(const decoded_image& image,
                                             std::span<const resolution> pinpoints,
                                             const vision_config& cfg) {
  auto views = anyres_views(image, pinpoints, cfg.image_size);
  if (!views)
    return std::move(views).err();
  std::vector<float> out;
  for (const auto& view : *views) {
    const auto chw = preprocess_image(view, cfg);
    out.insert(out.end(), chw.begin(), chw.end());
  }
  return out;
}

unpadded_region unpad_region(int image_height, int image_width, int grid_height, int grid_width) {
  unpadded_region r{0, 0, grid_height, grid_width};
  const double original_aspect = static_cast<double>(image_width) / image_height;
  const double current_aspect = static_cast<double>(grid_width) / grid_height;
  if (original_aspect > current_aspect) {
    const double scale = static_cast<double>(grid_width) / image_width;
    const int new_height = py_int_round7(image_height * scale);
    const int padding = (grid_height - new_height) / 2;
    r.top = padding;
    r.height = grid_height - 2 * padding;
  } else {
    const double scale = static_cast<double>(grid_height) / image_height;
    const int new_width = py_int_round7(image_width * scale);
    const int padding = (grid_width - new_width) / 2;
    r.left = padding;
    r.width = grid_width - 2 * padding;
  }
  return r;
}

result<int> anyres_feature_count(int image_height, int image_width,
                                 std::span<const resolution> pinpoints, const vision_config& cfg) {
  const int p = cfg.patches_per_side();
  auto grid = anyres_grid_for(image_height, image_width, pinpoints, cfg.image_size);
  if (!grid)
    return std::move(grid).err();
  const unpadded_region r = unpad_region(image_height, image_width, grid->rows * p, grid->cols * p);
  if (r.height <= 0 || r.width <= 0)
    return too_thin(image_height, image_width);
  return p * p + r.height * r.width + r.height;
}

result<std::vector<float>> pack_anyres_features(std::span<const float> features,
                                                std::span<const float> newline, int dim,
                                                int image_height, int image_width,
                                                std::span<const resolution> pinpoints,
                                                const vision_config& cfg) {
  if (cfg.feature_select != "default")
    return make_error(errc::invalid_argument,
                      "anyres packing needs vision_feature_select_strategy ", "\"default\" (got \"",
                      cfg.feature_select, "\")");
  if (dim <= 0)
    return make_error(errc::invalid_argument, "anyres packing: feature dimension ",
                      std::to_string(dim));
  auto g = anyres_grid_for(image_height, image_width, pinpoints, cfg.image_size);
  if (!g)
    return std::move(g).err();
  const anyres_grid& grid = *g;
  const int p = cfg.patches_per_side();
  const size_t view = static_cast<size_t>(p) * p * dim;
  if (features.size() != view * (1 + static_cast<size_t>(grid.tiles())))
    return make_error(errc::invalid_argument, "anyres packing: ", std::to_string(features.size()),
                      " feature values for ", std::to_string(1 + grid.tiles()), " views of ",
                      std::to_string(p * p), " x ", std::to_string(dim));
  if (newline.size() != static_cast<size_t>(dim))
    return make_error(errc::invalid_argument, "anyres packing: image_newline has ",
                      std::to_string(newline.size()), " values, the features ",
                      std::to_string(dim));
  const unpadded_region r = unpad_region(image_height, image_width, grid.rows * p, grid.cols * p);
  if (r.height <= 0 || r.width <= 0)
    return too_thin(image_height, image_width);
  std::vector<float> out;
  out.reserve((static_cast<size_t>(p) * p + static_cast<size_t>(r.height) * (r.width + 1)) *
              static_cast<size_t>(dim));
  out.insert(out.end(), features.begin(), features.begin() + static_cast<ptrdiff_t>(view));
  for (int y = r.top; y < r.top + r.height; ++y) {
    for (int x = r.left; x < r.left + r.width; ++x) {
      const int tile = (y / p) * grid.cols + (x / p);
      const size_t at = view * (1 + static_cast<size_t>(tile)) +
                        (static_cast<size_t>(y % p) * p + static_cast<size_t>(x % p)) * dim;
      out.insert(out.end(), features.begin() + static_cast<ptrdiff_t>(at),
                 features.begin() + static_cast<ptrdiff_t>(at + dim));
    }
    out.insert(out.end(), newline.begin(), newline.end());
  }
  return out;
}

} // namespace mosaic
