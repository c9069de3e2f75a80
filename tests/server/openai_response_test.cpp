// Response bodies and SSE framing as OpenAI clients parse them.

#include <limits>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server/api_keys.hpp"
#include "server/image_probe.hpp"
#include "server/openai_response.hpp"
#include "server/request_convert.hpp"
#include "tests/server/test_images.hpp"

namespace mosaic::server {
namespace {

using json = nlohmann::json;

TEST(openai_response, chat_completion_has_message_and_usage) {
  response_header h{api_kind::chat, "chatcmpl-1", "builtin:tiny", 42};
  auto j = json::parse(full_response_json(h, "a cat", msg::FinishReason::stop, {10, 2}));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "a cat");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 10);
  EXPECT_EQ(j["usage"]["completion_tokens"], 2);
  EXPECT_EQ(j["usage"]["total_tokens"], 12);
  EXPECT_EQ(j["created"], 42);
}

TEST(openai_response, compressed_requests_report_memory_saved_and_ttft_without_compression) {
  response_header h{api_kind::chat, "chatcmpl-2", "m", 1};
  usage_counts u{600, 4, 512, compression_report{150, 4'800'000, 1'200'000, 0.25, 1.0}};
  auto j = json::parse(full_response_json(h, "ok", msg::FinishReason::stop, u));
  const auto& c = j["usage"]["mosaic"]["kv_compression"];
  EXPECT_EQ(c["prompt_tokens_kept"], 150);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 512);
  EXPECT_EQ(c["kv_bytes_before"], 4'800'000);
  EXPECT_EQ(c["kv_bytes_after"], 1'200'000);
  EXPECT_EQ(c["kv_bytes_saved"], 3'600'000);
  EXPECT_DOUBLE_EQ(c["compress_seconds"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(c["ttft_seconds"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(c["ttft_without_compression_seconds"].get<double>(), 0.75);
  EXPECT_EQ(j["usage"]["total_tokens"], 604);
  // Uncompressed requests keep the plain OpenAI usage object.
  auto plain = json::parse(full_response_json(h, "ok", msg::FinishReason::stop, {600, 4}));
  EXPECT_FALSE(plain["usage"].contains("mosaic"));
}

answer_tokens two_tokens() {
  answer_tokens t;
  wire::token_event a;
  a.token_id = 7;
  a.text = "a";
  a.logprobs = {{7, -0.25f, "a"}, {7, -0.25f, "a"}, {9, -1.5f, " b"}};
  a.prompt_token_ids = {1, 5, 5, 3};
  t.add(a);
  wire::token_event b;
  b.token_id = 9;
  b.text = " b";
  b.logprobs = {{9, -std::numeric_limits<float>::infinity(), " b"},
                {4, -0.5f, "\xe2"},
                {5, -0.75f, "\xe2"}};
  t.add(b);
  return t;
}

TEST(openai_response, chat_logprobs_and_token_ids_in_openai_and_vllm_shape) {
  response_header h{api_kind::chat, "chatcmpl-1", "builtin:tiny", 42};
  const auto t = two_tokens();
  auto j = json::parse(full_response_json(h, "a b", msg::FinishReason::length, {4, 2}, {true, true}, t));
  const auto& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], "a");
  EXPECT_EQ(content[0]["token_id"], 7);
  EXPECT_FLOAT_EQ(content[0]["logprob"].get<float>(), -0.25f);
  EXPECT_EQ(content[0]["bytes"], json::array({97}));
  ASSERT_EQ(content[0]["top_logprobs"].size(), 2u);
  EXPECT_EQ(content[0]["top_logprobs"][1]["token"], " b");
  EXPECT_EQ(content[0]["top_logprobs"][1]["bytes"], json::array({32, 98}));
  EXPECT_FLOAT_EQ(content[1]["logprob"].get<float>(), -9999.0f); // -inf is not JSON
  EXPECT_EQ(content[1]["top_logprobs"][0]["bytes"], json::array({0xe2}));
  EXPECT_EQ(j["choices"][0]["token_ids"], json::array({7, 9}));
  EXPECT_EQ(j["prompt_token_ids"], json::array({1, 5, 5, 3}));
  // Not asked: no such fields.
  auto plain = json::parse(full_response_json(h, "a b", msg::FinishReason::length, {4, 2}, {}, t));
  EXPECT_FALSE(plain["choices"][0].contains("logprobs"));
  EXPECT_FALSE(plain.contains("prompt_token_ids"));
}

TEST(openai_response, completion_logprobs_have_offsets_and_top_maps) {
  response_header h{api_kind::completion, "cmpl-1", "builtin:tiny", 42};
  auto t = two_tokens();
  auto j = json::parse(full_response_json(h, "a b", msg::FinishReason::length, {4, 2}, {true, false}, t));
  const auto& lp = j["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], json::array({"a", " b"}));
  EXPECT_EQ(lp["text_offset"], json::array({0, 1}));
  EXPECT_FLOAT_EQ(lp["token_logprobs"][0].get<float>(), -0.25f);
  EXPECT_FLOAT_EQ(lp["top_logprobs"][0][" b"].get<float>(), -1.5f);
  // Two alternatives with one text: the likelier one's value.
  EXPECT_EQ(lp["top_logprobs"][1].size(), 1u);
  // (A piece ending inside a UTF-8 character is written with U+FFFD.)
  EXPECT_FLOAT_EQ(lp["top_logprobs"][1]["\xef\xbf\xbd"].get<float>(), -0.5f);
  EXPECT_FALSE(j.contains("prompt_token_ids"));
  EXPECT_FALSE(j["choices"][0].contains("token_ids"));
  // A stream chunk: its own token, its offset in the answer.
  answer_tokens one;
  one.text_offset = 1;
  wire::token_event b;
  b.token_id = 9;
  b.text = " b";
  b.logprobs = {{9, -0.5f, " b"}};
  one.add(b);
  chunk_fields c;
  c.content = " b";
  c.detail = {true, true};
  c.tokens = &one;
  auto chunk = json::parse(chunk_json(h, c));
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["text_offset"], json::array({1}));
  EXPECT_EQ(chunk["choices"][0]["token_ids"], json::array({9}));
}

TEST(openai_response, text_completion_has_text_and_length_finish) {
  response_header h{api_kind::completion, "cmpl-1", "m", 1};
  auto j = json::parse(full_response_json(h, "xyz", msg::FinishReason::length, {1, 3}));
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "xyz");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
}

