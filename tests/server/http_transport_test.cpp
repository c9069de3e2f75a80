// How the HTTP front door holds connections (server/http_transport.hpp)
// and how it stops: slow and idle clients cannot take it away from
// /health, one address cannot hold every connection, a header that
// trickles is cut, form-encoded bodies are read whole, SIGTERM's drain
// lets running streams finish and ends the rest with an error event,
// and every way a request ends is counted.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server/http_server.hpp"
#include "tests/server/scripted_service.hpp"
#include "tests/server/sse_client.hpp"

namespace mosaic::server {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

/// A raw TCP connection to the server (what a slow or hostile client holds).
int connect_raw(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// Everything the server sends until it closes or `wait` passes.
std::string read_until_closed(int fd, std::chrono::milliseconds wait, bool* closed = nullptr) {
  std::string got;
  const auto until = clock_type::now() + wait;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - clock_type::now());
    if (left.count() <= 0)
      break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, int(left.count())) <= 0)
      break;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      if (closed)
        *closed = true;
      return got;
    }
    got.append(buf, size_t(n));
  }
  if (closed)
    *closed = false;
  return got;
}

json chat(const std::string& text, bool stream) {
  return {{"model", "builtin:tiny"},
          {"messages", json::array({{{"role", "user"}, {"content", text}}})},
          {"stream", stream},
          {"max_tokens", 8}};
}

class http_transport_test : public ::testing::Test {
protected:
  void start(http_options o = {}) {
    o.port = 0;
    o.request_timeout = 20s;
    auto s = http_server::start(std::move(o), service_);
    ASSERT_TRUE(s) << s.err().to_string();
    server_ = std::move(*s);
  }
  void TearDown() override {
    for (int fd : raw_)
      ::close(fd);
  }

  int raw() {
    const int fd = connect_raw(server_->port());
    EXPECT_GE(fd, 0);
    if (fd >= 0)
      raw_.push_back(fd);
    return fd;
  }

  std::string metrics() {
    auto r = test::loopback_client(server_->port()).Get("/metrics");
    return r ? r->body : std::string{};
  }

  /// One streamed chat request; the whole SSE body (or "" on no answer).
  std::string stream_chat(const std::string& text) {
    auto cli = test::loopback_client(server_->port());
    auto r = cli.Post("/v1/chat/completions", chat(text, true).dump(), "application/json");
    return r && r->status == 200 ? r->body : std::string{};
  }

  test::scripted_service service_;
  std::unique_ptr<http_server> server_;
  std::vector<int> raw_;
};

// The slowest /health answer allowed while slow clients hold connections
// (ThreadSanitizer runs this code 5-15x slower; scripts/check).
#if defined(__SANITIZE_THREAD__)
constexpr auto health_limit = 1000ms;
#else
constexpr auto health_limit = 100ms;
#endif

TEST_F(http_transport_test, a_hundred_slow_header_clients_leave_health_answering) {
  start();
  // Each sends part of a header, then a byte every 100 ms (slowloris).
  std::vector<int> slow;
  for (int i = 0; i < 100; ++i) {
    const int fd = raw();
    ASSERT_GE(fd, 0) << i;
    const std::string part = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    ASSERT_EQ(::send(fd, part.data(), part.size(), MSG_NOSIGNAL), ssize_t(part.size()));
    slow.push_back(fd);
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    while (!stop) {
      for (int fd : slow)
        (void)::send(fd, "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      std::this_thread::sleep_for(100ms);
    }
  });
  std::this_thread::sleep_for(200ms); // every slow connection is being served
  auto worst = clock_type::duration::zero();
  for (int i = 0; i < 20; ++i) {
    const auto t0 = clock_type::now();
    auto r = test::loopback_client(server_->port()).Get("/health");
    worst = std::max(worst, clock_type::now() - t0);
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->status, 200);
  }
  stop = true;
  trickle.join();
  EXPECT_LT(worst, health_limit)
      << "slowest /health: " << std::chrono::duration_cast<std::chrono::milliseconds>(worst).count()
      << " ms";
}

