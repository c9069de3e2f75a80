// PNG decoding with stb, JPEG decoding with libjpeg-turbo (decode_jpeg
// says why), PNG/JPEG encoding with stb. stb is compiled into this file
// only (STB_*_STATIC: internal linkage, so it cannot clash with another
// copy) and restricted to PNG, the one format it decodes here.

#include <algorithm>
#include <climits>
#include <cstring>

#include "engine/model/image.hpp"
#include "engine/model/random_image.hpp"

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#include <turbojpeg.h>

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

struct turbojpeg_handle {
  tjhandle h;
  ~turbojpeg_handle() {
    if (h != nullptr)
      tjDestroy(h);
  }
};

void append_bytes(void* ctx, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(ctx);
  auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}

} // namespace

namespace {

// stb_image trusts a chunk's declared length: a 271-byte PNG whose IDAT
// claims 2 GiB makes it allocate 2 GiB before it finds the data missing
// (tests/fuzz image; tests/fuzz/corpus/image/regress-stb-png-idat-length-bomb.png).
// Every chunk must therefore lie inside the file, up to IEND, before stb
// reads it, which bounds stb's compressed-data buffer by the file size.
status check_png_chunks(std::span<const uint8_t> b) {
  auto be32 = [&](size_t off) {
    return uint64_t{b[off]} << 24 | uint64_t{b[off + 1]} << 16 | uint64_t{b[off + 2]} << 8 |
           uint64_t{b[off + 3]};
  };
  size_t at = 8; // after the signature
  while (true) {
    if (b.size() - at < 12)
      return make_error(errc::invalid_argument, "corrupt PNG image: the file ends at byte ",
                        std::to_string(b.size()), " inside a chunk header (no IEND chunk)");
    const uint64_t length = be32(at);
    std::string type(reinterpret_cast<const char*>(b.data() + at + 4), 4);
    if (!std::all_of(type.begin(), type.end(),
                     [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }))
      type = "(not a chunk name)";
    if (length > 0x7fffffffu || length > b.size() - at - 12)
      return make_error(errc::invalid_argument, "corrupt PNG image: chunk ", type, " at byte ",
                        std::to_string(at), " declares ", std::to_string(length),
                        " bytes, past the end of the file (", std::to_string(b.size()), " bytes)");
    at += 12 + length;
    if (type == "IEND")
      return {};
  }
}

template <class TooLarge>
result<decoded_image> decode_png(std::span<const uint8_t> encoded, const image_limits& limits,
                                 const TooLarge& too_large) {
  const int len = static_cast<int>(encoded.size());
  int w = 0, h = 0, comp = 0;
  // The IHDR chunk follows the signature; read it directly, since stb
  // refuses huge images with a vague message.
  if (encoded.size() >= 24 && std::memcmp(encoded.data() + 12, "IHDR", 4) == 0) {
    auto be32 = [&](size_t off) {
      return uint64_t{encoded[off]} << 24 | uint64_t{encoded[off + 1]} << 16 |
             uint64_t{encoded[off + 2]} << 8 | uint64_t{encoded[off + 3]};
    };
    const uint64_t iw = be32(16), ih = be32(20);
    if (iw > static_cast<uint64_t>(limits.max_width) ||
        ih > static_cast<uint64_t>(limits.max_height))
      return too_large(iw, ih);
  }
  MOSAIC_TRY(check_png_chunks(encoded));
  // Dimensions from the header, before any pixel is decoded.
  if (stbi_info_from_memory(encoded.data(), len, &w, &h, &comp) == 0)
    return make_error(errc::invalid_argument, "corrupt PNG image: cannot read its header (",
                      stbi_failure_reason(), ")");
  if (w <= 0 || h <= 0 || w > limits.max_width || h > limits.max_height)
    return too_large(static_cast<uint64_t>(w), static_cast<uint64_t>(h));
  int dw = 0, dh = 0;
  stbi_pixels px{stbi_load_from_memory(encoded.data(), len, &dw, &dh, &comp, 3)};
  if (px.p == nullptr)
    return make_error(errc::invalid_argument, "corrupt PNG image: ", stbi_failure_reason());
  if (dw != w || dh != h)
    return make_error(errc::invalid_argument,
                      "corrupt PNG image: header and data disagree on its size");
  decoded_image img;
  img.width = w;
  img.height = h;
  img.rgb.assign(px.p, px.p + static_cast<size_t>(w) * h * 3);
  return img;
}

// JPEG goes to libjpeg-turbo (TurboJPEG API), not stb_image: Debian 12's
// stb_image (2022-09-08) reads and writes outside its Huffman tables on
// hostile JPEGs (tests/fuzz found two such inputs, now in
// tests/fuzz/corpus/image/), while libjpeg-turbo is what PIL decodes with,
// so pixels also match the HF reference. Warnings (truncated or corrupt
// data, which libjpeg would fill with grey) are errors, and progressive
// images are limited to 500 scans (a decode-time bomb otherwise).
template <class TooLarge>
result<decoded_image> decode_jpeg(std::span<const uint8_t> encoded, const image_limits& limits,
                                  const TooLarge& too_large) {
  turbojpeg_handle tj{tjInitDecompress()};
  if (tj.h == nullptr)
    return make_error(errc::out_of_memory, "JPEG decoder: ", tjGetErrorStr2(nullptr));
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj.h, encoded.data(), static_cast<unsigned long>(encoded.size()), &w, &h,
                          &subsamp, &colorspace) != 0)
    return make_error(errc::invalid_argument, "corrupt JPEG image: cannot read its header (",
                      tjGetErrorStr2(tj.h), ")");
  if (w <= 0 || h <= 0 || w > limits.max_width || h > limits.max_height)
    return too_large(static_cast<uint64_t>(w), static_cast<uint64_t>(h));
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK)
    return make_error(errc::unsupported, "CMYK JPEG images are not supported (send an RGB or "
                                         "greyscale JPEG, or a PNG)");
  decoded_image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<size_t>(w) * h * 3);
  if (tjDecompress2(tj.h, encoded.data(), static_cast<unsigned long>(encoded.size()),
                    img.rgb.data(), w, 0, h, TJPF_RGB,
                    TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0)
    return make_error(errc::invalid_argument, "corrupt JPEG image: ", tjGetErrorStr2(tj.h));
  return img;
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
  auto too_large = [&](uint64_t iw, uint64_t ih) {
    return make_error(errc::invalid_argument, kind, " image is ", std::to_string(iw), "x",
                      std::to_string(ih), " pixels; the limit is ",
                      std::to_string(limits.max_width), "x", std::to_string(limits.max_height),
                      " (downscale it)");
  };
  return png ? decode_png(encoded, limits, too_large) : decode_jpeg(encoded, limits, too_large);
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
