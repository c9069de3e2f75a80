// Qwen2VLImageProcessor (transformers 4.49, image_processing_qwen2_vl.py).

#include "engine/model/qwen2vl_image.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace mosaic {

result<std::pair<int, int>> smart_resize(int height, int width, int factor, int min_pixels,
                                         int max_pixels) {
  if (factor <= 0 || min_pixels < 0 || max_pixels <= 0 || min_pixels > max_pixels)
    return make_error(errc::invalid_argument, "smart_resize: bad factor or pixel limits");
  if (height < factor || width < factor)
    return make_error(errc::invalid_argument, "image of ", std::to_string(width), "x",
                      std::to_string(height), " px: each side must be at least ",
                      std::to_string(factor), " px");
  const double hd = height, wd = width;
  if (std::max(hd, wd) / std::min(hd, wd) > 200.0)
    return make_error(errc::invalid_argument, "image of ", std::to_string(width), "x",
                      std::to_string(height), " px: the aspect ratio must be at most 200");
  // Python's round(): halves to even, as nearbyint in the default mode.
  long long h_bar = static_cast<long long>(std::nearbyint(hd / factor)) * factor;
  long long w_bar = static_cast<long long>(std::nearbyint(wd / factor)) * factor;
  if (h_bar * w_bar > max_pixels) {
    const double beta = std::sqrt(hd * wd / max_pixels);
    h_bar = static_cast<long long>(std::floor(hd / beta / factor)) * factor;
    w_bar = static_cast<long long>(std::floor(wd / beta / factor)) * factor;
  } else if (h_bar * w_bar < min_pixels) {
    const double beta = std::sqrt(min_pixels / (hd * wd));
    h_bar = static_cast<long long>(std::ceil(hd * beta / factor)) * factor;
    w_bar = static_cast<long long>(std::ceil(wd * beta / factor)) * factor;
  }
  // HF returns these as they are; a side of 0 (a very flat image under a
  // small max_pixels) cannot be encoded.
  if (h_bar <= 0 || w_bar <= 0 || h_bar > (1 << 16) || w_bar > (1 << 16))
    return make_error(errc::invalid_argument, "image of ", std::to_string(width), "x",
                      std::to_string(height), " px resizes to nothing under these pixel limits");
  return std::pair<int, int>{static_cast<int>(h_bar), static_cast<int>(w_bar)};
}

result<qwen2vl_pixels> preprocess_qwen2vl(const decoded_image& image,
                                          const qwen2vl_image_config& cfg) {
  const int p = cfg.patch_size, m = cfg.merge_size, tp = cfg.temporal_patch_size;
  if (p <= 0 || m <= 0 || tp <= 0)
    return make_error(errc::invalid_argument, "qwen2vl preprocessing: bad patch sizes");
  auto size = smart_resize(image.height, image.width, p * m, cfg.min_pixels, cfg.max_pixels);
  if (!size)
    return std::move(size).err();
  const auto [rh, rw] = *size;
  const decoded_image resized = resize_bicubic(image, rw, rh);
  qwen2vl_pixels out;
  out.grid = {1, rh / p, rw / p};
  const int gh = out.grid.h, gw = out.grid.w;
  const size_t cols = static_cast<size_t>(3) * tp * p * p;
  out.values.resize(static_cast<size_t>(gh) * gw * cols);
  // Rows in the order (block row, block column, row in block, column in
  // block); columns (channel, frame, y, x). A single image's frames are
  // copies of it.
  size_t row = 0;
  for (int by = 0; by < gh / m; ++by)
    for (int bx = 0; bx < gw / m; ++bx)
      for (int my = 0; my < m; ++my)
        for (int mx = 0; mx < m; ++mx, ++row) {
          const int y0 = (by * m + my) * p, x0 = (bx * m + mx) * p;
          float* dst = out.values.data() + row * cols;
          for (int c = 0; c < 3; ++c)
            for (int f = 0; f < tp; ++f)
              for (int y = 0; y < p; ++y)
                for (int x = 0; x < p; ++x) {
                  const uint8_t v =
                      resized.rgb[(static_cast<size_t>(y0 + y) * rw + static_cast<size_t>(x0 + x)) *
                                      3 +
                                  static_cast<size_t>(c)];
                  // numpy: uint8 → float64 * (1/255) → float32, then
                  // (x - mean) / std in float32.
                  const float s = static_cast<float>(static_cast<double>(v) * (1.0 / 255.0));
                  *dst++ = (s - cfg.image_mean[c]) / cfg.image_std[c];
                }
        }
  return out;
}

} // namespace mosaic