TEST(openai_response, chunks_carry_role_delta_finish_and_usage) {
  response_header h{api_kind::chat, "chatcmpl-2", "m", 1};
  auto role = json::parse(chunk_json(h, {true, std::string{}, msg::FinishReason::none, {}}));
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(role["choices"][0]["finish_reason"].is_null());
  auto delta = json::parse(chunk_json(h, {false, std::string{" hi"}, msg::FinishReason::none, {}}));
  EXPECT_FALSE(delta["choices"][0]["delta"].contains("role"));
  EXPECT_EQ(delta["choices"][0]["delta"]["content"], " hi");
  auto fin = json::parse(chunk_json(h, {false, std::nullopt, msg::FinishReason::stop, {}}));
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(fin["choices"][0]["delta"].empty());
  auto usage = json::parse(
      chunk_json(h, {false, std::nullopt, msg::FinishReason::none, usage_counts{5, 6}}));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 11);
}

TEST(openai_response, invalid_utf8_from_a_partial_token_does_not_throw) {
  response_header h{api_kind::chat, "c", "m", 1};
  auto j =
      json::parse(chunk_json(h, {false, std::string{"\xE2\x82"}, msg::FinishReason::none, {}}));
  EXPECT_TRUE(j["choices"][0]["delta"]["content"].is_string());
}

TEST(openai_response, sse_framing) {
  EXPECT_EQ(sse_event("{\"a\":1}"), "data: {\"a\":1}\n\n");
  EXPECT_EQ(sse_done(), "data: [DONE]\n\n");
}

TEST(openai_response, errors_map_to_http_statuses) {
  EXPECT_EQ(api_error_from(make_error(errc::invalid_argument, "x")).http_status, 400);
  EXPECT_EQ(api_error_from(make_error(errc::not_found, "x")).http_status, 404);
  EXPECT_EQ(api_error_from(make_error(errc::overloaded, "x")).http_status, 503);
  EXPECT_EQ(api_error_from(make_error(errc::timeout, "x")).http_status, 504);
  EXPECT_EQ(api_error_from(make_error(errc::internal, "x")).http_status, 500);
  auto j = json::parse(api_error_from(make_error(errc::overloaded, "queue full")).to_json());
  EXPECT_EQ(j["error"]["message"], "queue full");
  EXPECT_EQ(j["error"]["type"], "overloaded_error");
}

TEST(openai_response, storage_errors_name_no_server_paths) {
  const auto full = api_error_from(
      make_error(errc::no_space, "write /var/lib/mosaic/library/.tmp.ab12: No space left on device"));
  EXPECT_EQ(full.http_status, 507);
  EXPECT_EQ(full.code, "no_space");
  EXPECT_EQ(full.message.find("/var/lib"), std::string::npos) << full.message;
  EXPECT_EQ(full.message.find("No space left"), std::string::npos) << full.message;
  const auto io = api_error_from(
      make_error(errc::io_error, "cannot read KV entry /srv/lib/ab.mkv: Input/output error"));
  EXPECT_EQ(io.http_status, 500);
  EXPECT_EQ(io.message.find("/srv"), std::string::npos) << io.message;
}

