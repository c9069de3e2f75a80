// PNG/JPEG decoding and encoding with stb. stb is compiled into this file
// only (STB_*_STATIC: internal linkage, so it cannot clash with another
// copy) and restricted to PNG and JPEG, the formats Mosaic accepts.

#include <climits>
#include <cstring>

#include "engine/model/image.hpp"
#include "engine/model/random_image.hpp"

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

namespace mosaic {

namespace {

struct stbi_pixels {
  stbi_uc* p;
  ~stbi_pixels() { stbi_image_free(p); }
};

bool is_png(std::span<const uint8_t> b) {
  static constexpr uint8_t sig[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return b.size() >= 8 && std::memcmp(b.data(), sig, 8) == 0;
}

bool is_jpeg(std::span<const uint8_t> b) {
  return b.size() >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff;
}

void append_bytes(void* ctx, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(ctx);
  auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}

} // namespace

result<decoded_image> decode_image(std::span<const uint8_t> encoded, const image_limits& limits) {
  if (encoded.empty())
    return make_error(errc::invalid_argument, "image is empty (0 bytes)");
  if (encoded.size() > limits.max_bytes || encoded.size() > static_cast<size_t>(INT_MAX))
    return make_error(errc::invalid_argument, "image is ", std::to_string(encoded.size()),
                      " bytes; the limit is ", std::to_string(limits.max_bytes),
                      " (send a smaller image)");
  const bool png = is_png(encoded);
  if (!png && !is_jpeg(encoded))
    return make_error(errc::unsupported, "image is neither PNG nor JPEG (send a PNG or JPEG)");
  const char* kind = png ? "PNG" : "JPEG";
  const int len = static_cast<int>(encoded.size());
  int w = 0, h = 0, comp = 0;
  auto too_large = [&](uint64_t iw, uint64_t ih) {
    return make_error(errc::invalid_argument, kind, " image is ", std::to_string(iw), "x",
                      std::to_string(ih), " pixels; the limit is ",
                      std::to_string(limits.max_width), "x", std::to_string(limits.max_height),
                      " (downscale it)");
  };
  // PNG: the IHDR chunk follows the signature; read it directly, since stb
  // refuses huge images with a vague message.
  if (png && encoded.size() >= 24 && std::memcmp(encoded.data() + 12, "IHDR", 4) == 0) {
    auto be32 = [&](size_t off) {
      return uint64_t{encoded[off]} << 24 | uint64_t{encoded[off + 1]} << 16 |
             uint64_t{encoded[off + 2]} << 8 | uint64_t{encoded[off + 3]};
    };
    const uint64_t iw = be32(16), ih = be32(20);
    if (iw > static_cast<uint64_t>(limits.max_width) ||
        ih > static_cast<uint64_t>(limits.max_height))
      return too_large(iw, ih);
  }
  // Dimensions from the header, before any pixel is decoded.
  if (stbi_info_from_memory(encoded.data(), len, &w, &h, &comp) == 0)
    return make_error(errc::invalid_argument, "corrupt ", kind, " image: cannot read its header (",
                      stbi_failure_reason(), ")");
  if (w <= 0 || h <= 0 || w > limits.max_width || h > limits.max_height)
    return too_large(static_cast<uint64_t>(w), static_cast<uint64_t>(h));
  int dw = 0, dh = 0;
  stbi_pixels px{stbi_load_from_memory(encoded.data(), len, &dw, &dh, &comp, 3)};
  if (px.p == nullptr)
    return make_error(errc::invalid_argument, "corrupt ", kind, " image: ", stbi_failure_reason());
  if (dw != w || dh != h)
    return make_error(errc::invalid_argument, "corrupt ", kind,
                      " image: header and data disagree on its size");
  decoded_image img;
  img.width = w;
  img.height = h;
  img.rgb.assign(px.p, px.p + static_cast<size_t>(w) * h * 3);
  return img;
}

std::vector<uint8_t> encode_png(const decoded_image& image) {
  std::vector<uint8_t> out;
  stbi_write_png_to_func(append_bytes, &out, image.width, image.height, 3, image.rgb.data(),
                         image.width * 3);
  return out;
}

std::vector<uint8_t> encode_jpeg(const decoded_image& image, int quality) {
  std::vector<uint8_t> out;
  stbi_write_jpg_to_func(append_bytes, &out, image.width, image.height, 3, image.rgb.data(),
                         quality < 1     ? 1
                         : quality > 100 ? 100
                                         : quality);
  return out;
}

std::vector<uint8_t> random_png(std::mt19937_64& rng, int size) {
  decoded_image img;
  img.width = size;
  img.height = size;
  img.rgb.resize(size_t(size) * size * 3);
  for (auto& b : img.rgb)
    b = static_cast<uint8_t>(rng() & 0xff);
  return encode_png(img);
}

} // namespace mosaic
