#include "server/openai_request.hpp"

#include <functional>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server/request_convert.hpp"
#include "tests/server/test_images.hpp"

namespace mosaic::server {
namespace {

using json = nlohmann::json;

// A 1x1 PNG, base64.
constexpr const char* png_b64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDw"
                                "AEhQGAhKmMIQAAAABJRU5ErkJggg==";

std::string data_url() {
  return std::string{"data:image/png;base64,"} + png_b64;
}

json chat_body() {
  return json{
      {"model", "builtin:small"},
      {"messages",
       json::array(
           {{{"role", "system"}, {"content", "be brief"}},
            {{"role", "user"},
             {"content", json::array({{{"type", "text"}, {"text", "what is"}},
                                      {{"type", "image_url"}, {"image_url", {{"url", data_url()}}}},
                                      {{"type", "text"}, {"text", "?"}}})}}})},
      {"max_tokens", 32},
      {"temperature", 0.0},
      {"seed", 7},
      {"stop", json::array({"\n\n"})},
      {"stream", true},
      {"stream_options", {{"include_usage", true}}},
      {"mosaic", {{"policy", "mpic:32"}, {"compression", "snapkv:img=0.25,txt=0.5"}}}};
}

TEST(openai_request, parses_a_multimodal_chat_in_order) {
  request_limits limits;
  auto r = parse_chat_request(chat_body().dump(), limits);
  ASSERT_TRUE(r) << r.error.message;
  const auto& req = *r.value;
  EXPECT_EQ(req.model, "builtin:small");
  ASSERT_EQ(req.messages.size(), 2u);
  ASSERT_EQ(req.messages[1].content.size(), 3u);
  EXPECT_EQ(req.messages[1].content[0].text, "what is");
  ASSERT_TRUE(req.messages[1].content[1].is_image);
  EXPECT_EQ(req.messages[1].content[1].image.mime, "image/png");
  EXPECT_EQ(req.messages[1].content[1].image.bytes.size(), 70u);
  EXPECT_EQ(req.messages[1].content[1].image.bytes[1], 'P');
  EXPECT_EQ(req.image_count(), 1);
  EXPECT_EQ(req.sampling.max_tokens, 32);
  EXPECT_EQ(req.sampling.temperature, 0.0f);
  EXPECT_EQ(req.sampling.seed, 7u);
  EXPECT_EQ(req.sampling.stop, std::vector<std::string>{"\n\n"});
  EXPECT_TRUE(req.stream);
  EXPECT_TRUE(req.include_usage);
  EXPECT_EQ(req.mosaic.policy, "mpic:32");
  EXPECT_EQ(req.mosaic.compression, "snapkv:img=0.25,txt=0.5");
}

TEST(openai_request, accepts_what_openai_clients_send_by_default) {
  request_limits limits;
  json body = {{"model", "m"},
               {"response_format", {{"type", "text"}}},
               {"messages", json::array({{{"role", "developer"}, {"content", "be brief"}},
                                         {{"role", "user"}, {"content", "hi"}},
                                         {{"role", "assistant"}, {"content", nullptr}},
                                         {{"role", "user"}, {"content", "again"}}})}};
  auto r = parse_chat_request(body.dump(), limits);
  ASSERT_TRUE(r) << r.error.message;
  ASSERT_EQ(r.value->messages.size(), 4u);
  EXPECT_EQ(r.value->messages[0].role, "system");
  EXPECT_TRUE(r.value->messages[2].content.empty());
  // A user turn still needs content; structured output is refused clearly.
  body["messages"][1]["content"] = nullptr;
  auto no_content = parse_chat_request(body.dump(), limits);
  ASSERT_FALSE(no_content);
  EXPECT_EQ(no_content.error.param, "messages[1].content");
  body["messages"][1]["content"] = "hi";
  body["response_format"] = {{"type", "json_object"}};
  auto structured = parse_chat_request(body.dump(), limits);
  ASSERT_FALSE(structured);
  EXPECT_EQ(structured.error.param, "response_format");
  EXPECT_NE(structured.error.message.find("json_object"), std::string::npos);
  auto completion = parse_completion_request(
      json{{"model", "m"}, {"prompt", "x"}, {"echo", false}}.dump(), limits);
  EXPECT_TRUE(completion) << completion.error.message;
  auto echo = parse_completion_request(json{{"model", "m"}, {"prompt", "x"}, {"echo", true}}.dump(),
                                       limits);
  ASSERT_FALSE(echo);
  EXPECT_EQ(echo.error.param, "echo");
}

TEST(openai_request, vllm_sampling_extras_are_accepted_with_their_meaning) {
  request_limits limits;
  json body = {{"model", "m"},
               {"prompt", "x"},
               {"max_tokens", 16},
               {"ignore_eos", true},
               {"min_tokens", 16},
               {"top_k", -1},
               {"min_p", 0.05},
               {"repetition_penalty", 1.1},
               {"presence_penalty", 0.5},
               {"frequency_penalty", -0.5},
               {"stop_token_ids", {2, 7}},
               {"skip_special_tokens", true},
               {"include_stop_str_in_output", true},
               {"add_special_tokens", true}};
  auto r = parse_completion_request(body.dump(), limits);
  ASSERT_TRUE(r) << r.error.message;
  const auto& s = r.value->sampling;
  EXPECT_TRUE(s.ignore_eos);
  EXPECT_EQ(s.min_tokens, 16);
  EXPECT_EQ(s.top_k, -1);
  EXPECT_FLOAT_EQ(s.min_p, 0.05f);
  EXPECT_FLOAT_EQ(s.repetition_penalty, 1.1f);
  EXPECT_FLOAT_EQ(s.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(s.frequency_penalty, -0.5f);
  EXPECT_EQ(s.stop_token_ids, (std::vector<int32_t>{2, 7}));
  EXPECT_TRUE(s.include_stop_str_in_output);
  // Out of range or unsupported: a 400 naming the field.
  for (auto [key, value] :
       {std::pair{"min_tokens", json(17)}, std::pair{"top_k", json(-2)},
        std::pair{"min_p", json(2)}, std::pair{"repetition_penalty", json(0)},
        std::pair{"presence_penalty", json(2.5)}, std::pair{"stop_token_ids", json("2")},
        std::pair{"ignore_eos", json("yes")}, std::pair{"add_special_tokens", json(false)}}) {
    auto bad = body;
    bad[key] = value;
    auto e = parse_completion_request(bad.dump(), limits);
    ASSERT_FALSE(e) << key;
    EXPECT_EQ(e.error.param, key);
  }
  // Chat: add_special_tokens false is vLLM's default there (the template
  // starts the prompt), and chat_template_kwargs must be an object.
  json chat = {{"model", "m"},
               {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
               {"add_special_tokens", false},
               {"chat_template_kwargs", json::object()}};
  EXPECT_TRUE(parse_chat_request(chat.dump(), limits));
  chat["chat_template_kwargs"] = 3;
  EXPECT_FALSE(parse_chat_request(chat.dump(), limits));
}

TEST(openai_request, logprobs_and_token_ids_are_read_per_endpoint) {
  const request_limits limits;
  json chat = {{"model", "m"}, {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
  auto off = parse_chat_request(chat.dump(), limits);
  ASSERT_TRUE(off);
  EXPECT_EQ(off.value->sampling.logprobs, -1);
  EXPECT_FALSE(off.value->sampling.return_token_ids);
  chat["logprobs"] = true;
  auto chosen_only = parse_chat_request(chat.dump(), limits);
  ASSERT_TRUE(chosen_only) << chosen_only.error.message;
  EXPECT_EQ(chosen_only.value->sampling.logprobs, 0);
  chat["top_logprobs"] = 20;
  chat["return_token_ids"] = true;
  auto top = parse_chat_request(chat.dump(), limits);
  ASSERT_TRUE(top) << top.error.message;
  EXPECT_EQ(top.value->sampling.logprobs, 20);
  EXPECT_TRUE(top.value->sampling.return_token_ids);
  for (auto [field, value] :
       {std::pair{"top_logprobs", json(21)}, std::pair{"top_logprobs", json(-1)},
        std::pair{"logprobs", json(3)}, std::pair{"return_token_ids", json("yes")}}) {
    json bad = chat;
    bad[field] = value;
    auto r = parse_chat_request(bad.dump(), limits);
    ASSERT_FALSE(r) << field << " = " << value.dump();
    EXPECT_EQ(r.error.param, field);
  }
  json without = chat;
  without["logprobs"] = false; // top_logprobs needs logprobs
  auto needs = parse_chat_request(without.dump(), limits);
  ASSERT_FALSE(needs);
  EXPECT_EQ(needs.error.param, "top_logprobs");

  // Completions: logprobs is the count; false reads as absent.
  json comp = {{"model", "m"}, {"prompt", "x"}, {"logprobs", 5}};
  auto five = parse_completion_request(comp.dump(), limits);
  ASSERT_TRUE(five) << five.error.message;
  EXPECT_EQ(five.value->sampling.logprobs, 5);
  comp["logprobs"] = false;
  EXPECT_EQ(parse_completion_request(comp.dump(), limits).value->sampling.logprobs, -1);
  for (auto [field, value] : {std::pair{"logprobs", json(21)}, std::pair{"logprobs", json(true)},
                              std::pair{"top_logprobs", json(2)}}) {
    json bad = {{"model", "m"}, {"prompt", "x"}, {field, value}};
    auto r = parse_completion_request(bad.dump(), limits);
    ASSERT_FALSE(r) << field << " = " << value.dump();
    EXPECT_EQ(r.error.param, field);
  }
}

TEST(openai_request, cache_salt_is_read_on_both_endpoints_and_checked) {
  const request_limits limits;
  json chat = {{"model", "m"}, {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
  json completion = {{"model", "m"}, {"prompt", "hi"}};
  EXPECT_EQ(parse_chat_request(chat.dump(), limits).value->mosaic.cache_salt, "");
  chat["cache_salt"] = "run-a";
  completion["cache_salt"] = "run-b";
  auto c = parse_chat_request(chat.dump(), limits);
  ASSERT_TRUE(c) << c.error.message;
  EXPECT_EQ(c.value->mosaic.cache_salt, "run-a");
  auto p = parse_completion_request(completion.dump(), limits);
  ASSERT_TRUE(p) << p.error.message;
  EXPECT_EQ(p.value->mosaic.cache_salt, "run-b");
  chat["cache_salt"] = nullptr; // JSON null: none, as an omitted field
  EXPECT_EQ(parse_chat_request(chat.dump(), limits).value->mosaic.cache_salt, "");
  for (const json& bad :
       {json(""), json(7), json::array({"a"}), json(std::string(max_cache_salt_bytes + 1, 's'))}) {
    chat["cache_salt"] = bad;
    auto r = parse_chat_request(chat.dump(), limits);
    ASSERT_FALSE(r) << bad.dump().substr(0, 20);
    EXPECT_EQ(r.error.param, "cache_salt");
    EXPECT_EQ(r.error.http_status, 400);
  }
  chat["cache_salt"] = std::string(max_cache_salt_bytes, 's');
  EXPECT_TRUE(parse_chat_request(chat.dump(), limits));
}

TEST(openai_request, library_references_and_completions) {
  request_limits limits;
  auto id = std::string(64, 'a');
  auto img = parse_image_url("mosaic://library/" + id, limits, "x");
  ASSERT_TRUE(img);
  EXPECT_TRUE(img.value->is_reference());
  EXPECT_EQ(img.value->library_id, id);
  EXPECT_FALSE(parse_image_url("mosaic://library/ABC", limits, "x"));

  auto c = parse_completion_request(R"({"model":"m","prompt":"hi","max_tokens":3})", limits);
  ASSERT_TRUE(c) << c.error.message;
  EXPECT_EQ(c.value->prompt, "hi");
  EXPECT_EQ(c.value->sampling.max_tokens, 3);
}

struct bad_case {
  std::string name;
  std::function<void(json&)> mutate;
  std::string param;
  int status = 400;
};

TEST(openai_request, every_bad_input_names_its_field) {
  std::vector<bad_case> cases = {
      {"no model", [](json& j) { j.erase("model"); }, "model"},
      {"unknown field", [](json& j) { j["frobnicate"] = 1; }, "frobnicate"},
      {"n > 1", [](json& j) { j["n"] = 2; }, "n"},
      {"max_tokens 0", [](json& j) { j["max_tokens"] = 0; }, "max_tokens"},
      {"max_tokens huge", [](json& j) { j["max_tokens"] = 1 << 30; }, "max_tokens"},
      {"max_tokens string", [](json& j) { j["max_tokens"] = "5"; }, "max_tokens"},
      {"temperature 3", [](json& j) { j["temperature"] = 3; }, "temperature"},
      {"top_p 0", [](json& j) { j["top_p"] = 0; }, "top_p"},
      {"stop number", [](json& j) { j["stop"] = 5; }, "stop"},
      {"too many stops",
       [](json& j) {
         j["stop"] = json::array({"a", "b", "c", "d", "e"});
       },
       "stop"},
      {"bad role", [](json& j) { j["messages"][0]["role"] = "tool"; }, "messages[0].role"},
      {"no messages", [](json& j) { j["messages"] = json::array(); }, "messages"},
      {"bad part type", [](json& j) { j["messages"][1]["content"][0]["type"] = "audio"; },
       "messages[1].content[0].type"},
      {"remote url",
       [](json& j) { j["messages"][1]["content"][1]["image_url"]["url"] = "http://x/y.png"; },
       "messages[1].content[1].image_url.url"},
      {"bad base64",
       [](json& j) {
         j["messages"][1]["content"][1]["image_url"]["url"] = "data:image/png;base64,@@@@";
       },
       "messages[1].content[1].image_url.url"},
      {"gif",
       [](json& j) {
         j["messages"][1]["content"][1]["image_url"]["url"] = "data:image/gif;base64,AAAA";
       },
       "messages[1].content[1].image_url.url"},
      {"unknown mosaic option", [](json& j) { j["mosaic"]["speed"] = "fast"; }, "mosaic.speed"},
      {"bad compression", [](json& j) { j["mosaic"]["compression"] = "snapkv:img=2"; },
       "mosaic.compression"},
      {"compression not a string", [](json& j) { j["mosaic"]["compression"] = 0.5; },
       "mosaic.compression"},
      {"stream_options without stream", [](json& j) { j["stream"] = false; }, "stream_options"},
  };
  request_limits limits;
  for (auto& c : cases) {
    auto body = chat_body();
    c.mutate(body);
    auto r = parse_chat_request(body.dump(), limits);
    ASSERT_FALSE(r) << c.name;
    EXPECT_EQ(r.error.http_status, c.status) << c.name;
    EXPECT_EQ(r.error.param, c.param) << c.name << ": " << r.error.message;
    EXPECT_FALSE(r.error.message.empty());
    auto rendered = json::parse(r.error.to_json());
    EXPECT_EQ(rendered["error"]["type"], "invalid_request_error");
    EXPECT_EQ(rendered["error"]["message"], r.error.message);
  }
}

TEST(openai_request, limits_on_body_images_and_image_bytes) {
  request_limits limits;
  limits.max_body_bytes = 100;
  auto r = parse_chat_request(chat_body().dump(), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error.http_status, 413);

  limits = {};
  limits.max_images = 1;
  auto body = chat_body();
  body["messages"][1]["content"].push_back(
      {{"type", "image_url"}, {"image_url", {{"url", data_url()}}}});
  r = parse_chat_request(body.dump(), limits);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error.message.find("too many images"), std::string::npos);

  limits = {};
  limits.max_image_bytes = 16;
  r = parse_chat_request(chat_body().dump(), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error.http_status, 413);
}

TEST(openai_request, malformed_json_never_crashes) {
  request_limits limits;
  std::mt19937 rng{std::random_device{}()};
  auto good = chat_body().dump();
  for (std::string_view text : {"", "{", "[]", "null", "{\"model\":", "\xff\xfe", "{\"model\":1}"})
    EXPECT_FALSE(parse_chat_request(text, limits));
  for (int i = 0; i < 300; ++i) {
    auto s = good.substr(0, rng() % good.size());
    if (!s.empty())
      s[rng() % s.size()] = static_cast<char>(rng() % 256);
    auto r = parse_chat_request(s, limits);
    if (!r) {
      EXPECT_FALSE(r.error.message.empty());
    }
  }
}

TEST(openai_request, base64_matches_rfc4648_vectors) {
  auto str = [](std::string_view b64) {
    auto v = decode_base64(b64);
    return v ? std::string(v->begin(), v->end()) : std::string{"<bad>"};
  };
  EXPECT_EQ(str(""), "");
  EXPECT_EQ(str("Zg=="), "f");
  EXPECT_EQ(str("Zm8="), "fo");
  EXPECT_EQ(str("Zm9v"), "foo");
  EXPECT_EQ(str("Zm9vYmFy"), "foobar");
  EXPECT_EQ(str("Zm9"), "<bad>");
  EXPECT_EQ(str("Z=9v"), "<bad>");
  EXPECT_EQ(str("Zg==Zg=="), "<bad>");
}

} // namespace
} // namespace mosaic::server

namespace mosaic::server {
namespace {

TEST(openai_request_context, images_count_their_own_tokens_where_the_model_sizes_them) {
  // A model whose images take width / 8 tokens (as LLaVA-1.6's depend on
  // the size), at most 100 each, with a context of 200.
  service_info info{"m", 200, 100, 0, {}};
  info.image_tokens_for = [](int height, int width) -> result<int> {
    if (height < 2)
      return make_error(errc::invalid_argument, "the image is too thin");
    return width / 8;
  };
  auto chat = [](int max_tokens, const std::vector<uint32_t>& widths) {
    nlohmann::json content = nlohmann::json::array();
    for (uint32_t w : widths)
      content.push_back({{"type", "image_url"},
                         {"image_url", {{"url", test::data_url(test::png_header(w, 8))}}}});
    content.push_back({{"type", "text"}, {"text", "compare"}});
    nlohmann::json body = {{"model", "m"},
                           {"max_tokens", max_tokens},
                           {"messages", {{{"role", "user"}, {"content", content}}}}};
    auto r = parse_chat_request(body.dump(), request_limits{});
    EXPECT_TRUE(r.value) << r.error.message;
    return *r.value;
  };
  // Two 40-token images and 100 answer tokens fit; the bound (2 x 100)
  // would not.
  auto ok = to_generate_request(chat(100, {320, 320}), info, admission_limits{});
  EXPECT_TRUE(ok.value) << ok.error.message;
  auto over = to_generate_request(chat(100, {640, 320}), info, admission_limits{});
  ASSERT_FALSE(over.value);
  EXPECT_NE(over.error.message.find("120 tokens"), std::string::npos) << over.error.message;
  // Without a size-dependent count every image takes the bound.
  info.image_tokens_for = nullptr;
  EXPECT_FALSE(to_generate_request(chat(100, {320, 320}), info, admission_limits{}).value);
  // The model's refusal of an image reaches the client as a 400 naming it.
  info.image_tokens_for = [](int, int) -> result<int> {
    return make_error(errc::invalid_argument, "the image is too thin");
  };
  auto thin = to_generate_request(chat(4, {320}), info, admission_limits{});
  ASSERT_FALSE(thin.value);
  EXPECT_NE(thin.error.message.find("too thin"), std::string::npos) << thin.error.message;
}

} // namespace
} // namespace mosaic::server
