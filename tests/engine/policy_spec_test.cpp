#include "engine/policy_spec.hpp"

#include <gtest/gtest.h>

namespace mosaic {
namespace {

TEST(policy_spec, parses_every_form_and_round_trips) {
  for (std::string_view text :
       {"full", "prefix", "full_reuse", "mpic:32", "mpic:4", "cacheblend:0.15", "vlcache:0.05"}) {
    auto p = parse_policy(text);
    ASSERT_TRUE(p) << text;
    EXPECT_EQ(p->to_string(), text);
    auto again = parse_policy(p->to_string());
    ASSERT_TRUE(again);
    EXPECT_EQ(*again, *p);
  }
  EXPECT_EQ(parse_policy("mpic:32")->k, 32);
  EXPECT_FLOAT_EQ(parse_policy("vlcache:0.05")->ratio, 0.05f);
}

TEST(policy_spec, rejects_bad_strings_with_the_accepted_forms) {
  for (std::string_view text : {"", "mpic", "mpic:", "mpic:0", "mpic:-3", "mpic:3x", "mpic:1e9",
                                "cacheblend:0", "cacheblend:1.5", "vlcache:nan", "fast",
                                "prefix:3"}) {
    auto p = parse_policy(text);
    ASSERT_FALSE(p) << text;
    EXPECT_EQ(p.err().code, errc::invalid_argument);
    EXPECT_NE(p.err().message.find("expected one of"), std::string::npos);
  }
}

} // namespace
} // namespace mosaic
