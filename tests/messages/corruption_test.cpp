// Buffers from another process may be truncated, bit-flipped or plain
// garbage: from_bytes rejects them with errc::corrupt_data naming the
// table, and what still verifies is read field by field without crashing.

#include <functional>
#include <span>

#include <gtest/gtest.h>

#include "tests/messages/message_samples.hpp"
#include "tests/messages/message_touch.hpp"

namespace mosaic {
namespace {

/// One sample buffer plus a type-erased "verify, then read everything".
struct sample {
  std::string name;
  std::vector<uint8_t> bytes;
  /// Returns the verification status; on success every field was read.
  std::function<status(std::span<const uint8_t>)> verify_and_touch;
};

std::vector<sample> all_samples(test::rng_t& rng) {
  std::vector<sample> out;
  test::for_each_sample(rng, [&](const auto& m) {
    using msg_type = std::decay_t<decltype(m)>;
    out.push_back({std::string{m.name()},
                   {m.bytes().begin(), m.bytes().end()},
                   [](std::span<const uint8_t> b) -> status {
                     auto r = msg_type::from_bytes(b);
                     if (!r)
                       return std::move(r).err();
                     volatile uint64_t sink = test::touch_all(*r);
                     (void)sink;
                     return {};
                   }});
  });
  return out;
}

class corruption_test : public ::testing::Test {
protected:
  void SetUp() override { rng_.seed(seed_); }
  uint64_t seed_ = test::fresh_seed();
  test::rng_t rng_;
};

TEST_F(corruption_test, truncated_buffers_are_rejected) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  for (const auto& s : all_samples(rng_)) {
    SCOPED_TRACE(s.name);
    // The last few bytes may be alignment padding that nothing refers to;
    // cutting into anything the message uses must fail.
    constexpr size_t max_padding = 7;
    for (size_t len = 0; len + max_padding < s.bytes.size(); ++len) {
      auto st = s.verify_and_touch(std::span{s.bytes.data(), len});
      ASSERT_FALSE(st.has_value())
          << "a " << len << "-byte prefix of " << s.bytes.size() << " bytes verified";
      EXPECT_EQ(st.err().code, errc::corrupt_data);
      EXPECT_NE(st.err().message.find(s.name), std::string::npos) << st.err().message;
    }
    // The full buffer still verifies (the loop above did not test a copy).
    EXPECT_TRUE(s.verify_and_touch(s.bytes).has_value());
  }
}

TEST_F(corruption_test, bit_flipped_buffers_are_rejected_or_read_safely) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  auto samples = all_samples(rng_);
  int rejected = 0;
  int accepted = 0;
  constexpr int n_flips = 2000;
  for (int i = 0; i < n_flips; ++i) {
    const auto& s = samples[rng_() % samples.size()];
    auto bytes = s.bytes;
    for (size_t n = 1 + rng_() % 3; n > 0; --n) {
      auto bit = rng_() % (bytes.size() * 8);
      bytes[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    }
    auto st = s.verify_and_touch(bytes);
    if (st.has_value()) {
      ++accepted;
    } else {
      ++rejected;
      EXPECT_EQ(st.err().code, errc::corrupt_data) << s.name;
    }
  }
  RecordProperty("rejected", rejected);
  RecordProperty("accepted", accepted);
  // Flips that land in values (ids, text, key bytes) still verify; the
  // verifier must still catch a share of them (offsets, sizes, identifiers).
  EXPECT_GT(rejected, n_flips / 50) << "accepted " << accepted;
  EXPECT_GT(accepted, 0);
}

TEST_F(corruption_test, random_garbage_with_a_valid_identifier_is_rejected_or_read_safely) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  auto samples = all_samples(rng_);
  int rejected = 0;
  for (int i = 0; i < 500; ++i) {
    const auto& s = samples[rng_() % samples.size()];
    auto bytes = test::random_bytes(rng_, 256);
    if (bytes.size() >= 8) // keep the right tag so the table verifier runs
      std::copy(s.bytes.begin() + 4, s.bytes.begin() + 8, bytes.begin() + 4);
    rejected += !s.verify_and_touch(bytes).has_value();
  }
  EXPECT_GT(rejected, 400);
}

TEST_F(corruption_test, oversized_and_empty_buffers_name_the_problem) {
  auto empty = generate_request_msg::from_bytes(std::span<const uint8_t>{});
  ASSERT_FALSE(empty.has_value());
  EXPECT_NE(empty.err().message.find("empty buffer"), std::string::npos);

  std::vector<uint8_t> huge(max_message_bytes + 1);
  auto big = generate_request_msg::from_bytes(std::move(huge));
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.err().code, errc::corrupt_data);
  EXPECT_NE(big.err().message.find("exceeds the limit"), std::string::npos);
}

TEST_F(corruption_test, misaligned_copies_are_verified_from_an_aligned_buffer) {
  // from_bytes copies, so a buffer that sits at an odd address in a larger
  // receive buffer (a ZeroMQ frame) still verifies.
  auto m = make_generate_request_msg(test::random_generate_request(rng_));
  std::vector<uint8_t> frame(m.bytes().size() + 1);
  std::copy(m.bytes().begin(), m.bytes().end(), frame.begin() + 1);
  auto back = generate_request_msg::from_bytes(std::span{frame}.subspan(1));
  ASSERT_TRUE(back.has_value()) << back.err().to_string();
  EXPECT_EQ(*back, m);
}

} // namespace
} // namespace mosaic
