#pragma once

// Reads the size of a PNG or JPEG from its header without decoding it, so
// that the front door can refuse oversized or non-image uploads before
// they reach the encoder.

#include <cstdint>
#include <span>
#include <string>

#include "engine/error.hpp"

namespace mosaic::server {

struct image_header {
  std::string mime; ///< "image/png" or "image/jpeg"
  uint32_t width = 0;
  uint32_t height = 0;
};

/// The format and size of `bytes`; invalid_argument when they are not a
/// PNG or a baseline/progressive JPEG with a readable header.
result<image_header> probe_image(std::span<const uint8_t> bytes);

} // namespace mosaic::server
