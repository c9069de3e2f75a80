// The HTTP target against a real front door: a builtin:tiny cluster and
// `mosaic serve`'s HTTP server on 127.0.0.1 with an ephemeral port, driven
// open loop with streaming, with library references and with data URLs;
// against a peer (a stand-in vLLM that records what it is sent); an
// unreachable target; URL, SSE and base64.

// GCC 12 at -O3 reports a false maybe-uninitialized inside std::variant's
// copy of wire::segment (see tests/actors/pipeline_test.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "server/cluster_service.hpp"
#include "server/http_server.hpp"
#include "sim/driver.hpp"
#include "sim/http_target.hpp"
#include "sim/procedural_image.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace mosaic::sim {
namespace {

using namespace std::chrono_literals;

class http_target_test : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    library_ = std::make_unique<actors::test::temp_dir>("mosaic_sim_http_lib");
    auto c = actors::local_cluster::start(actors::test::tiny_options(library_->path()));
    ASSERT_TRUE(c) << c.err().to_string();
    cluster_ = std::move(*c);
    service_ = std::make_unique<server::cluster_service>(*cluster_, "builtin:tiny");
    server::http_options o;
    o.port = 0;
    o.request_timeout = 60s;
    auto s = server::http_server::start(std::move(o), *service_);
    ASSERT_TRUE(s) << s.err().to_string();
    http_ = std::move(*s);
  }
  static void TearDownTestSuite() {
    http_.reset();
    service_.reset();
    cluster_.reset();
    library_.reset();
  }

  static http_endpoint endpoint() { return {"127.0.0.1", http_->port()}; }

  /// A few short mmdu dialogues (2 turns, <= 2 images, <= 4 tokens).
  static workload small_mmdu(uint64_t seed) {
    auto spec = load_workload_spec("mmdu", builtin_workload_dir());
    EXPECT_TRUE(spec);
    arrival_spec a = spec->arrivals;
    a.rate = 4.0;
    a.ramp.clear();
    a.duration_s = 1.5;
    a.max_requests = 6;
    auto w = generate_workload(*spec, a, seed, {2, 2, 4});
    EXPECT_TRUE(w) << (w ? "" : w.err().to_string());
    return *w;
  }

  static drive_options quiet(const std::string& label) {
    drive_options d;
    d.label = label;
    d.progress_bar = false;
    d.drain_timeout = 60s;
    return d;
  }

  static inline std::unique_ptr<actors::test::temp_dir> library_;
  static inline std::unique_ptr<actors::local_cluster> cluster_;
  static inline std::unique_ptr<server::cluster_service> service_;
  static inline std::unique_ptr<server::http_server> http_;
};

TEST_F(http_target_test, live_run_records_every_token_of_every_request) {
  const auto w = small_mmdu(actors::test::fresh_seed());
  ASSERT_GE(w.requests.size(), 2u);
  auto s = connect_front_door(endpoint(), "", 3s);
  ASSERT_TRUE(s) << s.err().to_string();
  EXPECT_EQ(s->model, "builtin:tiny");
  auto uploaded = upload_images(*s, w);
  ASSERT_TRUE(uploaded) << uploaded.err().to_string();
  EXPECT_EQ(size_t(*uploaded), w.used_images().size());
  ASSERT_TRUE(warm_images(*s, w, ""));

  auto run = [&](const std::string& policy) {
    http_target t{*s, {.policy = policy}};
    EXPECT_NE(t.describe().find("127.0.0.1"), std::string::npos);
    return drive(t, w, quiet(policy));
  };
  const auto full = run("full");
  const auto& sum = full.summary;
  EXPECT_EQ(sum.failed, 0);
  EXPECT_EQ(sum.completed, int64_t(w.requests.size()));
  int64_t tokens = 0;
  for (size_t i = 0; i < full.records.size(); ++i) {
    const auto& r = full.records[i];
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_GT(r.ttft(), 0.0);
    EXPECT_GE(r.output_tokens, 1);
    EXPECT_LE(r.output_tokens, w.requests[i].max_tokens);
    EXPECT_EQ(r.tokens.size(), size_t(r.output_tokens));
    EXPECT_TRUE(std::is_sorted(r.token_times_s.begin(), r.token_times_s.end()));
    EXPECT_GE(r.end_s, r.token_times_s.back());
    // The server's usage: the images' tokens are part of the prompt.
    EXPECT_EQ(r.image_tokens, w.requests[i].n_images() * service_->info().image_tokens);
    EXPECT_GT(r.prompt_tokens, r.image_tokens);
    tokens += r.output_tokens;
  }
  EXPECT_EQ(sum.total_output_tokens, tokens);
  EXPECT_GT(sum.ttft.mean, 0.0);
  EXPECT_GT(sum.output_token_throughput, 0.0);

  // Greedy, one request alone (so that no batch differs): the same token
  // pieces again. (Concurrent requests may be batched differently from run
  // to run, which may flip an argmax of the random-weight model.)
  auto alone = [&] {
    workload one = w;
    one.requests.resize(1);
    one.requests[0].arrival_s = 0.0;
    http_target t{*s, {.policy = "full"}};
    return drive(t, one, quiet("full"));
  };
  const auto a = alone();
  const auto b = alone();
  ASSERT_TRUE(a.records[0].ok && b.records[0].ok) << a.records[0].error << b.records[0].error;
  EXPECT_EQ(a.records[0].tokens, b.records[0].tokens);
  const auto mpic = run("mpic:32");
  EXPECT_EQ(mpic.summary.failed, 0);
}

