// server/json_parse.hpp: the simdjson path gives exactly what nlohmann's
// parser gives (the same values and the same number types), and invalid
// JSON is refused on both.

#include "server/json_parse.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mosaic::server {
namespace {

using json = nlohmann::json;

/// Same tree, same types (nlohmann's == would call 5u and 5 equal).
void expect_same(const json& a, const json& b, const std::string& where) {
  ASSERT_EQ(a.type(), b.type()) << where;
  if (a.is_object()) {
    ASSERT_EQ(a.size(), b.size()) << where;
    for (auto it = a.begin(); it != a.end(); ++it) {
      ASSERT_TRUE(b.contains(it.key())) << where << "." << it.key();
      expect_same(*it, b[it.key()], where + "." + it.key());
    }
  } else if (a.is_array()) {
    ASSERT_EQ(a.size(), b.size()) << where;
    for (size_t i = 0; i < a.size(); ++i)
      expect_same(a[i], b[i], where + "[" + std::to_string(i) + "]");
  } else {
    EXPECT_EQ(a, b) << where;
  }
}

void expect_as_nlohmann(const std::string& body) {
  const json fast = parse_json(body);
  const json ref = json::parse(body, nullptr, false);
  ASSERT_EQ(fast.is_discarded(), ref.is_discarded()) << body.substr(0, 200);
  if (!ref.is_discarded())
    expect_same(fast, ref, "$");
}

TEST(json_parse, reads_requests_as_nlohmann_does) {
  for (const char* body : {
           R"({"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8})",
           R"({"a":0,"b":-0,"c":-1,"d":1.5,"e":-0.0,"f":1e3,"g":18446744073709551615,
               "h":-9223372036854775808,"i":true,"j":false,"k":null,"l":[],"m":{}})",
           R"({"dup":1,"dup":"last"})",
           R"({"esc":"a\"b\\c\u00e9\ud83d\ude00\n"})",
           R"(  [1, [2, [3]], {"x": [null]}]  )",
           R"("just a string")",
           "42",
       })
    expect_as_nlohmann(body);
}

TEST(json_parse, refuses_what_nlohmann_refuses) {
  for (const std::string& body :
       {std::string{R"({"a":1,})"}, std::string{R"({"a":1} trailing)"}, std::string{"{"},
        std::string{""}, std::string{R"({"a":"\x80"})"}, std::string{R"({"a":"\ud800"})"},
        std::string{"[1e400]"}, std::string{R"({'a':1})"}, std::string{"[01]"},
        std::string{"{\"a\":\"tab\there\"}"}, std::string{"nul\0l", 5}})
    EXPECT_TRUE(parse_json(body).is_discarded()) << body;
}

TEST(json_parse, numbers_past_64_bits_and_deep_nesting_go_to_nlohmann) {
  // simdjson refuses an integer past 64 bits; nlohmann reads it as a float.
  expect_as_nlohmann(R"({"big":123456789012345678901234567890})");
  // Nesting past the fast path's depth bound.
  std::string deep(300, '[');
  deep += std::string(300, ']');
  expect_as_nlohmann(deep);
}

TEST(json_parse, megabyte_data_url_strings_come_through_whole) {
  std::string url = "data:image/png;base64,";
  for (int i = 0; i < (1 << 20); ++i)
    url += "ABCD"[i % 4];
  const std::string body =
      R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":")" +
      url + R"("}}]}]})";
  const json j = parse_json(body);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["messages"][0]["content"][0]["image_url"]["url"].get<std::string>(), url);
}

} // namespace
} // namespace mosaic::server
