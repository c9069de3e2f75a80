#include "engine/model/image.hpp"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include <gtest/gtest.h>

#include "engine/model/sha256.hpp"

namespace mosaic {
namespace {

decoded_image random_image(std::mt19937_64& rng, int w, int h) {
  decoded_image img{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (auto& p : img.rgb)
    p = static_cast<uint8_t>(rng());
  return img;
}

// A smooth image (JPEG keeps it close).
decoded_image gradient_image(int w, int h) {
  decoded_image img{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        img.rgb[(static_cast<size_t>(y) * w + x) * 3 + c] =
            static_cast<uint8_t>((x * 255 / w + y * 128 / h + c * 60) % 256);
  return img;
}

TEST(image, png_round_trip_is_exact) {
  std::mt19937_64 rng(std::random_device{}());
  auto img = random_image(rng, 1 + static_cast<int>(rng() % 50), 1 + static_cast<int>(rng() % 50));
  auto png = encode_png(img);
  auto back = decode_image(png, {});
  ASSERT_TRUE(back) << back.err().to_string();
  EXPECT_EQ(back->width, img.width);
  EXPECT_EQ(back->height, img.height);
  EXPECT_EQ(back->rgb, img.rgb);
}

TEST(image, jpeg_decodes_close_to_the_source) {
  auto img = gradient_image(64, 48);
  auto jpg = encode_jpeg(img, 95);
  auto back = decode_image(jpg, {});
  ASSERT_TRUE(back) << back.err().to_string();
  ASSERT_EQ(back->width, 64);
  ASSERT_EQ(back->height, 48);
  double err = 0;
  for (size_t i = 0; i < img.rgb.size(); ++i)
    err += std::abs(int(img.rgb[i]) - int(back->rgb[i]));
  EXPECT_LT(err / static_cast<double>(img.rgb.size()), 6.0);
}

TEST(image, corrupt_and_foreign_data_is_refused) {
  std::mt19937_64 rng(std::random_device{}());
  std::vector<uint8_t> noise(100 + rng() % 1000);
  for (auto& b : noise)
    b = static_cast<uint8_t>(rng());
  noise[0] = 'G'; // not a PNG/JPEG signature
  auto r = decode_image(noise, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::unsupported);

  auto png = encode_png(random_image(rng, 20, 20));
  std::vector<uint8_t> truncated(png.begin(), png.begin() + static_cast<long>(png.size() / 2));
  auto t = decode_image(truncated, {});
  ASSERT_FALSE(t);
  EXPECT_EQ(t.err().code, errc::invalid_argument);
  EXPECT_NE(t.err().message.find("corrupt PNG"), std::string::npos) << t.err().message;

  std::vector<uint8_t> header_only(png.begin(), png.begin() + 12);
  EXPECT_FALSE(decode_image(header_only, {}));
  EXPECT_FALSE(decode_image(std::span<const uint8_t>{}, {}));

  std::vector<uint8_t> jpeg_garbage = {0xff, 0xd8, 0xff, 0x00, 0x13, 0x37};
  auto j = decode_image(jpeg_garbage, {});
  ASSERT_FALSE(j);
  EXPECT_NE(j.err().message.find("JPEG"), std::string::npos);
}

std::vector<uint8_t> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Found by tests/fuzz image: Debian 12's stb_image writes past its Huffman
// tables when a DHT segment declares more than 256 codes, reads outside
// them when a scan decodes with a table that was never defined, and
// allocates whatever a PNG chunk's length claims. JPEG is decoded by
// libjpeg-turbo now and PNG chunks are checked against the file first; the
// inputs, and a constructed DHT segment of 272 codes, are refused with a
// clear error, and real images still decode.
TEST(image, hostile_images_found_by_the_fuzzer_are_refused) {
  const char* dir = std::getenv("MOSAIC_TEST_DATA");
  ASSERT_NE(dir, nullptr) << "MOSAIC_TEST_DATA (ctest sets it)";
  const auto corpus = std::filesystem::path{dir} / "../fuzz/corpus/image";
  for (const char* name :
       {"regress-stb-dht-over-256-codes.jpg", "regress-stb-huff-decode-symbol-out-of-range.jpg"}) {
    auto bytes = read_bytes(corpus / name);
    ASSERT_GT(bytes.size(), 100u) << name;
    auto r = decode_image(bytes, {});
    ASSERT_FALSE(r) << name;
    EXPECT_EQ(r.err().code, errc::invalid_argument) << name;
    EXPECT_NE(r.err().message.find("corrupt JPEG image"), std::string::npos) << r.err().message;
  }

  std::vector<uint8_t> bad = {0xff, 0xd8, 0xff, 0xc4, 0x00, 0x00, 0x00}; // DHT: class 0, table 0
  for (int i = 0; i < 16; ++i)
    bad.push_back(17); // 16 x 17 = 272 codes
  bad.resize(bad.size() + 272, 0);
  const size_t len = bad.size() - 4;
  bad[4] = static_cast<uint8_t>(len >> 8);
  bad[5] = static_cast<uint8_t>(len & 0xff);
  bad.insert(bad.end(), {0xff, 0xd9});
  auto r = decode_image(bad, {});
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("Huffman table"), std::string::npos) << r.err().message;

  // A 271-byte PNG whose IDAT claims 2 GiB: refused before anything is
  // allocated for it (stb_image would realloc 2 GiB first).
  auto bomb = read_bytes(corpus / "regress-stb-png-idat-length-bomb.png");
  ASSERT_EQ(bomb.size(), 271u);
  auto b = decode_image(bomb, {});
  ASSERT_FALSE(b);
  EXPECT_NE(b.err().message.find("past the end of the file"), std::string::npos) << b.err().message;
  // A PNG whose first IDAT chunk is empty still decodes or is refused
  // cleanly (stb's memcpy(NULL, src, 0) on it is benign; see CMakeLists).
  (void)decode_image(read_bytes(corpus / "regress-stb-png-empty-idat.png"), {});

  // Truncated scan data is an error, not an image padded with grey.
  auto good = encode_jpeg(gradient_image(32, 32), 90);
  ASSERT_TRUE(decode_image(good, {}));
  std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<long>(good.size() * 3 / 4));
  auto c = decode_image(cut, {});
  ASSERT_FALSE(c);
  EXPECT_EQ(c.err().code, errc::invalid_argument);
}

TEST(image, oversized_images_are_refused_before_decoding) {
  // A real 1x1 PNG whose header is patched to claim 50000x50000 pixels
  // (7.5 GB decoded): refused from the header alone.
  auto png = encode_png(decoded_image{1, 1, {1, 2, 3}});
  ASSERT_GT(png.size(), 24u);
  for (int off : {16, 20}) { // IHDR width, height (big-endian)
    png[off] = 0;
    png[off + 1] = 0;
    png[off + 2] = 0xc3;
    png[off + 3] = 0x50;
  }
  auto r = decode_image(png, {});
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("50000x50000"), std::string::npos) << r.err().message;

