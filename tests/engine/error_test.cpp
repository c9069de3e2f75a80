#include "engine/error.hpp"

#include <gtest/gtest.h>

namespace mosaic {
namespace {

result<int> parse_positive(int x) {
  if (x <= 0)
    return make_error(errc::invalid_argument, "expected a positive number, got ", std::to_string(x));
  return x;
}

status twice(int x) {
  MOSAIC_TRY(parse_positive(x));
  return {};
}

TEST(error, result_carries_value_or_error) {
  auto ok = parse_positive(3);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 3);
  auto bad = parse_positive(-1);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.err().code, errc::invalid_argument);
  EXPECT_EQ(bad.err().to_string(), "invalid_argument: expected a positive number, got -1");
}

TEST(error, try_propagates) {
  EXPECT_TRUE(twice(1));
  auto st = twice(0);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.err().code, errc::invalid_argument);
}

} // namespace
} // namespace mosaic