TEST_F(http_target_test, a_mosaic_front_door_takes_data_urls_and_salted_runs) {
  const auto w = small_mmdu(actors::test::fresh_seed());
  auto s = connect_front_door(endpoint(), "", 3s);
  ASSERT_TRUE(s) << s.err().to_string();
  EXPECT_EQ(s->server, "mosaic");
  EXPECT_TRUE(s->is_mosaic());
  s->data_urls = true;
  ASSERT_TRUE(upload_images(*s, w)); // compiled in the library, sent as bytes
  for (int idx : w.used_images()) {
    EXPECT_EQ(s->image_urls[size_t(idx)].rfind("data:image/png;base64,", 0), 0u);
    EXPECT_FALSE(s->image_ids[size_t(idx)].empty());
  }
  ASSERT_TRUE(warm_images(*s, w, "salt-a"));
  http_target t{*s, {.policy = "mpic:32", .cache_salt = "salt-a"}};
  const auto r = drive(t, w, quiet("mpic:32"));
  EXPECT_EQ(r.summary.failed, 0) << r.records[0].error;
  EXPECT_EQ(r.summary.completed, int64_t(w.requests.size()));
  for (size_t i = 0; i < r.records.size(); ++i)
    EXPECT_EQ(r.records[i].image_tokens, w.requests[i].n_images() * service_->info().image_tokens);
}

TEST_F(http_target_test, refused_requests_are_recorded_not_fatal) {
  auto w = small_mmdu(actors::test::fresh_seed());
  auto s = connect_front_door(endpoint(), "", 3s);
  ASSERT_TRUE(s);
  ASSERT_TRUE(upload_images(*s, w));
  w.requests.resize(2);
  w.requests[1].max_tokens = 1'000'000; // over the server's max_tokens cap: HTTP 400
  http_target t{*s, {.policy = "nonsense-policy"}};
  w.requests[0].max_tokens = 2;
  const auto r = drive(t, w, quiet("bad"));
  EXPECT_EQ(r.summary.completed, 0);
  EXPECT_EQ(r.summary.failed, 2);
  for (const auto& rec : r.records) {
    EXPECT_FALSE(rec.ok);
    EXPECT_NE(rec.error.find("HTTP 400"), std::string::npos) << rec.error;
  }
}

/// A stand-in OpenAI-compatible peer on 127.0.0.1: /v1/models says
/// `owned_by: vllm`; every chat completion streams "a", "b", "c", then
/// usage and [DONE]. It keeps every request body it was sent.
class fake_peer {
public:
  fake_peer() {
    server_.Get("/v1/models", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(
          R"({"object":"list","data":[{"id":"/models/small","object":"model","owned_by":"vllm"}]})",
          "application/json");
    });
    server_.Post("/v1/chat/completions", [this](const httplib::Request& req,
                                                httplib::Response& res) {
      auto body = nlohmann::json::parse(req.body, nullptr, false);
      {
        std::lock_guard lock{mutex_};
        bodies_.push_back(body);
      }
      if (!body.value("stream", false)) {
        res.set_content(R"({"choices":[{"message":{"content":"a"}}]})", "application/json");
        return;
      }
      std::string sse = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\","
                        "\"content\":\"\"}}]}\n\n";
      for (const char* piece : {"a", "b", "c"})
        sse += std::string{"data: {\"choices\":[{\"delta\":{\"content\":\""} + piece + "\"}}]}\n\n";
      sse += "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":42}}\n\ndata: [DONE]\n\n";
      res.set_content(sse, "text/event-stream");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread{[this] { server_.listen_after_bind(); }};
  }
  ~fake_peer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  std::vector<nlohmann::json> bodies() {
    std::lock_guard lock{mutex_};
    return bodies_;
  }

private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mutex_;
  std::vector<nlohmann::json> bodies_;
};

