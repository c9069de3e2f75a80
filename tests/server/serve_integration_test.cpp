// The real front door on a real single-node cluster (builtin:tiny, CPU),
// on 127.0.0.1 with an ephemeral port, driven by httplib's client: chat
// with images (whole and streamed), upload then reference, tenant
// isolation, auth and bad input.

// GCC 12 at -O3 reports a false maybe-uninitialized inside std::variant's
// copy of wire::segment (see tests/actors/pipeline_test.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/server/live_front_door.hpp"
#include "tests/server/sse_client.hpp"
#include "tests/server/test_images.hpp"

namespace mosaic::server {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

using test::alice_key;
using test::bob_key;

class serve_integration_test : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    http_options o;
    o.request_timeout = 30s;
    o.keys = test::two_tenants();
    auto d = test::live_front_door::start("mosaic_server_lib", {}, std::move(o));
    ASSERT_TRUE(d) << d.err().to_string();
    door_ = std::move(*d);
    http_ = door_->http.get();
    service_ = door_->service.get();
  }
  static void TearDownTestSuite() { door_.reset(); }

  httplib::Result post(const std::string& path, const json& body, const char* key) {
    auto cli = test::loopback_client(http_->port());
    httplib::Headers h{{"Authorization", std::string{"Bearer "} + key}};
    return cli.Post(path.c_str(), h, body.dump(), "application/json");
  }

  static json chat(const std::string& image_url, bool stream) {
    json content = json::array({{{"type", "image_url"}, {"image_url", {{"url", image_url}}}},
                                {{"type", "text"}, {"text", "What is in the image?"}}});
    return {{"model", "builtin:tiny"},
            {"messages", json::array({{{"role", "user"}, {"content", content}}})},
            {"stream", stream},
            {"temperature", 0},
            {"max_tokens", 6}};
  }

  std::vector<uint8_t> png() { return actors::test::random_png(rng_); }

  std::mt19937_64 rng_{actors::test::fresh_seed()};
  static inline std::unique_ptr<test::live_front_door> door_;
  static inline http_server* http_ = nullptr;
  static inline cluster_service* service_ = nullptr;
};

TEST_F(serve_integration_test, chat_with_an_image_whole_and_streamed_agree) {
  const auto url = test::data_url(png());
  auto whole = post("/v1/chat/completions", chat(url, false), alice_key);
  ASSERT_TRUE(whole);
  ASSERT_EQ(whole->status, 200) << whole->body;
  auto j = json::parse(whole->body);
  const auto text = j["choices"][0]["message"]["content"].get<std::string>();
  // The image counts in the prompt: its tokens plus the question's.
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), service_->info().image_tokens);
  EXPECT_GE(j["usage"]["completion_tokens"].get<int>(), 1);
  EXPECT_LE(j["usage"]["completion_tokens"].get<int>(), 6);

  auto body = chat(url, true);
  body["stream_options"] = {{"include_usage", true}};
  auto streamed = post("/v1/chat/completions", body, alice_key);
  ASSERT_TRUE(streamed);
  ASSERT_EQ(streamed->status, 200) << streamed->body;
  auto events = test::sse_payloads(streamed->body);
  ASSERT_GE(events.size(), 4u) << streamed->body;
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(json::parse(events.front())["choices"][0]["delta"]["role"], "assistant");
  std::string joined;
  std::string finish;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    auto c = json::parse(events[i]);
    auto& ch = c["choices"][0];
    if (ch["delta"].contains("content"))
      joined += ch["delta"]["content"].get<std::string>();
    if (!ch["finish_reason"].is_null())
      finish = ch["finish_reason"];
  }
  EXPECT_EQ(joined, text); // greedy: the same answer either way
  EXPECT_TRUE(finish == "stop" || finish == "length") << finish;
  EXPECT_EQ(json::parse(events[events.size() - 2])["usage"]["completion_tokens"],
            j["usage"]["completion_tokens"]);
}

TEST_F(serve_integration_test, upload_then_reference_only_for_the_owner) {
  const auto image = png();
  auto up = post("/v1/mosaic/images", json{{"image", test::data_url(image)}}, alice_key);
  ASSERT_TRUE(up);
  ASSERT_EQ(up->status, 200) << up->body;
  const auto id = json::parse(up->body)["id"].get<std::string>();
  ASSERT_EQ(id.size(), 64u);
  auto by_ref = post("/v1/chat/completions", chat("mosaic://library/" + id, false), alice_key);
  ASSERT_TRUE(by_ref);
  EXPECT_EQ(by_ref->status, 200) << by_ref->body;
  auto by_bytes = post("/v1/chat/completions", chat(test::data_url(image), false), alice_key);
  ASSERT_TRUE(by_bytes);
  EXPECT_EQ(json::parse(by_ref->body)["choices"][0]["message"]["content"],
            json::parse(by_bytes->body)["choices"][0]["message"]["content"]);

  auto stolen = post("/v1/chat/completions", chat("mosaic://library/" + id, false), bob_key);
  ASSERT_TRUE(stolen);
  EXPECT_EQ(stolen->status, 404) << stolen->body;
  std::string unknown(64, 'a');
  auto missing = post("/v1/chat/completions", chat("mosaic://library/" + unknown, false), bob_key);
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);

  auto cli = test::loopback_client(http_->port());
  auto bob_del = cli.Delete(("/v1/mosaic/images/" + id).c_str(),
                            httplib::Headers{{"Authorization", std::string{"Bearer "} + bob_key}});
  ASSERT_TRUE(bob_del);
  EXPECT_EQ(bob_del->status, 404);
  auto del = cli.Delete(("/v1/mosaic/images/" + id).c_str(),
                        httplib::Headers{{"Authorization", std::string{"Bearer "} + alice_key}});
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200) << del->body;
}

TEST_F(serve_integration_test, bad_input_and_bad_keys_get_the_right_status) {
  auto wrong_key = post("/v1/chat/completions", chat(test::data_url(png()), false), "sk-nobody-1");
  ASSERT_TRUE(wrong_key);
  EXPECT_EQ(wrong_key->status, 401);
  auto header_only = test::data_url(test::png_header(56, 56)); // no pixel data
  auto broken = post("/v1/chat/completions", chat(header_only, false), alice_key);
  ASSERT_TRUE(broken);
  EXPECT_EQ(broken->status, 400) << broken->body;
  auto garbage = post("/v1/chat/completions", chat("data:image/png;base64,AAAA", false), alice_key);
  ASSERT_TRUE(garbage);
  EXPECT_EQ(garbage->status, 400);
  auto too_many = chat(test::data_url(png()), false);
  too_many["max_tokens"] = 100000;
  auto r = post("/v1/chat/completions", too_many, alice_key);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  auto metrics = test::loopback_client(http_->port()).Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("mosaic:request_failure_total{status=\"401\"}"), std::string::npos);
}

} // namespace
} // namespace mosaic::server
