// SIGTERM to a real `mosaic serve` (builtin:tiny, CPU) with 50 streams
// running (issue 24): every stream ends with its finish reason or with an
// SSE error event, each followed by [DONE], none cut silently; new
// connections are refused at once; the process exits within the drain
// grace plus its teardown.

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "tests/cli/child_process.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

constexpr int n_streams = 50;
constexpr int drain_s = 1;

struct stream_result {
  std::string body;
  bool answered = false;
  int status = 0;
};

TEST(serve_drain, sigterm_lets_streams_finish_or_end_them_with_an_error_event) {
  const fs::path dir = fs::temp_directory_path() / ("mosaic-drain-" + std::to_string(getpid()));
  fs::create_directories(dir);
  {
    std::ofstream y{dir / "tiny.yaml"};
    y << "model: builtin:tiny\n"
         "defaults: { policy: \"full\", deadline_ms: 60000, max_tokens: 2000 }\n"
         "nodes:\n"
         "  - name: local\n"
         "    host: 127.0.0.1\n"
         "    control_port: 7400\n" // one node in one process: neither is bound
         "    data_port: 7500\n"
         "    actors:\n"
         "      - { kind: frontend, drain_s: "
      << drain_s
      << " }\n"
         "      - { kind: router }\n"
         "      - { kind: encoder }\n"
         "      - { kind: kv_loader, library: "
      << (dir / "lib").string()
      << ", ram_gb: 0.05, disk_gb: 1 }\n"
         "      - { kind: linker }\n"
         "      - { kind: prefill }\n"
         "      - { kind: decode, max_batch: 64, pool_gb: 0.2 }\n";
  }
  mosaic::test::child serve;
  serve.start({MOSAIC_BIN, "serve", "--topology", (dir / "tiny.yaml").string(), "--http-port", "0",
               "--zmq-port", "0"},
              dir / "serve.log");
  ASSERT_TRUE(serve.wait_for("running;", 60s)) << mosaic::test::read_file(serve.log);
  std::smatch m;
  const auto log = mosaic::test::read_file(serve.log);
  ASSERT_TRUE(std::regex_search(log, m, std::regex{R"(HTTP front door: http://[^:]+:(\d+)/v1)"}))
      << log;
  const int port = std::stoi(m[1]);

  // EOS ignored: odd streams ask for 60 tokens (they finish within the
  // grace), even ones for 1900 (about ten seconds here: cut by the drain).
  auto body_of = [](int max_tokens) {
    return nlohmann::json{{"model", "builtin:tiny"},
                          {"messages", {{{"role", "user"}, {"content", "Tell me a long story."}}}},
                          {"max_tokens", max_tokens},
                          {"ignore_eos", true},
                          {"temperature", 0},
                          {"stream", true}}
        .dump();
  };
  std::vector<stream_result> results(n_streams);
  std::atomic<int> started{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < n_streams; ++i)
    clients.emplace_back([&, i] {
      httplib::Client cli{"127.0.0.1", port};
      cli.set_read_timeout(60, 0);
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/chat/completions";
      req.body = body_of(i % 2 == 1 ? 60 : 1900);
      req.set_header("Content-Type", "application/json");
      bool first = true;
      req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
        if (first)
          ++started;
        first = false;
        results[size_t(i)].body.append(d, n);
        return true;
      };
      auto r = cli.send(req);
      results[size_t(i)].answered = bool(r);
      if (r)
        results[size_t(i)].status = r->status;
    });
  const auto until = clock_type::now() + 60s;
  while (started < n_streams && clock_type::now() < until)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(started, n_streams) << "not every stream started";

  const auto t0 = clock_type::now();
  ::kill(serve.pid, SIGTERM);
  std::this_thread::sleep_for(300ms);
  httplib::Client late{"127.0.0.1", port};
  late.set_connection_timeout(2, 0);
  auto refused = late.Get("/health");
  EXPECT_TRUE(!refused || refused->status == 503) << "a draining server took a new request";
  const int code = serve.wait_exit(std::chrono::seconds{drain_s + 20});
  const auto took = clock_type::now() - t0;
  for (auto& c : clients)
    c.join();
  EXPECT_EQ(code, 0) << mosaic::test::read_file(serve.log);
  EXPECT_LT(took, std::chrono::seconds{drain_s + 20});
  int finished = 0, ended_with_error = 0;
  for (int i = 0; i < n_streams; ++i) {
    const auto& r = results[size_t(i)];
    SCOPED_TRACE("stream " + std::to_string(i));
    EXPECT_TRUE(r.answered);
    EXPECT_EQ(r.status, 200);
    const auto done = r.body.rfind("data: [DONE]");
    ASSERT_NE(done, std::string::npos) << "cut silently: " << r.body.substr(r.body.size() - 200);
    const auto last_event = r.body.rfind("data: ", done - 1);
    ASSERT_NE(last_event, std::string::npos);
    const auto last = r.body.substr(last_event, done - last_event);
    if (last.find("\"finish_reason\":\"length\"") != std::string::npos)
      ++finished;
    else if (last.find("\"shutting_down\"") != std::string::npos)
      ++ended_with_error;
    else
      ADD_FAILURE() << "the last event is neither a finish nor the shutdown error: " << last;
  }
  EXPECT_EQ(finished + ended_with_error, n_streams);
  EXPECT_GE(finished, 1) << "no stream finished within the grace";
  EXPECT_GE(ended_with_error, 1) << "the drain cut nothing: the long answers were too short";
  const auto final_log = mosaic::test::read_file(serve.log);
  EXPECT_NE(final_log.find("drained (" + std::to_string(ended_with_error) + " request"),
            std::string::npos)
      << final_log;
  std::printf("SIGTERM with %d streams: %d finished, %d ended with the shutdown error, exit after "
              "%.2f s (grace %d s)\n",
              n_streams, finished, ended_with_error,
              std::chrono::duration<double>(took).count(), drain_s);
  fs::remove_all(dir);
}

} // namespace
