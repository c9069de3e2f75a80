#include "sim/procedural_image.hpp"

#include <algorithm>
#include <array>
#include <cmath>

#include "sim/random.hpp"

namespace mosaic::sim {

decoded_image procedural_image(uint64_t seed, int index, int size) {
  rng r{seed * 0x9e3779b97f4a7c15ull + uint64_t(index) * 0xbf58476d1ce4e5b9ull + 1};
  decoded_image img;
  img.width = size;
  img.height = size;
  img.rgb.resize(size_t(size) * size_t(size) * 3);
  auto colour = [&] {
    return std::array<double, 3>{r.uniform() * 255, r.uniform() * 255, r.uniform() * 255};
  };
  const auto a = colour();
  const auto b = colour();
  const double angle = r.uniform() * 2.0 * M_PI;
  const double cx = std::cos(angle), cy = std::sin(angle);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      const double t = 0.5 + 0.5 * ((x - size / 2.0) * cx + (y - size / 2.0) * cy) / size;
      for (int c = 0; c < 3; ++c)
        img.rgb[(size_t(y) * size_t(size) + size_t(x)) * 3 + size_t(c)] =
            uint8_t(std::clamp(a[size_t(c)] * (1 - t) + b[size_t(c)] * t, 0.0, 255.0));
    }
  const int shapes = int(r.uniform_int(3, 8));
  for (int s = 0; s < shapes; ++s) {
    const auto col = colour();
    const bool disc = r.uniform() < 0.5;
    const int x0 = int(r.uniform_int(0, size - 1)), y0 = int(r.uniform_int(0, size - 1));
    const int ext = int(r.uniform_int(size / 16 + 1, size / 3 + 1));
    for (int y = std::max(0, y0 - ext); y < std::min(size, y0 + ext); ++y)
      for (int x = std::max(0, x0 - ext); x < std::min(size, x0 + ext); ++x) {
        if (disc && (x - x0) * (x - x0) + (y - y0) * (y - y0) > ext * ext)
          continue;
        for (int c = 0; c < 3; ++c)
          img.rgb[(size_t(y) * size_t(size) + size_t(x)) * 3 + size_t(c)] = uint8_t(col[size_t(c)]);
      }
  }
  return img;
}

std::vector<uint8_t> procedural_png(uint64_t seed, int index, int size) {
  return encode_png(procedural_image(seed, index, size));
}

} // namespace mosaic::sim