TEST_F(http_target_test, a_peer_gets_data_urls_its_salt_and_nothing_mosaic_only) {
  fake_peer peer;
  auto s = connect_front_door({"127.0.0.1", peer.port()}, "", 3s);
  ASSERT_TRUE(s) << s.err().to_string();
  EXPECT_EQ(s->server, "vllm");
  EXPECT_FALSE(s->is_mosaic());
  EXPECT_EQ(s->model, "/models/small");

  const auto w = small_mmdu(5);
  // No library on a peer: images go as data URLs or not at all.
  auto refused = upload_images(*s, w);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.err().message.find("data URLs"), std::string::npos) << refused.err().message;
  s->data_urls = true;
  auto made = upload_images(*s, w);
  ASSERT_TRUE(made) << made.err().to_string();
  EXPECT_EQ(*made, 0); // nothing uploaded

  ASSERT_TRUE(warm_images(*s, w, "salt-1"));
  http_target t{*s, {.policy = "mpic:32", .cache_salt = "salt-1"}};
  EXPECT_NE(t.describe().find("vllm"), std::string::npos) << t.describe();
  drive_options d;
  d.label = "vllm";
  d.progress_bar = false;
  d.drain_timeout = 30s;
  const auto r = drive(t, w, d);
  EXPECT_EQ(r.summary.failed, 0) << r.records[0].error;
  EXPECT_EQ(r.summary.completed, int64_t(w.requests.size()));
  for (const auto& rec : r.records) {
    EXPECT_EQ(rec.output_tokens, 3); // the role chunk is not a token
    EXPECT_EQ(rec.prompt_tokens, 42);
    EXPECT_EQ(rec.image_tokens, 0); // a peer does not say
  }

  const auto bodies = peer.bodies();
  ASSERT_EQ(bodies.size(), w.used_images().size() + w.requests.size());
  size_t images_seen = 0;
  for (const auto& b : bodies) {
    EXPECT_FALSE(b.contains("mosaic")) << b.dump().substr(0, 200);
    EXPECT_EQ(b.value("cache_salt", ""), "salt-1");
    EXPECT_EQ(b.value("add_special_tokens", false), true); // vLLM: BOS as Mosaic has it
    for (const auto& part : b["messages"][0]["content"]) {
      if (part["type"] != "image_url")
        continue;
      const auto url = part["image_url"]["url"].get<std::string>();
      ASSERT_EQ(url.rfind("data:image/png;base64,", 0), 0u) << url.substr(0, 40);
      ++images_seen;
    }
  }
  EXPECT_GE(images_seen, w.used_images().size());
  // The data URL is the workload's own PNG.
  const int first = w.used_images().front();
  EXPECT_EQ(s->image_urls[size_t(first)],
            "data:image/png;base64," + base64(procedural_png(w.seed, first, w.spec.image_size)));
}

TEST(http_target, base64_matches_rfc4648_vectors) {
  auto b64 = [](std::string_view text) {
    return base64({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  };
  EXPECT_EQ(b64(""), "");
  EXPECT_EQ(b64("f"), "Zg==");
  EXPECT_EQ(b64("fo"), "Zm8=");
  EXPECT_EQ(b64("foo"), "Zm9v");
  EXPECT_EQ(b64("foob"), "Zm9vYg==");
  EXPECT_EQ(b64("fooba"), "Zm9vYmE=");
  EXPECT_EQ(b64("foobar"), "Zm9vYmFy");
  const uint8_t high[] = {0xff, 0xfe, 0x00};
  EXPECT_EQ(base64(high), "//4A");
}

TEST(http_target, an_unreachable_target_is_a_clear_error_at_once) {
  // A port nobody listens on: an ephemeral one, bound but not listening
  // (connections are refused) and held until the end, so that no other
  // process's server can take it meanwhile.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } hold{fd};

  const auto t0 = std::chrono::steady_clock::now();
  auto s = connect_front_door({"127.0.0.1", port}, "", 2s);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::unavailable);
  EXPECT_NE(s.err().message.find("http://127.0.0.1:" + std::to_string(port)), std::string::npos)
      << s.err().message;
  EXPECT_NE(s.err().message.find("server running"), std::string::npos) << s.err().message;
  EXPECT_LT(took, 3s);
}

TEST(http_target, parses_http_urls_and_refuses_the_rest) {
  auto a = parse_http_url("http://127.0.0.1:8000");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 8000);
  auto b = parse_http_url("http://localhost:9/");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->port, 9);
  auto c = parse_http_url("http://example");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->port, 80);
  for (const char* bad : {"https://h:1", "h:1", "http://h:0", "http://h:70000", "http://h:x",
                          "http://:80", "http://h:1/v1"})
    EXPECT_FALSE(parse_http_url(bad)) << bad;
}

TEST(http_target, splits_server_sent_events_across_reads) {
  std::string buf = "data: {\"a\":1}\n\ndata: {\"b\"";
  auto first = take_sse_payloads(buf);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0], "{\"a\":1}");
  buf += ":2}\n\n: a comment, no data\n\ndata: [DONE]\n\n";
  auto rest = take_sse_payloads(buf);
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0], "{\"b\":2}");
  EXPECT_EQ(rest[1], "[DONE]");
  EXPECT_TRUE(buf.empty());
  EXPECT_NE(token_piece_id("a"), token_piece_id("b"));
  EXPECT_GE(token_piece_id("x"), 0);
}

TEST(driver, progress_line_says_how_far_the_run_is) {
  const auto line = progress_line("mpic:32", 12, 40, 9, 1, 340, 12.4, 60);
  EXPECT_NE(line.find("[mpic:32]"), std::string::npos) << line;
  EXPECT_NE(line.find("12/40 sent"), std::string::npos) << line;
  EXPECT_NE(line.find("9 done, 1 failed"), std::string::npos) << line;
  EXPECT_NE(line.find("#####....."), std::string::npos) << line; // 10 of 40 = 5 of 20
}

} // namespace
} // namespace mosaic::sim