  auto wide = encode_png(gradient_image(300, 2));
  image_limits limits;
  limits.max_width = 256;
  auto w = decode_image(wide, limits);
  ASSERT_FALSE(w);
  EXPECT_NE(w.err().message.find("256"), std::string::npos);
  limits = {};
  limits.max_bytes = wide.size() - 1;
  auto b = decode_image(wide, limits);
  ASSERT_FALSE(b);
  EXPECT_NE(b.err().message.find("bytes"), std::string::npos);
}

vision_config small_vision(int size) {
  vision_config v;
  v.image_size = size;
  v.patch_size = 1;
  return v;
}

float norm(uint8_t p, const vision_config& v, int c) {
  float x = static_cast<float>(static_cast<double>(p) * (1.0 / 255.0));
  return (x - v.image_mean[c]) / v.image_std[c];
}

TEST(image, bicubic_resize_matches_hand_computed_pillow_values) {
  // Row [10, 20, 30, 40] halved: Pillow's antialiased bicubic (support 4 at
  // scale 2) weighs taps at -0.25, 0.25, 0.75, 1.25 (scaled) with
  // [0.8671875, 0.8671875, 0.2265625, -0.0703125] / 1.890625:
  // 30.0 / 1.890625 = 15.87 → 16, and mirrored 64.53 / 1.890625 = 34.13 → 34.
  decoded_image row{4, 1, {}};
  for (uint8_t v : {10, 20, 30, 40})
    for (int c = 0; c < 3; ++c)
      row.rgb.push_back(v);
  auto half = resize_bicubic(row, 2, 1);
  ASSERT_EQ(half.rgb.size(), 6u);
  EXPECT_EQ(half.rgb[0], 16);
  EXPECT_EQ(half.rgb[3], 34);

  // The same through preprocessing: a 4x4 image of such rows, image_size 2.
  decoded_image sq{4, 4, {}};
  for (int y = 0; y < 4; ++y)
    sq.rgb.insert(sq.rgb.end(), row.rgb.begin(), row.rgb.end());
  auto v = small_vision(2);
  auto out = preprocess_image(sq, v);
  ASSERT_EQ(out.size(), 3u * 2 * 2);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 2; ++y) {
      EXPECT_FLOAT_EQ(out[c * 4 + y * 2 + 0], norm(16, v, c));
      EXPECT_FLOAT_EQ(out[c * 4 + y * 2 + 1], norm(34, v, c));
    }
}

