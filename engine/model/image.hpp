#pragma once

// Image decoding (PNG via stb_image, JPEG via libjpeg-turbo, with size limits checked before
// any pixel is decoded), HF CLIPImageProcessor preprocessing, the image's
// cache key, and a PNG encoder.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/error.hpp"
#include "engine/model/model_config.hpp"
#include "engine/model/sha256.hpp"

namespace mosaic {

/// Limits applied to untrusted images before decoding.
struct image_limits {
  int max_width = 8192;
  int max_height = 8192;
  size_t max_bytes = 20 << 20; ///< encoded size
};

/// 8-bit RGB pixels.
struct decoded_image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb; // [height, width, 3]
};

/// Decodes PNG or JPEG (grey/alpha converted to RGB, alpha dropped).
/// Oversized or corrupt input → invalid_argument naming the problem;
/// other formats → unsupported.
result<decoded_image> decode_image(std::span<const uint8_t> encoded, const image_limits& limits);

/// HF CLIPImageProcessor as configured for LLaVA-1.5: resize the shortest
/// edge to image_size (PIL bicubic, antialiased, 8-bit intermediate),
/// center crop image_size², rescale by 1/255, normalise by image_mean and
/// image_std. Returns [3, image_size, image_size] (CHW).
std::vector<float> preprocess_image(const decoded_image& image, const vision_config& cfg);

/// Pillow's bicubic resize of 8-bit RGB (exposed for tests and callers that
/// need only the resize).
decoded_image resize_bicubic(const decoded_image& image, int width, int height);

/// Library key of an image before it is bound to a model and tenant:
/// SHA-256 over a version tag, the decoded pixels, their dimensions and the
/// preprocessing parameters (image size, mean, std, resize method).
digest image_key(const decoded_image& image, const vision_config& cfg);

/// Encodes 8-bit RGB as PNG.
std::vector<uint8_t> encode_png(const decoded_image& image);
/// Encodes 8-bit RGB as baseline JPEG (quality 1..100); used by tests and
/// the simulator.
std::vector<uint8_t> encode_jpeg(const decoded_image& image, int quality = 90);

} // namespace mosaic