TEST(openai_response, response_ids_are_unique) {
  EXPECT_NE(make_response_id("chatcmpl-"), make_response_id("chatcmpl-"));
  EXPECT_EQ(make_response_id("cmpl-").rfind("cmpl-", 0), 0u);
}

TEST(image_probe, reads_png_and_jpeg_sizes) {
  auto png = probe_image(test::png_header(640, 480));
  ASSERT_TRUE(png) << png.err().to_string();
  EXPECT_EQ(png->mime, "image/png");
  EXPECT_EQ(png->width, 640u);
  EXPECT_EQ(png->height, 480u);
  auto jpg = probe_image(test::jpeg_header(300, 200));
  ASSERT_TRUE(jpg) << jpg.err().to_string();
  EXPECT_EQ(jpg->mime, "image/jpeg");
  EXPECT_EQ(jpg->width, 300u);
  EXPECT_EQ(jpg->height, 200u);
}

TEST(image_probe, random_bytes_never_crash) {
  std::mt19937_64 rng{std::random_device{}()};
  for (int i = 0; i < 500; ++i) {
    std::vector<uint8_t> b(rng() % 64);
    for (auto& x : b)
      x = uint8_t(rng());
    if (i % 2 == 0 && b.size() >= 3) // a JPEG start with garbage after it
      b[0] = 0xFF, b[1] = 0xD8, b[2] = 0xFF;
    (void)probe_image(b); // an error or a size, never a crash
  }
  EXPECT_FALSE(probe_image(std::vector<uint8_t>{'G', 'I', 'F', '8', '9', 'a'}));
}

TEST(library_key_hex, round_trips_random_keys) {
  std::mt19937_64 rng{std::random_device{}()};
  library_key_bytes key{};
  for (auto& b : key)
    b = uint8_t(rng());
  auto hex = key_to_hex(key);
  EXPECT_EQ(hex.size(), 64u);
  EXPECT_EQ(key_from_hex(hex), key);
  EXPECT_FALSE(key_from_hex(hex.substr(1)));
  EXPECT_FALSE(key_from_hex(std::string(63, 'a') + "g"));
}

TEST(api_keys, parses_key_file_and_maps_tenants) {
  auto keys = api_keys::parse("# comment\n\nsk-alice-123456 alice\r\nsk-bob-1234567\tbob\n", "k");
  ASSERT_TRUE(keys) << keys.err().to_string();
  EXPECT_EQ(keys->size(), 2u);
  EXPECT_EQ(*keys->authenticate("Bearer sk-alice-123456").value, "alice");
  EXPECT_EQ(*keys->authenticate("Bearer sk-bob-1234567").value, "bob");
  auto wrong = keys->authenticate("Bearer sk-alice-12345");
  EXPECT_FALSE(wrong);
  EXPECT_EQ(wrong.error.http_status, 401);
  EXPECT_FALSE(keys->authenticate(""));
  EXPECT_FALSE(keys->authenticate("Basic sk-alice-123456"));
}

TEST(api_keys, bad_lines_name_the_line) {
  auto one_word = api_keys::parse("ok-key-12345 t\nlonely-key-123\n", "keys.txt");
  ASSERT_FALSE(one_word);
  EXPECT_NE(one_word.err().message.find("keys.txt:2"), std::string::npos);
  EXPECT_FALSE(api_keys::parse("short t\n", "k"));
  EXPECT_FALSE(api_keys::parse("same-key-123 a\nsame-key-123 b\n", "k"));
}

TEST(api_keys, without_keys_everyone_is_default) {
  api_keys none;
  EXPECT_FALSE(none.enabled());
  EXPECT_EQ(*none.authenticate("").value, "default");
}

TEST(api_keys, constant_time_equal_agrees_with_equality) {
  std::mt19937_64 rng{std::random_device{}()};
  for (int i = 0; i < 2000; ++i) {
    std::string a(rng() % 6, 'a'), b(rng() % 6, 'a');
    for (auto& c : a)
      c = char('a' + rng() % 2);
    for (auto& c : b)
      c = char('a' + rng() % 2);
    EXPECT_EQ(constant_time_equal(a, b), a == b) << a << " vs " << b;
  }
}

} // namespace
} // namespace mosaic::server
