// front_door_bench: what the front door's two protocols cost per request
// and per token, next to a raw ZeroMQ round trip on the same machine.
//
//   front_door_bench [--requests N] [--tokens T]
//
// The server is the real one (HTTP and the ZeroMQ API sharing one front
// door) over an in-bench generation_service whose tokens are ready at
// once, so what is measured is the front door and its protocol, not the
// model. Every figure is a mean over sequential requests on loopback:
//   raw ZeroMQ      DEALER -> ROUTER -> DEALER echo of a 64-byte frame
//   ZMQ API request chat request -> 1 token frame + finish frame
//   HTTP request    POST /v1/chat/completions (keep-alive) -> 1-token JSON
//   token streams   one request of T tokens: tokens/s over ZMQ and SSE

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "messages/api_client.hpp"
#include "server/http_server.hpp"
#include "server/zmq_server.hpp"

namespace {

using namespace mosaic;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double micros_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
}

/// Tokens that are ready at once: `n` one-character pieces and a finish.
class instant_stream final : public server::generation_stream {
public:
  explicit instant_stream(uint32_t n) : n_(n) {}
  std::optional<wire::token_event> next(std::chrono::milliseconds) override {
    wire::token_event ev;
    ev.index = i_;
    if (i_ < n_) {
      ev.token_id = int32_t(100 + i_++ % 50);
      ev.text = "a";
      return ev;
    }
    if (i_++ > n_)
      return std::nullopt;
    ev.finish = msg::FinishReason::length;
    ev.usage = msg::Usage{8, n_, 0, 0, 0};
    return ev;
  }
  void cancel() override {}

private:
  uint32_t n_, i_ = 0;
};

class instant_service final : public server::generation_service {
public:
  server::service_info info() const override { return {"bench", 1 << 20, 16, 0, {}}; }
  std::shared_ptr<server::generation_stream> submit(const wire::generate_request& r) override {
    return std::make_shared<instant_stream>(r.sampling.max_tokens);
  }
  result<server::stored_image> upload(std::string_view, std::span<const uint8_t>,
                                      std::chrono::milliseconds) override {
    return make_error(errc::unsupported, "no uploads in the bench");
  }
  status remove(std::string_view, const library_key_bytes&) override {
    return make_error(errc::unsupported, "no uploads in the bench");
  }
  server::service_stats stats() const override { return {}; }
};

/// Mean microseconds of a raw ZeroMQ round trip (DEALER -> ROUTER echo).
double raw_zmq_round_trip(int n) {
  zmq::context_t ctx{1};
  zmq::socket_t router{ctx, zmq::socket_type::router};
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  const auto endpoint = router.get(zmq::sockopt::last_endpoint);
  std::thread echo{[&router, n] {
    for (int i = 0; i < n; ++i) {
      zmq::message_t id, body;
      if (!router.recv(id) || !router.recv(body))
        return;
      router.send(id, zmq::send_flags::sndmore);
      router.send(body, zmq::send_flags::none);
    }
  }};
  zmq::socket_t dealer{ctx, zmq::socket_type::dealer};
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(endpoint);
  std::vector<uint8_t> frame(64, 7);
  zmq::message_t reply;
  // The first round trip connects: not timed.
  dealer.send(zmq::buffer(frame), zmq::send_flags::none);
  (void)dealer.recv(reply);
  const auto t0 = clock_type::now();
  for (int i = 1; i < n; ++i) {
    dealer.send(zmq::buffer(frame), zmq::send_flags::none);
    (void)dealer.recv(reply);
  }
  const double us = micros_since(t0) / (n - 1);
  echo.join();
  return us;
}

api::chat_request zmq_chat(int tokens) {
  api::chat_request c;
  c.messages.push_back({"user", {std::string{"hi"}}});
  c.max_tokens = tokens;
  return c;
}

std::string http_chat(int tokens, bool stream) {
  return nlohmann::json{{"model", "bench"},
                        {"messages", {{{"role", "user"}, {"content", "hi"}}}},
                        {"max_tokens", tokens},
                        {"stream", stream}}
      .dump();
}

