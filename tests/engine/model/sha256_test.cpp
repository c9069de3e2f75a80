#include "engine/model/sha256.hpp"

#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace mosaic {
namespace {

// FIPS 180-2 / NIST test vectors.
TEST(sha256, known_vectors) {
  EXPECT_EQ(to_hex(sha256(std::string_view(""))),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(to_hex(sha256(std::string_view("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(
      to_hex(sha256(std::string_view("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  sha256_hasher h;
  std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i)
    h.update(chunk);
  EXPECT_EQ(to_hex(h.finish()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(sha256, streaming_in_random_chunks_equals_one_shot_and_finish_resets) {
  std::mt19937_64 rng(std::random_device{}());
  std::vector<uint8_t> data(1 + rng() % 20000);
  for (auto& b : data)
    b = static_cast<uint8_t>(rng());
  const digest whole = sha256(data);
  sha256_hasher h;
  for (int round = 0; round < 2; ++round) {
    size_t i = 0;
    while (i < data.size()) {
      size_t n = std::min<size_t>(data.size() - i, rng() % 300);
      h.update(std::span<const uint8_t>(data).subspan(i, n));
      i += n;
    }
    EXPECT_EQ(h.finish(), whole) << "round " << round;
  }
}

TEST(sha256, hex_round_trip_and_errors) {
  const digest d = sha256(std::string_view("mosaic"));
  auto back = from_hex(to_hex(d));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, d);
  std::string upper = to_hex(d);
  for (auto& c : upper)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  ASSERT_TRUE(from_hex(upper));
  EXPECT_EQ(*from_hex(upper), d);

  auto short_hex = from_hex("abc");
  ASSERT_FALSE(short_hex);
  EXPECT_EQ(short_hex.err().code, errc::invalid_argument);
  std::string bad = to_hex(d);
  bad[17] = 'g';
  auto r = from_hex(bad);
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("position 17"), std::string::npos) << r.err().message;
}

} // namespace
} // namespace mosaic
