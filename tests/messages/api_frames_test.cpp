// The ZeroMQ API's frames (messages/api.fbs): every field survives a round
// trip, and bytes that are not a frame of the right kind are refused with
// corrupt_data, never read (truncated, bit-flipped, garbage, the other
// direction's frames).

#include <random>

#include <gtest/gtest.h>

#include "messages/api_frames.hpp"

namespace mosaic::api {
namespace {

client_frame sample_request() {
  chat_request c;
  c.api_key = "sk-test-0001";
  c.model = "builtin:tiny";
  c.messages.push_back({"system", {std::string{"be brief"}}});
  c.messages.push_back({"user",
                        {std::string{"what is "}, image_bytes{{0x89, 'P', 'N', 'G'}, "image/png"},
                         image_ref{std::string(64, 'a')}, std::string{" and this?"}}});
  c.max_tokens = 7;
  c.temperature = 0.5f;
  c.top_p = 0.9f;
  c.seed = 42;
  c.stop = {"\n", "END"};
  c.policy = "mpic:32";
  return {77, c};
}

TEST(api_frames, client_frames_round_trip) {
  const auto f = sample_request();
  auto back = decode_client_frame(encode(f));
  ASSERT_TRUE(back) << back.err().to_string();
  EXPECT_EQ(*back, f);

  chat_request defaults;
  defaults.messages.push_back({"user", {std::string{"hi"}}});
  auto d = decode_client_frame(encode(client_frame{1, defaults}));
  ASSERT_TRUE(d);
  const auto& c = std::get<chat_request>(d->body);
  EXPECT_EQ(c.max_tokens, 256);
  EXPECT_FALSE(c.seed.has_value());
  EXPECT_FLOAT_EQ(c.temperature, 1.0f);

  auto cancel = decode_client_frame(encode(client_frame{9, cancel_request{}}));
  ASSERT_TRUE(cancel);
  EXPECT_EQ(cancel->request_id, 9u);
  EXPECT_TRUE(std::holds_alternative<cancel_request>(cancel->body));
}

TEST(api_frames, server_frames_round_trip) {
  for (const server_frame& f :
       {server_frame{3, token_frame{0, 1234, "Hel"}},
        server_frame{3, finish_frame{"length", 600, 5, 576}},
        server_frame{0, error_frame{401, "authentication_error", "incorrect API key", "", "x"}}}) {
    auto back = decode_server_frame(encode(f));
    ASSERT_TRUE(back) << back.err().to_string();
    EXPECT_EQ(*back, f);
  }
}

TEST(api_frames, the_other_direction_and_garbage_are_refused) {
  const auto request = encode(sample_request());
  const auto reply = encode(server_frame{1, token_frame{0, 5, "x"}});
  auto wrong = decode_server_frame(request);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.err().code, errc::corrupt_data);
  ASSERT_FALSE(decode_client_frame(reply));
  EXPECT_FALSE(decode_client_frame(std::vector<uint8_t>{}));
  EXPECT_FALSE(decode_client_frame(std::vector<uint8_t>(3, 0)));
  const std::string text = "{\"model\": \"not a flatbuffer\"}";
  EXPECT_FALSE(decode_client_frame({reinterpret_cast<const uint8_t*>(text.data()), text.size()}));
}

TEST(api_frames, damaged_frames_never_crash) {
  const auto good = encode(sample_request());
  std::mt19937 rng{std::random_device{}()};
  int refused = 0;
  for (int i = 0; i < 2000; ++i) {
    auto b = good;
    if (i % 2 == 0) {
      b.resize(rng() % b.size()); // truncated
    } else {
      for (int k = 0; k < 1 + int(rng() % 4); ++k) // bit flips
        b[rng() % b.size()] ^= uint8_t(1u << (rng() % 8));
    }
    auto r = decode_client_frame(b);
    if (!r) {
      ++refused;
      EXPECT_TRUE(r.err().code == errc::corrupt_data || r.err().code == errc::invalid_argument)
          << r.err().to_string();
      EXPECT_FALSE(r.err().message.empty());
    }
  }
  EXPECT_GT(refused, 900); // about every truncation
}

} // namespace
} // namespace mosaic::api
