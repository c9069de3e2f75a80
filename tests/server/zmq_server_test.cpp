// The ZeroMQ API against an in-test generation_service
// (scripted_service.hpp): token streams with several requests in flight,
// the same auth and limits as HTTP, malformed frames, cancel, and the
// metrics it shares with the HTTP server.

#include <map>

#include <gtest/gtest.h>

#include "messages/api_client.hpp"
#include "server/http_server.hpp"
#include "server/metrics.hpp"
#include "server/zmq_server.hpp"
#include "tests/server/scripted_service.hpp"
#include "tests/server/sse_client.hpp"
#include "tests/server/test_images.hpp"

namespace mosaic::server {
namespace {

using namespace std::chrono_literals;

class zmq_server_test : public ::testing::Test {
protected:
  void SetUp() override {
    http_options o;
    o.port = 0;
    o.request_timeout = 5s;
    auto keys = api_keys::parse("sk-alice-0001 alice\nsk-bob-00002 bob\n", "t");
    ASSERT_TRUE(keys);
    o.keys = *keys;
    o.limits.max_image_bytes = 1000;
    auto h = http_server::start(std::move(o), service_);
    ASSERT_TRUE(h) << h.err().to_string();
    http_ = std::move(*h);
    auto z = zmq_server::start({"127.0.0.1", 0}, *http_);
    ASSERT_TRUE(z) << z.err().to_string();
    zmq_ = std::move(*z);
    auto c = api::api_client::connect(zmq_->endpoint());
    ASSERT_TRUE(c) << c.err().to_string();
    client_ = std::move(*c);
  }

  static api::chat_request chat(std::string text, const char* key = "sk-alice-0001") {
    api::chat_request c;
    c.api_key = key;
    c.model = "builtin:tiny";
    c.messages.push_back({"user", {std::move(text)}});
    c.max_tokens = 8;
    return c;
  }

  api::answer ask(const api::chat_request& c) {
    auto a = client_->complete(c, 10s);
    EXPECT_TRUE(a) << a.err().to_string();
    return a ? *a : api::answer{};
  }

  test::scripted_service service_;
  std::unique_ptr<http_server> http_;
  std::unique_ptr<zmq_server> zmq_;
  std::unique_ptr<api::api_client> client_;
};

TEST_F(zmq_server_test, streams_one_frame_per_token_then_the_finish) {
  auto a = ask(chat("hello"));
  ASSERT_TRUE(a.finish) << (a.error ? a.error->message : "no finish");
  ASSERT_EQ(a.tokens.size(), 3u);
  EXPECT_EQ(a.text, "Hello there!");
  for (uint32_t i = 0; i < 3; ++i)
    EXPECT_EQ(a.tokens[i].index, i);
  EXPECT_EQ(a.finish->finish_reason, "stop");
  EXPECT_EQ(a.finish->prompt_tokens, 7u);
  EXPECT_EQ(a.finish->completion_tokens, 3u);
  const auto sent = service_.requests();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].tenant, "alice");
  EXPECT_EQ(sent[0].sampling.max_tokens, 8u);
  EXPECT_TRUE(sent[0].stream);
  // The HTTP server's metrics count it.
  const auto text = http_->metrics().expose();
  EXPECT_NE(text.find("mosaic:request_success_total{finished_reason=\"stop\"} 1"),
            std::string::npos)
      << text;
}

TEST_F(zmq_server_test, many_requests_in_flight_on_one_connection) {
  service_.gap = 5ms;
  std::map<uint64_t, std::string> text;
  std::map<uint64_t, bool> finished;
  for (int i = 0; i < 20; ++i) {
    auto id = client_->send(chat("q" + std::to_string(i)));
    ASSERT_TRUE(id);
    text[*id];
  }
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (finished.size() < 20 && std::chrono::steady_clock::now() < until) {
    auto f = client_->receive(100ms);
    ASSERT_TRUE(f) << f.err().to_string();
    if (!*f)
      continue;
    ASSERT_TRUE(text.count((*f)->request_id)) << (*f)->request_id;
    if (auto* t = std::get_if<api::token_frame>(&(*f)->body))
      text[(*f)->request_id] += t->text;
    else
      finished[(*f)->request_id] = std::holds_alternative<api::finish_frame>((*f)->body);
  }
  ASSERT_EQ(finished.size(), 20u);
  for (const auto& [id, ok] : finished) {
    EXPECT_TRUE(ok) << id;
    EXPECT_EQ(text[id], "Hello there!") << id;
  }
}

