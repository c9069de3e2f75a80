// HF CLIPImageProcessor for LLaVA-1.5, bit-exact with transformers + Pillow:
// Pillow's two-pass (horizontal, then vertical) antialiased bicubic resample
// with 8-bit intermediates and 22-bit fixed-point coefficients
// (libImaging/Resample.c), HF's shortest-edge size rule and center crop, then
// rescale and normalise in float32 as numpy does.

#include <algorithm>
#include <bit>
#include <cmath>

#include "engine/model/image.hpp"

namespace mosaic {

namespace {

constexpr int precision_bits = 32 - 8 - 2;

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0)
    x = -x;
  if (x < 1.0)
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0)
    return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Fixed-point taps of output pixels [out0, out0 + count) of a resize of
// `in_size` input pixels to `out_size` (Pillow's precompute_coeffs and
// normalize_coeffs_8bpc).
struct taps {
  int ksize = 0;
  std::vector<int> first; // [count] first input pixel
  std::vector<int> n;     // [count] number of taps
  std::vector<int32_t> k; // [count, ksize]
};

taps precompute(int in_size, int out_size, int out0, int count) {
  constexpr double support_base = 2.0;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = support_base * filterscale;
  taps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(static_cast<size_t>(count));
  t.n.resize(static_cast<size_t>(count));
  t.k.assign(static_cast<size_t>(count) * t.ksize, 0);
  std::vector<double> w(static_cast<size_t>(t.ksize));
  for (int i = 0; i < count; ++i) {
    const int xx = out0 + i;
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0)
      xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size)
      xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[static_cast<size_t>(x)] = bicubic_filter((x + xmin - center + 0.5) * ss);
      ww += w[static_cast<size_t>(x)];
    }
    for (int x = 0; x < xmax; ++x) {
      double v = ww != 0.0 ? w[static_cast<size_t>(x)] / ww : w[static_cast<size_t>(x)];
      t.k[static_cast<size_t>(i) * t.ksize + x] = static_cast<int32_t>(
          v < 0 ? -0.5 + v * (1 << precision_bits) : 0.5 + v * (1 << precision_bits));
    }
    t.first[static_cast<size_t>(i)] = xmin;
    t.n[static_cast<size_t>(i)] = xmax;
  }
  return t;
}

uint8_t clip8(int32_t v) {
  if (v >= (1 << precision_bits << 8))
    return 255;
  if (v <= 0)
    return 0;
  return static_cast<uint8_t>(v >> precision_bits);
}

// The window [x0, x0 + cw) x [y0, y0 + ch) of `src` resized to out_w x
// out_h; equal to cropping the full resize (each output pixel depends only
// on its own taps), without materialising a huge intermediate.
decoded_image resize_window(const decoded_image& src, int out_w, int out_h, int x0, int y0, int cw,
                            int ch) {
  const bool need_h = out_w != src.width;
  const bool need_v = out_h != src.height;
  // Horizontal pass over the input rows the vertical pass reads.
  taps tv;
  int row0 = y0, rows = ch;
  if (need_v) {
    tv = precompute(src.height, out_h, y0, ch);
    row0 = tv.first.front();
    int last = 0;
    for (int i = 0; i < ch; ++i)
      last = std::max(last, tv.first[static_cast<size_t>(i)] + tv.n[static_cast<size_t>(i)]);
    rows = last - row0;
  }
  decoded_image mid;
  mid.width = cw;
  mid.height = rows;
  mid.rgb.resize(static_cast<size_t>(cw) * rows * 3);
  if (need_h) {
    taps th = precompute(src.width, out_w, x0, cw);
    for (int y = 0; y < rows; ++y) {
      const uint8_t* in = src.rgb.data() + static_cast<size_t>(row0 + y) * src.width * 3;
      uint8_t* out = mid.rgb.data() + static_cast<size_t>(y) * cw * 3;
      for (int x = 0; x < cw; ++x) {
        const int32_t* k = th.k.data() + static_cast<size_t>(x) * th.ksize;
        const int first = th.first[static_cast<size_t>(x)], n = th.n[static_cast<size_t>(x)];
        for (int c = 0; c < 3; ++c) {
          int32_t ss = 1 << (precision_bits - 1);
          for (int j = 0; j < n; ++j)
            ss += in[(first + j) * 3 + c] * k[j];
          out[x * 3 + c] = clip8(ss);
        }
      }
    }
  } else {
    for (int y = 0; y < rows; ++y)
      std::copy_n(src.rgb.data() + (static_cast<size_t>(row0 + y) * src.width + x0) * 3, cw * 3,
                  mid.rgb.data() + static_cast<size_t>(y) * cw * 3);
  }
  if (!need_v)
    return mid;
  decoded_image out;
  out.width = cw;
  out.height = ch;
  out.rgb.resize(static_cast<size_t>(cw) * ch * 3);
  for (int y = 0; y < ch; ++y) {
    const int32_t* k = tv.k.data() + static_cast<size_t>(y) * tv.ksize;
    const int first = tv.first[static_cast<size_t>(y)] - row0, n = tv.n[static_cast<size_t>(y)];
    uint8_t* o = out.rgb.data() + static_cast<size_t>(y) * cw * 3;
    for (int i = 0; i < cw * 3; ++i) {
      int32_t ss = 1 << (precision_bits - 1);
      for (int j = 0; j < n; ++j)
        ss += mid.rgb[static_cast<size_t>(first + j) * cw * 3 + i] * k[j];
      o[i] = clip8(ss);
    }
  }
  return out;
}

} // namespace

