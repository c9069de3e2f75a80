#include "engine/mrope.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace mosaic {

result<mrope_positions> mrope_position_ids(std::span<const int32_t> ids, int32_t image_token_id,
                                           std::span<const vision_grid> images, int merge) {
  if (merge <= 0)
    return make_error(errc::invalid_argument, "spatial merge size must be positive");
  mrope_positions p;
  p.t.reserve(ids.size());
  p.h.reserve(ids.size());
  p.w.reserve(ids.size());
  int32_t next = 0; // largest position so far + 1
  auto text = [&](size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) {
      const auto v = next + static_cast<int32_t>(i - from);
      p.t.push_back(v);
      p.h.push_back(v);
      p.w.push_back(v);
    }
    if (to > from)
      next += static_cast<int32_t>(to - from);
  };
  size_t at = 0;
  for (size_t n = 0; n < images.size(); ++n) {
    const auto& g = images[n];
    if (g.t <= 0 || g.h <= 0 || g.w <= 0 || g.h % merge != 0 || g.w % merge != 0)
      return make_error(errc::invalid_argument, "image ", std::to_string(n), ": grid ",
                        std::to_string(g.t), "x", std::to_string(g.h), "x", std::to_string(g.w),
                        " is not a whole number of ", std::to_string(merge), "x",
                        std::to_string(merge), " merges");
    const auto start =
        std::find(ids.begin() + static_cast<ptrdiff_t>(at), ids.end(), image_token_id);
    if (start == ids.end())
      return make_error(errc::invalid_argument, "the prompt has ", std::to_string(n),
                        " image(s) but ", std::to_string(images.size()), " grids");
    const auto ed = static_cast<size_t>(start - ids.begin());
    const int gh = g.h / merge, gw = g.w / merge;
    const size_t count =
        static_cast<size_t>(g.t) * static_cast<size_t>(gh) * static_cast<size_t>(gw);
    if (ed + count > ids.size() ||
        !std::all_of(ids.begin() + static_cast<ptrdiff_t>(ed),
                     ids.begin() + static_cast<ptrdiff_t>(ed + count),
                     [&](int32_t id) { return id == image_token_id; }) ||
        (ed + count < ids.size() && ids[ed + count] == image_token_id))
      return make_error(errc::invalid_argument, "image ", std::to_string(n), " needs a run of ",
                        std::to_string(count), " image tokens at ", std::to_string(ed));
    text(at, ed);
    const int32_t s = next;
    for (int i = 0; i < g.t; ++i)
      for (int j = 0; j < gh; ++j)
        for (int k = 0; k < gw; ++k) {
          p.t.push_back(s + i);
          p.h.push_back(s + j);
          p.w.push_back(s + k);
        }
    next = s + std::max({g.t, gh, gw});
    at = ed + count;
  }
  if (std::find(ids.begin() + static_cast<ptrdiff_t>(at), ids.end(), image_token_id) != ids.end())
    return make_error(errc::invalid_argument, "the prompt has more images than the ",
                      std::to_string(images.size()), " grids given");
  text(at, ids.size());
  p.next = next;
  p.delta = next - static_cast<int32_t>(ids.size());
  return p;
}

status mrope_rotate(float* x, const mrope_positions& pos, int rows, int n_heads, int head_dim,
                    std::span<const int> section, float theta) {
  const int half = head_dim / 2;
  int sum = 0;
  bool negative = false;
  for (int s : section) {
    sum += s;
    negative = negative || s < 0;
  }
  if (head_dim % 2 != 0 || section.size() != 3 || sum != half || negative)
    return make_error(errc::invalid_argument, "mrope_section must be three parts summing to ",
                      "head_dim / 2 = ", std::to_string(half));
  if (pos.t.size() < static_cast<size_t>(rows))
    return make_error(errc::invalid_argument, "fewer positions than rows");
  // HF: inv_freq = 1 / theta^(2f / head_dim) in float32; angle = inv_freq *
  // position in float32.
  std::vector<float> inv_freq(static_cast<size_t>(half));
  std::vector<int> component(static_cast<size_t>(half));
  for (int f = 0, s = 0, left = section[0]; f < half; ++f, --left) {
    while (left == 0)
      left = section[static_cast<size_t>(++s)];
    component[static_cast<size_t>(f)] = s;
    inv_freq[static_cast<size_t>(f)] =
        1.0f / std::pow(theta, static_cast<float>(2 * f) / static_cast<float>(head_dim));
  }
  const int32_t* comp[3] = {pos.t.data(), pos.h.data(), pos.w.data()};
  for (int r = 0; r < rows; ++r)
    for (int f = 0; f < half; ++f) {
      const auto p = static_cast<float>(comp[component[static_cast<size_t>(f)]][r]);
      const float angle = inv_freq[static_cast<size_t>(f)] * p;
      const float c = std::cos(angle), s = std::sin(angle);
      for (int hd = 0; hd < n_heads; ++hd) {
        float* v = x + (static_cast<size_t>(r) * n_heads + hd) * head_dim;
        const float a = v[f], b = v[f + half];
        v[f] = a * c - b * s;
        v[f + half] = b * c + a * s;
      }
    }
  return {};
}

} // namespace mosaic
