#include "engine/compression_spec.hpp"

#include <gtest/gtest.h>

namespace mosaic {
namespace {

TEST(compression_spec_test, parses_and_prints_round_trip) {
  auto s = parse_compression("snapkv:img=0.25,txt=0.5");
  ASSERT_TRUE(s) << s.err().to_string();
  EXPECT_EQ(s->method, compression_method::snapkv);
  EXPECT_FLOAT_EQ(s->image_ratio, 0.25f);
  EXPECT_FLOAT_EQ(s->text_ratio, 0.5f);
  auto again = parse_compression(s->to_string());
  ASSERT_TRUE(again) << again.err().to_string();
  EXPECT_EQ(again->to_string(), s->to_string());
  auto st = parse_compression("streaming:sink=2,recent=8");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->sink, 2);
  EXPECT_EQ(st->recent, 8);
  EXPECT_FALSE(parse_compression("none")->enabled());
  EXPECT_EQ(parse_compression("learned")->method, compression_method::learned);
  EXPECT_EQ(parse_compression("learned")->to_string(), "learned");
  for (const char* bad : {"snap", "snapkv:img=0", "snapkv:img=1.5", "keynorm:foo=1",
                          "snapkv:window=0", "none:img=0.5", "snapkv:img=", "learned:img=0.5",
                          "snapkv:", "snapkv:img=0.5,img=0.25", "streaming:sink=1,,recent=2"}) {
    auto r = parse_compression(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.err().code, errc::invalid_argument);
  }
}

} // namespace
} // namespace mosaic
