// The ZeroMQ API of the real front door on a real single-node cluster
// (builtin:tiny, CPU) on 127.0.0.1 with ephemeral ports: its token stream
// equals the HTTP answer to the same greedy request, malformed frames get
// an error frame while the server goes on, keys and tenants are enforced,
// and the queue-time metrics move when requests wait.

// GCC 12 at -O3 reports a false maybe-uninitialized inside std::variant's
// copy of wire::segment (see tests/actors/pipeline_test.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <map>
#include <regex>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "messages/api_client.hpp"
#include "tests/server/live_front_door.hpp"
#include "tests/server/sse_client.hpp"
#include "tests/server/test_images.hpp"

namespace mosaic::server {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

using test::alice_key;
using test::bob_key;

class zmq_integration_test : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    http_options o;
    o.request_timeout = 60s;
    o.keys = test::two_tenants();
    // One request admitted at a time: the others wait, queue time to measure.
    auto d = test::live_front_door::start(
        "mosaic_zmq_lib", [](actors::node_options& n) { n.max_inflight = 1; }, std::move(o));
    ASSERT_TRUE(d) << d.err().to_string();
    door_ = std::move(*d);
    http_ = door_->http.get();
    zmq_ = door_->zmq.get();
    service_ = door_->service.get();
  }
  static void TearDownTestSuite() { door_.reset(); }

  void SetUp() override {
    auto c = api::api_client::connect(zmq_->endpoint());
    ASSERT_TRUE(c) << c.err().to_string();
    client_ = std::move(*c);
  }

  static api::chat_request chat(api::part image, const char* key = alice_key) {
    api::chat_request c;
    c.api_key = key;
    c.messages.push_back({"user", {std::move(image), std::string{"What is in the image?"}}});
    c.max_tokens = 6;
    c.temperature = 0.0f;
    return c;
  }

  api::answer ask(const api::chat_request& c) {
    auto a = client_->complete(c, 60s);
    EXPECT_TRUE(a) << a.err().to_string();
    return a ? *a : api::answer{};
  }

  static double metric(const std::string& name) {
    auto r = test::loopback_client(http_->port()).Get("/metrics");
    if (!r)
      return -1;
    std::smatch m;
    const std::regex line{"\n" + std::regex_replace(name, std::regex{R"([{}"])"}, R"(\$&)") +
                          " ([0-9.e+-]+)"};
    return std::regex_search(r->body, m, line) ? std::stod(m[1]) : -1;
  }

  std::vector<uint8_t> png() { return actors::test::random_png(rng_); }

  std::mt19937_64 rng_{actors::test::fresh_seed()};
  std::unique_ptr<api::api_client> client_;
  static inline std::unique_ptr<test::live_front_door> door_;
  static inline http_server* http_ = nullptr;
  static inline zmq_server* zmq_ = nullptr;
  static inline cluster_service* service_ = nullptr;
};