TEST_F(zmq_server_test, same_auth_and_limits_as_http) {
  auto no_key = ask(chat("x", ""));
  ASSERT_TRUE(no_key.error);
  EXPECT_EQ(no_key.error->status, 401);
  auto wrong = ask(chat("x", "sk-nobody-01"));
  ASSERT_TRUE(wrong.error);
  EXPECT_EQ(wrong.error->status, 401);
  EXPECT_EQ(wrong.error->type, "authentication_error");

  auto bad = chat("x");
  bad.max_tokens = 0;
  auto r = ask(bad);
  ASSERT_TRUE(r.error);
  EXPECT_EQ(r.error->status, 400);
  EXPECT_EQ(r.error->param, "max_tokens");

  bad = chat("x");
  bad.temperature = 9.0f;
  r = ask(bad);
  ASSERT_TRUE(r.error);
  EXPECT_EQ(r.error->param, "temperature");

  bad = chat("x");
  bad.model = "gpt-4";
  r = ask(bad);
  ASSERT_TRUE(r.error);
  EXPECT_EQ(r.error->status, 404);

  bad = chat("x");
  bad.messages[0].content.emplace_back(api::image_bytes{std::vector<uint8_t>(2000, 1), ""});
  r = ask(bad);
  ASSERT_TRUE(r.error);
  EXPECT_EQ(r.error->status, 413); // over max_image_bytes

  bad = chat("x");
  bad.messages[0].content.emplace_back(api::image_bytes{{1, 2, 3, 4, 5, 6, 7, 8}, ""});
  r = ask(bad);
  ASSERT_TRUE(r.error);
  EXPECT_EQ(r.error->status, 400); // not a PNG/JPEG
  EXPECT_EQ(r.error->param, "messages[0].content[1].image_url");

  bad = chat("x");
  bad.messages[0].content.emplace_back(api::image_ref{"not-hex"});
  r = ask(bad);
  ASSERT_TRUE(r.error);
  EXPECT_EQ(r.error->status, 400);

  bad = chat("x");
  bad.messages.insert(bad.messages.begin(),
                      api::message{"system", {api::image_bytes{test::png_header(8, 8), ""}}});
  r = ask(bad);
  ASSERT_TRUE(r.error);
  EXPECT_EQ(r.error->param, "messages[0].content");
  EXPECT_TRUE(service_.requests().empty()); // nothing bad reached the cluster
}

TEST_F(zmq_server_test, another_tenants_image_is_refused) {
  auto up = service_.upload("alice", test::png_header(8, 8), 1s);
  ASSERT_TRUE(up);
  auto mine = chat("look");
  mine.messages[0].content.emplace_back(api::image_ref{"mosaic://library/" + up->id});
  auto ok = ask(mine);
  EXPECT_TRUE(ok.finish) << (ok.error ? ok.error->message : "");
  auto theirs = chat("look", "sk-bob-00002");
  theirs.messages[0].content.emplace_back(api::image_ref{up->id});
  auto refused = ask(theirs);
  ASSERT_TRUE(refused.error);
  EXPECT_EQ(refused.error->status, 404);
}

TEST_F(zmq_server_test, malformed_frames_get_an_error_frame_and_the_server_goes_on) {
  for (const std::vector<uint8_t>& junk :
       {std::vector<uint8_t>{}, std::vector<uint8_t>{1, 2, 3}, std::vector<uint8_t>(64, 0xff),
        api::encode(api::server_frame{1, api::token_frame{0, 1, "x"}})}) {
    ASSERT_TRUE(client_->send_raw(junk));
    std::optional<api::server_frame> reply;
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (!reply && std::chrono::steady_clock::now() < until) {
      auto f = client_->receive(100ms);
      ASSERT_TRUE(f);
      reply = std::move(*f);
    }
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->request_id, 0u);
    auto* e = std::get_if<api::error_frame>(&reply->body);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->status, 400);
    EXPECT_EQ(e->code, "malformed_frame");
  }
  auto a = ask(chat("still there?"));
  EXPECT_TRUE(a.finish);
}

TEST_F(zmq_server_test, cancel_stops_the_request) {
  service_.never_finish = true;
  service_.gap = 2ms;
  auto id = client_->send(chat("forever"));
  ASSERT_TRUE(id);
  int tokens = 0;
  std::optional<api::error_frame> end;
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (!end && std::chrono::steady_clock::now() < until) {
    auto f = client_->receive(100ms);
    ASSERT_TRUE(f);
    if (!*f)
      continue;
    if (std::holds_alternative<api::token_frame>((*f)->body) && ++tokens == 5) {
      ASSERT_TRUE(client_->cancel(*id));
    }
    if (auto* e = std::get_if<api::error_frame>(&(*f)->body))
      end = *e;
  }
  ASSERT_TRUE(end);
  EXPECT_EQ(end->status, 499);
  EXPECT_EQ(service_.cancels, 1);
}

TEST_F(zmq_server_test, a_client_that_goes_away_cancels_its_requests) {
  service_.never_finish = true;
  service_.gap = 2ms;
  ASSERT_TRUE(client_->send(chat("forever")));
  auto f = client_->receive(5s); // the stream is running
  ASSERT_TRUE(f && *f);
  client_.reset(); // closes the socket
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (service_.cancels == 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(service_.cancels, 1);
}

} // namespace
} // namespace mosaic::server
