#include "kv/dtype_convert.hpp"

#include <bit>
#include <cmath>
#include <gtest/gtest.h>
#include <limits>
#include <random>
#include <vector>

namespace mosaic::kv {
namespace {

TEST(dtype_convert, round_trip_error_within_half_ulp) {
  std::mt19937 rng{std::random_device{}()};
  std::normal_distribution<float> dist{0.0f, 10.0f};
  std::vector<float> src(4096), back(src.size());
  for (auto& x : src)
    x = dist(rng);
  std::vector<uint16_t> bits(src.size());
  for (auto [dtype, rel] :
       {std::pair{storage_dtype::f16, 0x1.0p-11f}, std::pair{storage_dtype::bf16, 0x1.0p-8f}}) {
    encode(dtype, src.data(), bits.data(), src.size());
    decode(dtype, bits.data(), back.data(), src.size());
    for (size_t i = 0; i < src.size(); ++i)
      ASSERT_LE(std::fabs(back[i] - src[i]), rel * std::fabs(src[i]) + 1e-7f)
          << to_string(dtype) << " " << src[i];
  }
}

TEST(dtype_convert, parse_names_the_fix) {
  EXPECT_EQ(*parse_storage_dtype("bf16"), storage_dtype::bf16);
  auto bad = parse_storage_dtype("fp8");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.err().message.find("use f16 or bf16"), std::string::npos);
}

} // namespace
} // namespace mosaic::kv
