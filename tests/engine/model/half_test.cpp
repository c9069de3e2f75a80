#include "engine/model/half.hpp"

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "tests/engine/model/half_reference.hpp"

namespace mosaic {
namespace {

namespace ref = testing::half_reference;

// The independently written scalar converters are the oracle: the product
// converters (bulk and scalar) must agree bit for bit on any input.
TEST(half, matches_scalar_oracle_on_random_bit_patterns) {
  std::mt19937 rng{std::random_device{}()};
  std::vector<float> src(1 << 16);
  for (auto& x : src)
    x = std::bit_cast<float>(uint32_t(rng()));
  std::vector<uint16_t> h(src.size()), b(src.size());
  f32_to_f16(src.data(), h.data(), src.size());
  f32_to_bf16(src.data(), b.data(), src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (std::isnan(src[i])) {
      EXPECT_TRUE(std::isnan(ref::f16_to_f32(h[i])));
      EXPECT_TRUE(std::isnan(ref::bf16_to_f32(b[i])));
      continue;
    }
    ASSERT_EQ(h[i], ref::f32_to_f16(src[i])) << "f16 of " << src[i];
    ASSERT_EQ(b[i], ref::f32_to_bf16(src[i])) << "bf16 of " << src[i];
  }
}

TEST(half, decode_is_exact_for_every_16_bit_pattern) {
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i)
    all[i] = uint16_t(i);
  std::vector<float> h(all.size()), b(all.size());
  f16_to_f32(all.data(), h.data(), all.size());
  bf16_to_f32(all.data(), b.data(), all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    const float hf = ref::f16_to_f32(all[i]);
    if (std::isnan(hf))
      EXPECT_TRUE(std::isnan(h[i]));
    else
      ASSERT_EQ(std::bit_cast<uint32_t>(h[i]), std::bit_cast<uint32_t>(hf)) << i;
    ASSERT_EQ(std::bit_cast<uint32_t>(b[i]), uint32_t(i) << 16);
  }
}

TEST(half, special_values) {
  const float in[] = {0.0f, -0.0f, INFINITY, -INFINITY, 65504.0f, 70000.0f, 1e-8f};
  uint16_t h[7];
  f32_to_f16(in, h, 7);
  EXPECT_EQ(h[0], 0x0000);
  EXPECT_EQ(h[1], 0x8000);
  EXPECT_EQ(h[2], 0x7C00);
  EXPECT_EQ(h[3], 0xFC00);
  EXPECT_EQ(h[4], 0x7BFF);
  EXPECT_EQ(h[5], 0x7C00); // overflow → inf
  EXPECT_EQ(h[6], 0x0000); // below half the smallest subnormal → 0
}

TEST(half, scalar_forms_match_the_oracle_on_every_16_bit_pattern) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const float want = ref::f16_to_f32(h);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(h)));
      continue;
    }
    ASSERT_EQ(std::bit_cast<uint32_t>(f16_to_f32(h)), std::bit_cast<uint32_t>(want)) << i;
    ASSERT_EQ(f32_to_f16(want), h) << i; // exact values round-trip
  }
}

} // namespace
} // namespace mosaic
