#include "engine/policy_spec.hpp"

#include <gtest/gtest.h>

namespace mosaic {
namespace {

TEST(policy_spec, parses_every_form_and_round_trips) {
  for (std::string_view text :
       {"full", "prefix", "full_reuse", "mpic:32", "mpic:4", "cacheblend:0.15", "cacheblend:0.15@2",
        "cacheblend:0.2@0", "vlcache:0.05"}) {
    auto p = parse_policy(text);
    ASSERT_TRUE(p) << text;
    EXPECT_EQ(p->to_string(), text);
    auto again = parse_policy(p->to_string());
    ASSERT_TRUE(again);
    EXPECT_EQ(*again, *p);
  }
  EXPECT_EQ(parse_policy("mpic:32")->k, 32);
  EXPECT_FLOAT_EQ(parse_policy("vlcache:0.05")->ratio, 0.05f);
  EXPECT_EQ(parse_policy("cacheblend:0.15")->check_layer, 1);
  EXPECT_EQ(parse_policy("cacheblend:0.15@3")->check_layer, 3);
  EXPECT_FLOAT_EQ(parse_policy("cacheblend:0.15@3")->ratio, 0.15f);
  // The default check layer is not written: one canonical form.
  EXPECT_EQ(parse_policy("cacheblend:0.15@1")->to_string(), "cacheblend:0.15");
}

TEST(policy_spec, rejects_bad_strings_with_the_accepted_forms) {
  for (std::string_view text :
       {"", "mpic", "mpic:", "mpic:0", "mpic:-3", "mpic:3x", "mpic:1e9", "cacheblend:0",
        "cacheblend:1.5", "vlcache:nan", "fast", "prefix:3", "cacheblend:0.1@", "cacheblend:0.1@-1",
        "cacheblend:0.1@x", "cacheblend:0.1@2@3", "cacheblend:@2", "cacheblend:0.1@5000",
        "vlcache:0.1@2"}) {
    auto p = parse_policy(text);
    ASSERT_FALSE(p) << text;
    EXPECT_EQ(p.err().code, errc::invalid_argument);
    EXPECT_NE(p.err().message.find("expected one of"), std::string::npos);
  }
}

} // namespace
} // namespace mosaic