decoded_image resize_bicubic(const decoded_image& image, int width, int height) {
  return resize_window(image, width, height, 0, 0, width, height);
}

std::vector<float> preprocess_image(const decoded_image& image, const vision_config& cfg) {
  const int size = cfg.image_size;
  // transformers get_resize_output_image_size(default_to_square=False).
  const int w = image.width, h = image.height;
  const int short_side = std::min(w, h), long_side = std::max(w, h);
  const int new_long =
      static_cast<int>(static_cast<double>(static_cast<int64_t>(size) * long_side) / short_side);
  const int out_w = w <= h ? size : new_long;
  const int out_h = w <= h ? new_long : size;
  // transformers center_crop: top = (H - crop) // 2, left = (W - crop) // 2.
  const int top = (out_h - size) / 2, left = (out_w - size) / 2;
  decoded_image crop = resize_window(image, out_w, out_h, left, top, size, size);

  const size_t plane = static_cast<size_t>(size) * size;
  std::vector<float> out(3 * plane); // [3, size, size]
  for (size_t p = 0; p < plane; ++p)
    for (int c = 0; c < 3; ++c) {
      // numpy: uint8 → float64 * (1/255) → float32, then (x - mean) / std in float32.
      const float x = static_cast<float>(static_cast<double>(crop.rgb[p * 3 + c]) * (1.0 / 255.0));
      out[static_cast<size_t>(c) * plane + p] = (x - cfg.image_mean[c]) / cfg.image_std[c];
    }
  return out;
}

digest image_key(const decoded_image& image, const vision_config& cfg) {
  sha256_hasher h;
  h.update(std::string_view("mosaic-image-key-v1;clip-processor;pil-bicubic-shortest-edge;"
                            "center-crop;rescale-1/255"));
  h.update_u64(static_cast<uint64_t>(image.width));
  h.update_u64(static_cast<uint64_t>(image.height));
  h.update_u64(image.rgb.size());
  h.update(image.rgb);
  h.update_u64(static_cast<uint64_t>(cfg.image_size));
  for (int c = 0; c < 3; ++c) {
    h.update_u64(std::bit_cast<uint32_t>(cfg.image_mean[c]));
    h.update_u64(std::bit_cast<uint32_t>(cfg.image_std[c]));
  }
  if (!cfg.grid_pinpoints.empty()) { // anyres: the views depend on the grids
    h.update(std::string_view(";anyres-grids"));
    for (const auto& [gh, gw] : cfg.grid_pinpoints) {
      h.update_u64(static_cast<uint64_t>(gh));
      h.update_u64(static_cast<uint64_t>(gw));
    }
  }
  return h.finish();
}

} // namespace mosaic
