#include "server/image_probe.hpp"

#include <array>
#include <cstring>

namespace mosaic::server {

namespace {

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
uint32_t be16(const uint8_t* p) {
  return (uint32_t(p[0]) << 8) | p[1];
}

result<image_header> probe_png(std::span<const uint8_t> b) {
  // signature (8) + IHDR length (4) + "IHDR" (4) + width (4) + height (4)
  if (b.size() < 24 || std::memcmp(b.data() + 12, "IHDR", 4) != 0)
    return make_error(errc::invalid_argument, "the PNG has no IHDR header; send a complete PNG");
  image_header h{"image/png", be32(b.data() + 16), be32(b.data() + 20)};
  if (h.width == 0 || h.height == 0)
    return make_error(errc::invalid_argument, "the PNG has a zero width or height");
  return h;
}

result<image_header> probe_jpeg(std::span<const uint8_t> b) {
  size_t i = 2;
  while (i + 4 <= b.size()) {
    if (b[i] != 0xFF) {
      ++i; // tolerate fill / garbage between segments
      continue;
    }
    const uint8_t marker = b[i + 1];
    if (marker == 0xFF) {
      ++i;
      continue;
    }
    if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) {
      i += 2;
      continue;
    }
    const uint32_t len = be16(b.data() + i + 2);
    if (len < 2)
      break;
    const bool sof =
        marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (i + 9 > b.size())
        break;
      image_header h{"image/jpeg", be16(b.data() + i + 7), be16(b.data() + i + 5)};
      if (h.width == 0 || h.height == 0)
        return make_error(errc::invalid_argument, "the JPEG has a zero width or height");
      return h;
    }
    if (marker == 0xD9 || marker == 0xDA)
      break; // end of image or scan data before any frame header
    i += 2 + len;
  }
  return make_error(errc::invalid_argument,
                    "the JPEG has no readable frame header; send a complete JPEG");
}

} // namespace

result<image_header> probe_image(std::span<const uint8_t> bytes) {
  static constexpr std::array<uint8_t, 8> png_sig{0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), png_sig.data(), 8) == 0)
    return probe_png(bytes);
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
    return probe_jpeg(bytes);
  return make_error(errc::invalid_argument,
                    "the image is neither PNG nor JPEG; send image/png or image/jpeg bytes");
}

} // namespace mosaic::server