TEST_F(http_transport_test, a_header_that_trickles_is_cut_at_the_header_timeout) {
  http_options o;
  o.connections.header_timeout = 400ms;
  start(o);
  const int fd = raw();
  ASSERT_GE(fd, 0);
  const auto t0 = clock_type::now();
  const std::string part = "GET /health HTTP/1.1\r\nHost: x\r\n";
  ASSERT_EQ(::send(fd, part.data(), part.size(), MSG_NOSIGNAL), ssize_t(part.size()));
  bool closed = false;
  std::string got;
  while (!closed && clock_type::now() - t0 < 5s) {
    (void)::send(fd, "X", 1, MSG_NOSIGNAL); // a byte every 50 ms: each read is quick
    got += read_until_closed(fd, 50ms, &closed);
  }
  const auto took = clock_type::now() - t0;
  EXPECT_TRUE(closed) << "the server still held the connection after 5 s";
  EXPECT_GE(took, 350ms);
  EXPECT_LT(took, 3s);
  EXPECT_EQ(got.find("200 OK"), std::string::npos) << got;
  // A prompt client on another connection is served as before.
  auto r = test::loopback_client(server_->port()).Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(http_transport_test, connections_over_the_per_client_limit_get_429_and_are_counted) {
  http_options o;
  o.connections.max_connections_per_client = 4;
  start(o);
  for (int i = 0; i < 4; ++i) // idle: each holds its slot until its keep-alive ends
    ASSERT_GE(raw(), 0);
  std::this_thread::sleep_for(100ms);
  const int fifth = raw();
  ASSERT_GE(fifth, 0);
  bool closed = false;
  const auto answer = read_until_closed(fifth, 3s, &closed);
  EXPECT_EQ(answer.rfind("HTTP/1.1 429", 0), 0u) << answer;
  EXPECT_NE(answer.find("too_many_connections"), std::string::npos) << answer;
  EXPECT_TRUE(closed);
  for (int fd : raw_)
    ::close(fd);
  raw_.clear();
  // Slots free up as the server sees those connections end. Until then a
  // /metrics request from the same address is itself refused with 429, and
  // counted: the total must be this refusal plus those. A refusal is counted
  // after its answer went out, hence the wait.
  int refused_reads = 0;
  std::string m;
  std::string want;
  const auto until = clock_type::now() + 5s;
  while (clock_type::now() < until) {
    auto r = test::loopback_client(server_->port()).Get("/metrics");
    if (r && r->status == 429)
      ++refused_reads;
    want = "mosaic:request_failure_total{status=\"429\"} " + std::to_string(1 + refused_reads);
    if (r && r->status == 200) {
      m = r->body;
      if (m.find(want) != std::string::npos)
        break;
    }
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_NE(m.find(want), std::string::npos) << m;
}

TEST_F(http_transport_test, a_form_encoded_body_over_8_kib_is_read_whole) {
  start();
  // curl -d declares application/x-www-form-urlencoded; cpp-httplib alone
  // answers such bodies over 8 KiB with 413.
  const auto body = chat(std::string(20000, 'a'), false).dump();
  auto r = test::loopback_client(server_->port())
               .Post("/v1/chat/completions", body, "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  // A body over the real limit is still refused, as JSON, and counted.
  http_options small;
  small.limits.max_body_bytes = 4096;
  server_.reset();
  start(small);
  auto big =
      test::loopback_client(server_->port()).Post("/v1/chat/completions", body, "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  EXPECT_TRUE(json::parse(big->body, nullptr, false)["error"]["message"].is_string()) << big->body;
  EXPECT_NE(metrics().find("mosaic:request_failure_total{status=\"413\"} 1"), std::string::npos);
}

TEST_F(http_transport_test, drain_lets_running_streams_finish_and_refuses_new_work) {
  service_.set_pieces(std::vector<std::string>(20, "x"));
  service_.gap = 25ms; // each stream runs about half a second
  start();
  std::vector<std::future<std::string>> streams;
  for (int i = 0; i < 8; ++i)
    streams.push_back(std::async(std::launch::async, [this] { return stream_chat("go"); }));
  const auto until = clock_type::now() + 5s;
  while (service_.requests().size() < 8 && clock_type::now() < until)
    std::this_thread::sleep_for(5ms);
  ASSERT_EQ(service_.requests().size(), 8u);
  const auto port = server_->port();
  auto drained = std::async(std::launch::async, [this] { return server_->drain(10s); });
  std::this_thread::sleep_for(100ms);
  // The listener is closed: a new client cannot connect.
  EXPECT_LT(connect_raw(port), 0) << "the drained server still accepts connections";
  for (auto& s : streams) {
    const auto body = s.get();
    const auto events = test::sse_payloads(body);
    ASSERT_GE(events.size(), 3u) << body;
    EXPECT_EQ(events.back(), "[DONE]");
    EXPECT_NE(body.find("\"finish_reason\":\"stop\""), std::string::npos) << body;
  }
  EXPECT_EQ(drained.get(), 0) << "no request was running past the grace";
  EXPECT_EQ(service_.cancels, 0);
}

TEST_F(http_transport_test, drain_past_its_grace_ends_streams_with_an_error_event) {
  service_.never_finish = true;
  service_.gap = 5ms;
  start();
  std::vector<std::future<std::string>> streams;
  for (int i = 0; i < 4; ++i)
    streams.push_back(std::async(std::launch::async, [this] { return stream_chat("forever"); }));
  const auto until = clock_type::now() + 5s;
  while (service_.requests().size() < 4 && clock_type::now() < until)
    std::this_thread::sleep_for(5ms);
  ASSERT_EQ(service_.requests().size(), 4u);
  // Tokens are flowing: every stream's answer has begun (a stream stopped
  // before its first token gets a plain 503, not an event).
  while (service_.events_taken < 4 * 3 && clock_type::now() < until)
    std::this_thread::sleep_for(5ms);
  ASSERT_GE(service_.events_taken, 4 * 3);
  const auto t0 = clock_type::now();
  EXPECT_EQ(server_->drain(300ms), 4);
  EXPECT_LT(clock_type::now() - t0, 5s);
  for (auto& s : streams) {
    const auto body = s.get();
    const auto events = test::sse_payloads(body);
    ASSERT_GE(events.size(), 3u) << body.substr(0, 400);
    EXPECT_EQ(events.back(), "[DONE]");
    auto err = json::parse(events[events.size() - 2], nullptr, false);
    EXPECT_EQ(err["error"]["code"], "shutting_down") << events[events.size() - 2];
  }
  EXPECT_EQ(service_.cancels, 4);
}

TEST_F(http_transport_test, during_a_drain_health_and_new_requests_get_503_and_idle_ones_close) {
  service_.set_pieces(std::vector<std::string>(20, "x"));
  service_.gap = 25ms; // the stream runs about half a second
  start();
  const int idle = raw(); // a kept-alive connection with nothing to ask
  ASSERT_GE(idle, 0);
  // One connection, two pipelined requests: a stream, then /health and a
  // chat. The drain starts while the stream runs; what follows it on the
  // connection is answered 503, and the connection closes.
  const int fd = raw();
  ASSERT_GE(fd, 0);
  const auto body = chat("go", true).dump();
  const auto post = [&](const std::string& b) {
    return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           "Content-Length: " +
           std::to_string(b.size()) + "\r\n\r\n" + b;
  };
  const std::string pipelined =
      post(body) + "GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + post(chat("more", false).dump());
  ASSERT_EQ(::send(fd, pipelined.data(), pipelined.size(), MSG_NOSIGNAL),
            ssize_t(pipelined.size()));
  const auto until = clock_type::now() + 5s;
  while (service_.requests().empty() && clock_type::now() < until)
    std::this_thread::sleep_for(5ms);
  auto drained = std::async(std::launch::async, [this] { return server_->drain(10s); });
  bool idle_closed = false;
  (void)read_until_closed(idle, 2s, &idle_closed);
  EXPECT_TRUE(idle_closed) << "an idle connection outlived the drain's start";
  bool closed = false;
  const auto got = read_until_closed(fd, 5s, &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got.substr(0, 200);
  EXPECT_NE(got.find("[DONE]"), std::string::npos) << "the running stream finished";
  const auto health = got.find("HTTP/1.1 503", got.find("[DONE]"));
  ASSERT_NE(health, std::string::npos) << got;
  EXPECT_NE(got.find("draining", health), std::string::npos) << got.substr(health);
  EXPECT_EQ(drained.get(), 0);
  EXPECT_EQ(service_.requests().size(), 1u) << "nothing new reached the cluster";
}

TEST_F(http_transport_test, a_stream_whose_client_leaves_is_counted_with_its_tokens) {
  service_.never_finish = true;
  service_.gap = 2ms;
  start();
  auto cli = test::loopback_client(server_->port());
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = chat("go on", true).dump();
  req.set_header("Content-Type", "application/json");
  int chunks = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 5; };
  EXPECT_FALSE(cli.send(req));
  std::string m;
  const auto until = clock_type::now() + 5s;
  while (clock_type::now() < until) {
    m = metrics();
    if (m.find("mosaic:request_failure_total{status=\"499\"} 1") != std::string::npos)
      break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_NE(m.find("mosaic:request_failure_total{status=\"499\"} 1"), std::string::npos) << m;
  const auto at = m.find("\nmosaic:generation_tokens_total ");
  ASSERT_NE(at, std::string::npos) << m;
  EXPECT_GE(std::stod(m.substr(at + 32)), 3.0) << "the tokens the client was sent";
}

} // namespace
} // namespace mosaic::server