// Reference digests from Pillow 13.0 + numpy, the way transformers'
// CLIPImageProcessor resizes (PIL bicubic to the shortest edge) and center
// crops; the images follow a fixed formula.
TEST(image, resize_and_crop_match_pillow_bit_for_bit) {
  struct ref {
    int w, h, size, out_w, out_h;
    const char* full_sha;
    const char* crop_sha;
  };
  const ref refs[] = {
      {37, 23, 14, 22, 14, "7393469e6e63deae083d06a643c8f3df0aac48d74876ae125dbabdc076e97c55",
       "257ef7931e4aad7392a615e09bd2e4a0853ecda658635a9c4c8d88dc5b1be9c6"},
      {9, 12, 20, 20, 26, "9bf3a85c1b066ecd00522440da2fdb1dc5b377e283a80f6130078b11d2ddb2b6",
       "f3f3b066755ba68355d15e9f7c085f3e785fe9b052d8fcebbd25e54a021571ef"},
      {300, 200, 56, 84, 56, "1f9ca1ca14886f4617427f95d574256c65c5b1808e6a2eaab304c4ae93746272",
       "fcef2695050ebbae4c544e6fad40cf6ee8d278f31378486229572d0877bca2b7"},
  };
  for (const auto& r : refs) {
    decoded_image img{r.w, r.h, std::vector<uint8_t>(static_cast<size_t>(r.w) * r.h * 3)};
    for (int y = 0; y < r.h; ++y)
      for (int x = 0; x < r.w; ++x)
        for (int c = 0; c < 3; ++c)
          img.rgb[(static_cast<size_t>(y) * r.w + x) * 3 + c] =
              static_cast<uint8_t>((x * 7 + y * 13 + c * 50 + (x * y) % 11) % 256);
    auto full = resize_bicubic(img, r.out_w, r.out_h);
    EXPECT_EQ(to_hex(sha256(full.rgb)), r.full_sha) << r.w << "x" << r.h;
    const int top = (r.out_h - r.size) / 2, left = (r.out_w - r.size) / 2;
    std::vector<uint8_t> crop;
    for (int y = top; y < top + r.size; ++y)
      crop.insert(crop.end(), full.rgb.begin() + (y * r.out_w + left) * 3,
                  full.rgb.begin() + (y * r.out_w + left + r.size) * 3);
    EXPECT_EQ(to_hex(sha256(crop)), r.crop_sha) << r.w << "x" << r.h;
    // preprocess_image resizes only the cropped window: same values.
    auto v = small_vision(r.size);
    auto out = preprocess_image(img, v);
    const size_t plane = static_cast<size_t>(r.size) * r.size;
    for (size_t p = 0; p < plane; ++p)
      for (int c = 0; c < 3; ++c)
        ASSERT_FLOAT_EQ(out[c * plane + p], norm(crop[p * 3 + c], v, c));
  }
}

TEST(image, preprocess_crops_the_center_and_normalises) {
  std::mt19937_64 rng(std::random_device{}());
  // Short side already the target: no resize, only the center crop
  // (top = (80 - 56) / 2 = 12).
  auto img = random_image(rng, 56, 80);
  auto v = small_vision(56);
  auto out = preprocess_image(img, v);
  ASSERT_EQ(out.size(), 3u * 56 * 56);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 56; y += 5)
      for (int x = 0; x < 56; x += 3)
        ASSERT_FLOAT_EQ(out[(c * 56 + y) * 56 + x],
                        norm(img.rgb[((y + 12) * 56 + x) * 3 + c], v, c));
  // Wide image: left = (int(56 * 101 / 56) - 56) / 2 = 22.
  auto wide = random_image(rng, 101, 56);
  auto wo = preprocess_image(wide, v);
  EXPECT_FLOAT_EQ(wo[0], norm(wide.rgb[22 * 3], v, 0));
  // A flat colour stays flat through resampling at any size.
  decoded_image flat{173, 91, std::vector<uint8_t>(173 * 91 * 3)};
  for (size_t i = 0; i < flat.rgb.size(); ++i)
    flat.rgb[i] = static_cast<uint8_t>(i % 3 == 0 ? 200 : i % 3 == 1 ? 7 : 99);
  auto fo = preprocess_image(flat, v);
  for (size_t i = 0; i < fo.size(); ++i)
    ASSERT_FLOAT_EQ(fo[i], norm(i / (56 * 56) == 0   ? 200
                                : i / (56 * 56) == 1 ? 7
                                                     : 99,
                                v, static_cast<int>(i / (56 * 56))));
  // A very thin strip does not allocate its enormous full resize.
  decoded_image strip{2000, 1, std::vector<uint8_t>(2000 * 3, 128)};
  auto so = preprocess_image(strip, small_vision(336));
  EXPECT_EQ(so.size(), 3u * 336 * 336);
}

TEST(image, key_covers_pixels_and_preprocessing) {
  std::mt19937_64 rng(std::random_device{}());
  auto img = random_image(rng, 30, 20);
  auto v = small_vision(56);
  auto k = image_key(img, v);
  EXPECT_EQ(image_key(img, v), k);
  auto changed = img;
  changed.rgb[rng() % changed.rgb.size()] ^= 1;
  EXPECT_NE(image_key(changed, v), k);
  auto other = v;
  other.image_size = 112;
  EXPECT_NE(image_key(img, other), k);
  other = v;
  other.image_mean[2] = 0.5f;
  EXPECT_NE(image_key(img, other), k);
  decoded_image transposed{20, 30, img.rgb};
  EXPECT_NE(image_key(transposed, v), k);
}

} // namespace
} // namespace mosaic
