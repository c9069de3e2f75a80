#pragma once

// Image headers for front-door tests: the front door only reads the
// header (format, width, height) before handing bytes to the cluster.

#include <cstdint>
#include <string>
#include <vector>

#include "server/openai_request.hpp"

namespace mosaic::server::test {

/// A PNG signature and IHDR chunk of the given size (no pixel data).
inline std::vector<uint8_t> png_header(uint32_t w, uint32_t h) {
  std::vector<uint8_t> b{0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n',
                         0,    0,   0,   13,  'I',  'H',  'D',  'R'};
  for (uint32_t v : {w, h})
    for (int s = 24; s >= 0; s -= 8)
      b.push_back(uint8_t(v >> s));
  b.insert(b.end(), {8, 2, 0, 0, 0, 0, 0, 0, 0});
  return b;
}

/// SOI, an APP0 segment and a baseline SOF0 of the given size.
inline std::vector<uint8_t> jpeg_header(uint16_t w, uint16_t h) {
  std::vector<uint8_t> b{0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 'J', 'F', 0xFF, 0xC0, 0, 11, 8};
  b.push_back(uint8_t(h >> 8));
  b.push_back(uint8_t(h));
  b.push_back(uint8_t(w >> 8));
  b.push_back(uint8_t(w));
  b.insert(b.end(), {1, 1, 0x11, 0});
  return b;
}

inline std::string base64(const std::vector<uint8_t>& in) {
  static constexpr char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint32_t(in[i]) << 16) | (uint32_t(in[i + 1]) << 8) | in[i + 2];
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], t[v & 63]};
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint32_t(in[i]) << 16;
    out += {t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint32_t(in[i]) << 16) | (uint32_t(in[i + 1]) << 8);
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return out;
}

inline std::string data_url(const std::vector<uint8_t>& png) {
  return "data:image/png;base64," + base64(png);
}

} // namespace mosaic::server::test
