// The HTTP front door against an in-test generation_service
// (scripted_service.hpp): routes, OpenAI response shapes, SSE, auth,
// limits, uploads and tenant isolation, cancellation on disconnect.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server/http_server.hpp"
#include "tests/server/scripted_service.hpp"
#include "tests/server/sse_client.hpp"
#include "tests/server/test_images.hpp"

namespace mosaic::server {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

class http_server_test : public ::testing::Test {
protected:
  void start(http_options o = {}) {
    o.port = 0;
    o.request_timeout = 2s;
    auto s = http_server::start(std::move(o), service_);
    ASSERT_TRUE(s) << s.err().to_string();
    server_ = std::move(*s);
  }
  void SetUp() override { start(); }

  httplib::Result post(const std::string& path, const json& body, const std::string& key = {}) {
    auto cli = test::loopback_client(server_->port());
    httplib::Headers h;
    if (!key.empty())
      h.emplace("Authorization", "Bearer " + key);
    return cli.Post(path.c_str(), h, body.dump(), "application/json");
  }

  static json chat(const json& content, bool stream = false) {
    return {{"model", "builtin:tiny"},
            {"messages", json::array({{{"role", "user"}, {"content", content}}})},
            {"stream", stream},
            {"max_tokens", 8}};
  }

  static json image_content(const std::string& url) {
    return json::array({{{"type", "text"}, {"text", "What is this?"}},
                        {{"type", "image_url"}, {"image_url", {{"url", url}}}}});
  }

  static void expect_error(const httplib::Result& r, int status) {
    ASSERT_TRUE(r) << "no response";
    EXPECT_EQ(r->status, status) << r->body;
    auto j = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r->body;
    EXPECT_TRUE(j["error"]["message"].is_string()) << r->body;
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
    EXPECT_TRUE(j["error"]["type"].is_string()) << r->body;
  }

  test::scripted_service service_;
  std::unique_ptr<http_server> server_;
};

TEST_F(http_server_test, one_connection_serves_many_requests) {
  // Raw HTTP/1.1 on one socket: every answer must come back on it.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const std::string req = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  int answered = 0;
  for (int i = 0; i < 120; ++i) {
    ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), ssize_t(req.size())) << i;
    std::string got;
    char buf[4096];
    while (got.find("\r\n\r\n") == std::string::npos ||
           got.size() < got.find("\r\n\r\n") + 4 + 15) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0)
        break;
      got.append(buf, size_t(n));
    }
    if (got.rfind("HTTP/1.1 200", 0) != 0)
      break;
    ++answered;
  }
  ::close(fd);
  EXPECT_EQ(answered, 120);
}

TEST_F(http_server_test, chat_completion_returns_text_and_usage) {
  auto r = post("/v1/chat/completions", chat("Say hi"));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = json::parse(r->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "builtin:tiny");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hello there!");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 7);
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
  EXPECT_EQ(j["usage"]["total_tokens"], 10);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
  auto reqs = service_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].tenant, "default");
  EXPECT_GT(reqs[0].deadline_unix_ns, 0);
  EXPECT_EQ(reqs[0].sampling.max_tokens, 8u);
}