int run(int requests, int tokens) {
  instant_service service;
  server::http_options o;
  o.port = 0;
  o.limits.max_tokens_cap = std::max(tokens, 16);
  auto http = server::http_server::start(o, service);
  if (!http) {
    std::fprintf(stderr, "error: %s\n", http.err().to_string().c_str());
    return 1;
  }
  auto zmq = server::zmq_server::start({"127.0.0.1", 0}, **http);
  if (!zmq) {
    std::fprintf(stderr, "error: %s\n", zmq.err().to_string().c_str());
    return 1;
  }
  auto client = api::api_client::connect((*zmq)->endpoint());
  if (!client) {
    std::fprintf(stderr, "error: %s\n", client.err().to_string().c_str());
    return 1;
  }
  httplib::Client cli{"127.0.0.1", (*http)->port()};
  cli.set_keep_alive(true);
  cli.set_tcp_nodelay(true);

  auto zmq_request = [&](int n_tokens) {
    auto a = (*client)->complete(zmq_chat(n_tokens), 10s);
    if (!a || !a->finish || int(a->tokens.size()) != n_tokens) {
      std::fprintf(stderr, "error: ZMQ API request failed\n");
      std::exit(1);
    }
  };
  auto http_request = [&](int n_tokens, bool stream) {
    auto r = cli.Post("/v1/chat/completions", http_chat(n_tokens, stream), "application/json");
    if (!r || r->status != 200) {
      std::fprintf(stderr, "error: HTTP request failed\n");
      std::exit(1);
    }
  };
  zmq_request(1); // connect
  http_request(1, false);
  // Three interleaved passes; the median of each (a shared machine's
  // load shifts between passes, not within the comparison).
  std::vector<double> raw_us, zmq_us, http_us, zmq_tps, sse_tps;
  for (int pass = 0; pass < 3; ++pass) {
    raw_us.push_back(raw_zmq_round_trip(requests));
    auto t0 = clock_type::now();
    for (int i = 0; i < requests; ++i)
      zmq_request(1);
    zmq_us.push_back(micros_since(t0) / requests);
    t0 = clock_type::now();
    for (int i = 0; i < requests; ++i)
      http_request(1, false);
    http_us.push_back(micros_since(t0) / requests);
    t0 = clock_type::now();
    zmq_request(tokens);
    zmq_tps.push_back(tokens / (micros_since(t0) / 1e6));
    t0 = clock_type::now();
    http_request(tokens, true);
    sse_tps.push_back(tokens / (micros_since(t0) / 1e6));
  }
  const double raw = median(raw_us), zmq_m = median(zmq_us), http_m = median(http_us);
  const double ztps = median(zmq_tps), stps = median(sse_tps);

  std::printf("front door on loopback, %d sequential requests x 3 passes (medians), "
              "tokens ready at once\n",
              requests);
  std::printf("  raw ZeroMQ round trip (64 B)    %9.1f us\n", raw);
  std::printf("  ZMQ API request (1 token)       %9.1f us = %.2fx the raw round trip\n", zmq_m,
              zmq_m / raw);
  std::printf("  HTTP request (1 token)          %9.1f us = %.2fx the raw round trip, "
              "%.2fx the ZMQ API\n",
              http_m, http_m / raw, http_m / zmq_m);
  std::printf("  token stream, %d tokens: ZMQ API %.0f tokens/s, HTTP SSE %.0f tokens/s "
              "(ZMQ / SSE = %.2f)\n",
              tokens, ztps, stps, ztps / stps);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  int requests = 2000;
  int tokens = 4000;
  CLI::App app{"Front door request overhead: ZeroMQ API vs HTTP vs a raw ZeroMQ round trip"};
  app.add_option("--requests", requests, "sequential requests per protocol")
      ->check(CLI::Range(2, 1000000));
  app.add_option("--tokens", tokens, "tokens of the streamed request")
      ->check(CLI::Range(1, 100000));
  CLI11_PARSE(app, argc, argv);
  return run(requests, tokens);
}
