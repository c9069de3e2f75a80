#include "engine/model/safetensors.hpp"

#include <bit>
#include <cmath>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "engine/model/half.hpp"
#include "tests/engine/model/temp_dir.hpp"

namespace mosaic {
namespace {

namespace fs = std::filesystem;

std::vector<float> random_values(std::mt19937_64& rng, size_t n, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v)
    x = dist(rng);
  return v;
}

// A raw file: 8-byte length, `header` JSON, then `data_bytes` bytes.
void write_raw(const fs::path& p, const std::string& header, size_t data_bytes,
               uint64_t declared_len = UINT64_MAX) {
  std::ofstream out(p, std::ios::binary);
  uint64_t len = declared_len == UINT64_MAX ? header.size() : declared_len;
  for (int i = 0; i < 8; ++i)
    out.put(static_cast<char>(len >> (8 * i)));
  out << header;
  out << std::string(data_bytes, '\0');
}

std::string open_error(const fs::path& p) {
  auto f = safetensors_file::open(p);
  EXPECT_FALSE(f) << "expected " << p << " to be refused";
  return f ? std::string() : f.err().to_string();
}

TEST(half, f16_round_trips_every_value_and_rounds_to_nearest_even) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f))
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
    else
      EXPECT_EQ(f32_to_f16(f), h) << "f16 bits " << h;
  }
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00); // rounds up to inf
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);        // tie to even
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00); // tie to even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0xc0a0), -5.0f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
}

TEST(safetensors, round_trip_f32_f16_bf16) {
  std::mt19937_64 rng(std::random_device{}());
  test::temp_dir tmp;
  safetensors_writer w;
  auto a = random_values(rng, 3 * 5, 1.0f);
  auto b = random_values(rng, 7, 0.02f);
  auto c = random_values(rng, 2 * 3 * 4, 100.0f);
  ASSERT_TRUE(w.add("a.weight", {3, 5}, a, st_dtype::f32));
  ASSERT_TRUE(w.add("b.bias", {7}, b, st_dtype::f16));
  ASSERT_TRUE(w.add("c", {2, 3, 4}, c, st_dtype::bf16));
  ASSERT_TRUE(w.add("empty", {0, 4}, {}, st_dtype::f16));
  w.set_metadata("format", "pt");
  EXPECT_FALSE(w.add("a.weight", {1}, std::span<const float>(a).first(1))); // name taken
  EXPECT_FALSE(w.add("bad", {2, 2}, a)); // 15 values for 4 elements
  auto path = tmp.path() / "m.safetensors";
  ASSERT_TRUE(w.write(path));
  // Atomic write leaves no temp file behind.
  int n = 0;
  for (const auto& e : fs::directory_iterator(tmp.path())) {
    (void)e;
    ++n;
  }
  EXPECT_EQ(n, 1);

  auto f = safetensors_file::open(path);
  ASSERT_TRUE(f) << f.err().to_string();
  EXPECT_EQ(f->tensors().size(), 4u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  ASSERT_NE(f->find("c"), nullptr);
  EXPECT_EQ(f->find("c")->dtype, st_dtype::bf16);
  EXPECT_EQ(f->find("c")->shape, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(*f->read_f32("a.weight"), a);
  auto rb = *f->read_f32("b.bias");
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(rb[i], f16_to_f32(f32_to_f16(b[i])));
    EXPECT_NEAR(rb[i], b[i], std::abs(b[i]) * 0x1.0p-11f + 1e-7f);
  }
  auto rc = *f->read_f32("c");
  for (size_t i = 0; i < c.size(); ++i)
    EXPECT_NEAR(rc[i], c[i], std::abs(c[i]) * 0x1.0p-8f);
  EXPECT_TRUE(f->read_f32("empty")->empty());
  auto missing = f->read_f32("nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.err().code, errc::not_found);
}

TEST(safetensors, truncated_file_names_the_tensor) {
  std::mt19937_64 rng(std::random_device{}());
  test::temp_dir tmp;
  safetensors_writer w;
  ASSERT_TRUE(w.add("first", {4}, random_values(rng, 4, 1.0f)));
  ASSERT_TRUE(w.add("second", {8}, random_values(rng, 8, 1.0f)));
  auto bytes = w.serialize();
  auto path = tmp.path() / "t.safetensors";
  // Drop a random number of bytes from the end of "second"'s data.
  size_t cut = 1 + rng() % 32;
  ASSERT_TRUE(write_file_atomically(path, std::span(bytes).first(bytes.size() - cut)));
  auto msg = open_error(path);
  EXPECT_NE(msg.find("'second'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  ASSERT_TRUE(write_file_atomically(path, std::span(bytes).first(5)));
  msg = open_error(path);
  EXPECT_NE(msg.find("too short"), std::string::npos) << msg;
}

TEST(safetensors, bad_header_length_names_the_offset) {
  test::temp_dir tmp;
  auto path = tmp.path() / "h.safetensors";
  write_raw(path, "{}", 0, /*declared_len=*/1ull << 40);
  auto msg = open_error(path);
  EXPECT_NE(msg.find("byte offset 0"), std::string::npos) << msg;
  write_raw(path, "not json at all", 0);
  msg = open_error(path);
  EXPECT_NE(msg.find("not a JSON object"), std::string::npos) << msg;
}

TEST(safetensors, offsets_out_of_range_inconsistent_or_overlapping) {
  test::temp_dir tmp;
  auto path = tmp.path() / "o.safetensors";
  write_raw(path, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  auto msg = open_error(path);
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("byte offset"), std::string::npos) << msg;

  write_raw(path, R"({"w":{"dtype":"F16","shape":[4],"data_offsets":[0,16]}})", 16);
  msg = open_error(path);
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("needs 8"), std::string::npos) << msg;

  write_raw(path, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 16);
  msg = open_error(path);
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;

  write_raw(path,
            R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
            R"("y":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
            20);
  msg = open_error(path);
  EXPECT_NE(msg.find("'x'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'y'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("overlap"), std::string::npos) << msg;

  write_raw(path, R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4);
  msg = open_error(path);
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
}

TEST(safetensors, unsupported_and_unknown_dtypes_name_the_tensor) {
  test::temp_dir tmp;
  auto path = tmp.path() / "d.safetensors";
  write_raw(path, R"({"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", 16);
  auto f = safetensors_file::open(path);
  ASSERT_FALSE(f);
  EXPECT_EQ(f.err().code, errc::unsupported);
  EXPECT_NE(f.err().message.find("'ids'"), std::string::npos) << f.err().message;
  EXPECT_NE(f.err().message.find("I64"), std::string::npos);

  write_raw(path, R"({"q":{"dtype":"Q9","shape":[2],"data_offsets":[0,2]}})", 2);
  auto g = safetensors_file::open(path);
  ASSERT_FALSE(g);
  EXPECT_EQ(g.err().code, errc::corrupt_data);
  EXPECT_NE(g.err().message.find("'q'"), std::string::npos) << g.err().message;
}

} // namespace
} // namespace mosaic