TEST_F(http_server_test, streaming_chat_sends_role_deltas_finish_usage_done) {
  auto body = chat("Say hi", true);
  body["stream_options"] = {{"include_usage", true}};
  auto r = post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/event-stream", 0), 0u);
  auto events = test::sse_payloads(r->body);
  ASSERT_EQ(events.size(), 7u) << r->body; // role, 3 deltas, finish, usage, [DONE]
  auto first = json::parse(events[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (int i = 1; i <= 3; ++i)
    text += json::parse(events[size_t(i)])["choices"][0]["delta"]["content"].get<std::string>();
  EXPECT_EQ(text, "Hello there!");
  EXPECT_EQ(json::parse(events[4])["choices"][0]["finish_reason"], "stop");
  auto usage = json::parse(events[5]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 10);
  EXPECT_EQ(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
  EXPECT_EQ(events[6], "[DONE]");
  for (size_t i = 0; i + 1 < events.size(); ++i)
    EXPECT_EQ(json::parse(events[i])["id"], first["id"]);
}

TEST_F(http_server_test, streaming_without_usage_ends_with_finish_then_done) {
  auto r = post("/v1/chat/completions", chat("Say hi", true));
  ASSERT_TRUE(r);
  auto events = test::sse_payloads(r->body);
  ASSERT_EQ(events.size(), 6u) << r->body;
  EXPECT_EQ(json::parse(events[4])["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(events[5], "[DONE]");
}

TEST_F(http_server_test, completions_endpoint_streams_and_answers) {
  json body = {{"model", "builtin:tiny"},
               {"prompt", "Once upon"},
               {"max_tokens", 4},
               {"cache_salt", "salt-1"}};
  auto r = post("/v1/completions", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(service_.requests().at(0).cache_salt, "salt-1"); // on to the prefix cache
  auto j = json::parse(r->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "Hello there!");
  body["stream"] = true;
  auto s = post("/v1/completions", body);
  ASSERT_TRUE(s);
  auto events = test::sse_payloads(s->body);
  ASSERT_EQ(events.size(), 5u) << s->body; // 3 texts, finish, [DONE]
  EXPECT_EQ(json::parse(events[0])["choices"][0]["text"], "Hello");
  EXPECT_EQ(json::parse(events[3])["choices"][0]["finish_reason"], "stop");
}

TEST_F(http_server_test, inline_image_reaches_the_cluster_as_bytes) {
  auto png = test::png_header(56, 56);
  auto r = post("/v1/chat/completions", chat(image_content(test::data_url(png))));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto req = service_.requests().at(0);
  ASSERT_EQ(req.segments.size(), 2u);
  EXPECT_EQ(std::get<wire::text_segment>(req.segments[0]).text, "What is this?");
  EXPECT_EQ(std::get<wire::image_data_segment>(req.segments[1]).encoded, png);
  EXPECT_EQ(std::get<wire::image_data_segment>(req.segments[1]).mime, "image/png");
}

TEST_F(http_server_test, models_health_and_metrics) {
  auto cli = test::loopback_client(server_->port());
  auto models = cli.Get("/v1/models");
  ASSERT_TRUE(models);
  auto j = json::parse(models->body);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][0]["id"], "builtin:tiny");
  EXPECT_EQ(j["data"][0]["max_model_len"], 512);
  auto health = cli.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  ASSERT_EQ(post("/v1/chat/completions", chat("hi"))->status, 200);
  auto metrics = cli.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("mosaic:time_to_first_token_seconds_count 1"), std::string::npos)
      << metrics->body;
  EXPECT_NE(metrics->body.find("mosaic:prefix_cache_hits_total 3"), std::string::npos);
  EXPECT_NE(metrics->body.find("mosaic:kv_cache_usage_perc 0.25"), std::string::npos);
}

TEST_F(http_server_test, bad_requests_get_openai_errors) {
  expect_error(post("/v1/chat/completions", json{{"model", "builtin:tiny"}}), 400);
  {
    auto cli = test::loopback_client(server_->port());
    expect_error(cli.Post("/v1/chat/completions", "{not json", "application/json"), 400);
  }
  auto unknown = chat("hi");
  unknown["frobnicate"] = 1;
  expect_error(post("/v1/chat/completions", unknown), 400);
  auto wrong_model = chat("hi");
  wrong_model["model"] = "gpt-9";
  expect_error(post("/v1/chat/completions", wrong_model), 404);
  auto too_long = chat("hi");
  too_long["max_tokens"] = 600; // context is 512
  expect_error(post("/v1/chat/completions", too_long), 400);
  expect_error(post("/v1/chat/completions", chat(image_content("data:image/png;base64,AAAA"))),
               400);
  expect_error(post("/v1/chat/completions",
                    chat(image_content(test::data_url(test::png_header(20000, 20000))))),
               400);
  expect_error(post("/v1/nope", json::object()), 404);
  EXPECT_TRUE(service_.requests().empty()); // nothing bad reached the cluster
}

TEST_F(http_server_test, body_and_image_count_limits) {
  http_options o;
  o.limits.max_body_bytes = 4096;
  o.limits.max_images = 2;
  server_.reset();
  start(o);
  expect_error(post("/v1/chat/completions", chat(std::string(8000, 'x'))), 413);
  auto url = test::data_url(test::png_header(8, 8));
  json three = json::array();
  for (int i = 0; i < 3; ++i)
    three.push_back({{"type", "image_url"}, {"image_url", {{"url", url}}}});
  expect_error(post("/v1/chat/completions", chat(three)), 400);
}

TEST_F(http_server_test, cluster_errors_keep_their_status) {
  service_.set_fail_with(make_error(errc::overloaded, "overloaded: 64 requests in flight"));
  expect_error(post("/v1/chat/completions", chat("hi")), 503);
  expect_error(post("/v1/chat/completions", chat("hi", true)), 503);
  service_.set_fail_with(make_error(errc::timeout, "deadline passed"));
  expect_error(post("/v1/chat/completions", chat("hi")), 504);
}

TEST_F(http_server_test, a_silent_cluster_times_out_with_504) {
  service_.gap = 60s; // never answers within the deadline
  server_.reset();
  auto s = http_server::start(
      [] {
        http_options x;
        x.port = 0;
        x.request_timeout = 100ms;
        x.deadline_grace = 100ms;
        return x;
      }(),
      service_);
  ASSERT_TRUE(s);
  server_ = std::move(*s);
  const auto t0 = std::chrono::steady_clock::now();
  expect_error(post("/v1/chat/completions", chat("hi")), 504);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 15s);
}

TEST_F(http_server_test, api_keys_map_to_tenants_and_refuse_strangers) {
  http_options o;
  auto keys = api_keys::parse("sk-alice-0001 alice\nsk-bob-00002 bob\n", "test");
  ASSERT_TRUE(keys);
  o.keys = *keys;
  server_.reset();
  start(o);
  expect_error(post("/v1/chat/completions", chat("hi")), 401);
  expect_error(post("/v1/chat/completions", chat("hi"), "sk-alice-0002"), 401);
  {
    auto cli = test::loopback_client(server_->port());
    expect_error(cli.Get("/v1/models"), 401);
  }
  auto ok = post("/v1/chat/completions", chat("hi"), "sk-bob-00002");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(service_.requests().back().tenant, "bob");
}

TEST_F(http_server_test, upload_reference_and_delete_stay_within_the_tenant) {
  http_options o;
  auto keys = api_keys::parse("sk-alice-0001 alice\nsk-bob-00002 bob\n", "test");
  ASSERT_TRUE(keys);
  o.keys = *keys;
  server_.reset();
  start(o);
  auto png = test::png_header(56, 56);
  auto up = post("/v1/mosaic/images", json{{"image", test::data_url(png)}}, "sk-alice-0001");
  ASSERT_TRUE(up);
  ASSERT_EQ(up->status, 200) << up->body;
  auto j = json::parse(up->body);
  const auto id = j["id"].get<std::string>();
  EXPECT_EQ(id.size(), 64u);
  EXPECT_EQ(j["url"], "mosaic://library/" + id);

  // Raw bytes upload gives the same id.
  auto cli = test::loopback_client(server_->port());
  httplib::Headers alice{{"Authorization", "Bearer sk-alice-0001"}};
  httplib::Headers bob{{"Authorization", "Bearer sk-bob-00002"}};
  auto raw = cli.Post("/v1/mosaic/images", alice, std::string(png.begin(), png.end()), "image/png");
  ASSERT_TRUE(raw);
  EXPECT_EQ(json::parse(raw->body)["id"], id);

  auto by_ref = chat(image_content("mosaic://library/" + id));
  EXPECT_EQ(post("/v1/chat/completions", by_ref, "sk-alice-0001")->status, 200);
  expect_error(post("/v1/chat/completions", by_ref, "sk-bob-00002"), 404);
  expect_error(cli.Delete(("/v1/mosaic/images/" + id).c_str(), bob), 404);
  auto del = cli.Delete(("/v1/mosaic/images/" + id).c_str(), alice);
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200) << del->body;
  expect_error(cli.Delete(("/v1/mosaic/images/" + id).c_str(), alice), 404);
  expect_error(post("/v1/chat/completions", by_ref, "sk-alice-0001"), 404);

  expect_error(cli.Post("/v1/mosaic/images", alice, "not an image", "image/png"), 400);
  expect_error(post("/v1/mosaic/images", json{{"image", 5}}, "sk-alice-0001"), 400);
  expect_error(cli.Delete("/v1/mosaic/images/xyz", alice), 404);
}

TEST_F(http_server_test, a_client_that_disconnects_cancels_its_stream) {
  service_.never_finish = true;
  service_.gap = 2ms;
  auto cli = test::loopback_client(server_->port());
  int chunks = 0;
  auto body = chat("go on forever", true);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
    return ++chunks < 5; // stop reading after 5 chunks
  };
  auto r = cli.send(req);
  EXPECT_FALSE(r); // we aborted it
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (service_.cancels == 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(service_.cancels, 1);
}

TEST_F(http_server_test, a_client_that_disconnects_cancels_its_whole_answer) {
  // A non-streaming request waits for its whole answer; the client hangs
  // up meanwhile. Raw socket: httplib's client cannot drop a request.
  service_.never_finish = true;
  service_.gap = 2ms;
  const int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(server_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const auto body = chat("go on forever", false).dump();
  const auto request = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Content-Type: application/json\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(::send(sock, request.data(), request.size(), 0), ssize_t(request.size()));
  std::this_thread::sleep_for(300ms); // the request is generating
  EXPECT_EQ(service_.cancels, 0);
  ::close(sock);
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (service_.cancels == 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(service_.cancels, 1);
  // The server goes on serving.
  service_.never_finish = false;
  auto r = post("/v1/chat/completions", chat("hello"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

} // namespace
} // namespace mosaic::server