TEST_F(zmq_integration_test, streamed_tokens_equal_the_http_answer) {
  const auto image = png();
  auto a = ask(chat(api::image_bytes{image, "image/png"}));
  ASSERT_TRUE(a.finish) << (a.error ? a.error->message : "no finish");
  EXPECT_FALSE(a.tokens.empty());
  EXPECT_EQ(a.finish->completion_tokens, a.tokens.size());
  EXPECT_EQ(a.finish->image_tokens, uint32_t(service_->info().image_tokens));
  EXPECT_GT(a.finish->prompt_tokens, a.finish->image_tokens);

  json content =
      json::array({{{"type", "image_url"}, {"image_url", {{"url", test::data_url(image)}}}},
                   {{"type", "text"}, {"text", "What is in the image?"}}});
  json body = {{"model", "builtin:tiny"},
               {"messages", json::array({{{"role", "user"}, {"content", content}}})},
               {"temperature", 0},
               {"max_tokens", 6}};
  auto r = test::loopback_client(http_->port())
               .Post("/v1/chat/completions",
                     httplib::Headers{{"Authorization", std::string{"Bearer "} + alice_key}},
                     body.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = json::parse(r->body);
  // Greedy: the same tokens. ZMQ frames carry each piece's raw bytes (a
  // random-weight model's pieces need not be valid UTF-8); HTTP's JSON
  // replaces invalid sequences with U+FFFD, so compare after the same.
  const auto as_json_text =
      json::parse(json(a.text).dump(-1, ' ', false, json::error_handler_t::replace));
  EXPECT_EQ(as_json_text.get<std::string>(),
            j["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_EQ(a.finish->finish_reason, j["choices"][0]["finish_reason"].get<std::string>());
  EXPECT_EQ(a.finish->prompt_tokens, j["usage"]["prompt_tokens"].get<uint32_t>());
}

TEST_F(zmq_integration_test, malformed_frame_gets_an_error_and_the_server_stays_up) {
  std::vector<uint8_t> junk(100);
  for (auto& b : junk)
    b = uint8_t(rng_());
  ASSERT_TRUE(client_->send_raw(junk));
  auto f = client_->receive(10s);
  ASSERT_TRUE(f);
  ASSERT_TRUE(*f);
  auto* e = std::get_if<api::error_frame>(&(*f)->body);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->status, 400);
  auto a = ask(chat(api::image_bytes{png(), ""}));
  EXPECT_TRUE(a.finish) << (a.error ? a.error->message : "");
  EXPECT_EQ(test::loopback_client(http_->port()).Get("/health")->status, 200);
}

TEST_F(zmq_integration_test, wrong_key_and_another_tenants_image_are_refused) {
  auto wrong = ask(chat(api::image_bytes{png(), ""}, "sk-nobody-99"));
  ASSERT_TRUE(wrong.error);
  EXPECT_EQ(wrong.error->status, 401);

  auto up = test::loopback_client(http_->port())
                .Post("/v1/mosaic/images",
                      httplib::Headers{{"Authorization", std::string{"Bearer "} + alice_key}},
                      json{{"image", test::data_url(png())}}.dump(), "application/json");
  ASSERT_TRUE(up);
  ASSERT_EQ(up->status, 200) << up->body;
  const auto url = json::parse(up->body)["url"].get<std::string>();
  auto mine = ask(chat(api::image_ref{url}));
  EXPECT_TRUE(mine.finish) << (mine.error ? mine.error->message : "");
  auto theirs = ask(chat(api::image_ref{url}, bob_key));
  ASSERT_TRUE(theirs.error);
  EXPECT_EQ(theirs.error->status, 404) << theirs.error->message;
}

TEST_F(zmq_integration_test, queue_time_and_waiting_requests_are_measured) {
  const double count_before = metric("mosaic:request_queue_time_seconds_count");
  constexpr int n = 6;
  std::map<uint64_t, bool> ended;
  for (int i = 0; i < n; ++i) {
    auto c = chat(std::string{"count to ten"});
    // Long enough that the gauge, sampled between frames over HTTP, sees
    // the queue even on a loaded 2-core box (12 tokens once let all six
    // pass between two samples).
    c.max_tokens = 48;
    ASSERT_TRUE(client_->send(c));
  }
  double most_waiting = 0;
  const auto until = std::chrono::steady_clock::now() + 60s;
  while (ended.size() < n && std::chrono::steady_clock::now() < until) {
    most_waiting = std::max(most_waiting, metric("mosaic:num_requests_waiting"));
    auto f = client_->receive(20ms);
    ASSERT_TRUE(f);
    if (*f && !std::holds_alternative<api::token_frame>((*f)->body))
      ended[(*f)->request_id] = std::holds_alternative<api::finish_frame>((*f)->body);
  }
  ASSERT_EQ(ended.size(), size_t(n));
  for (const auto& [id, ok] : ended)
    EXPECT_TRUE(ok) << id;
  // One admitted at a time: the others waited in the router's queue.
  EXPECT_GE(most_waiting, 1.0);
  EXPECT_EQ(metric("mosaic:request_queue_time_seconds_count"), count_before + n);
  EXPECT_GT(metric("mosaic:request_queue_time_seconds_sum"), 0.0);
  EXPECT_EQ(metric("mosaic:num_requests_waiting"), 0.0);
}

} // namespace
} // namespace mosaic::server
