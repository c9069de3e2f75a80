// A three-node cluster of real `mosaic node` processes (issue 7's "Done
// when"): front (frontend, router, encoder), prefill (kv_loader, linker,
// prefill) and decode (decode), each in its own network namespace with
// its own address on a bridge; where namespaces cannot be made, on
// distinct loopback addresses (127.0.S.2-4). builtin:tiny, greedy.
//
// Checks: the nodes find each other whatever the start order; greedy
// answers (text and image requests) equal those of `mosaic serve` (every
// actor in one process); killing the decode node mid-stream ends every
// running stream with an error promptly; new requests are refused with an
// error naming the decode node; the restarted decode node serves again;
// the prefill node's KV library verifies after a kill -9 of that node.
// That cluster runs its control plane over TLS, where each pair of nodes
// shares the connection the node whose name sorts first opens ("decode"
// dials the others): the restarted decode node reconnects by dialing
// again. The failover cluster runs it plain.
// Label `cluster`; bounded (< 2 min).

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
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
using mosaic::test::child;
using mosaic::test::read_file;

std::string base64(const std::string& in) {
  static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6)
      out += tbl[(v >> s) & 63];
  }
  if (i < in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    if (i + 1 < in.size())
      v |= uint8_t(in[i + 1]) << 8;
    out += tbl[(v >> 18) & 63];
    out += tbl[(v >> 12) & 63];
    out += i + 1 < in.size() ? tbl[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

int run(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str());
}

/// Four addresses in namespaces on a bridge, or on loopback.
struct network {
  std::string prefix; ///< names of namespaces / links
  bool namespaces = false;
  std::string host[4]; ///< front, prefill, decode, second decode
  std::string why_not; ///< why namespaces were not used

  void setup() {
    const int s = int(getpid() % 250) + 1;
    prefix = "mzc" + std::to_string(getpid() % 100000);
    const std::string subnet = "10.213." + std::to_string(s) + ".";
    const std::string br = prefix + "b";
    bool ok = getenv("MOSAIC_CLUSTER_NO_NETNS") == nullptr;
    if (!ok)
      why_not = "MOSAIC_CLUSTER_NO_NETNS is set";
    ok = ok && run("ip link add " + br + " type bridge") == 0 &&
         run("ip addr add " + subnet + "1/24 dev " + br) == 0 &&
         run("ip link set " + br + " up") == 0;
    const char* roles[4] = {"f", "p", "d", "e"};
    for (int i = 0; ok && i < 4; ++i) {
      const std::string ns = prefix + roles[i];
      const std::string h = prefix + roles[i] + "h", n = prefix + roles[i] + "n";
      host[i] = subnet + std::to_string(i + 2);
      ok = run("ip netns add " + ns) == 0 &&
           run("ip link add " + h + " type veth peer name " + n) == 0 &&
           run("ip link set " + n + " netns " + ns) == 0 &&
           run("ip link set " + h + " master " + br) == 0 && run("ip link set " + h + " up") == 0 &&
           run("ip netns exec " + ns + " ip addr add " + host[i] + "/24 dev " + n) == 0 &&
           run("ip netns exec " + ns + " ip link set " + n + " up") == 0 &&
           run("ip netns exec " + ns + " ip link set lo up") == 0;
    }
    if (ok) {
      namespaces = true;
      return;
    }
    if (why_not.empty())
      why_not = "`ip netns`/veth/bridge not permitted here";
    teardown();
    for (int i = 0; i < 4; ++i)
      host[i] = "127.0." + std::to_string(s) + "." + std::to_string(i + 2);
  }
  /// argv prefix that runs a command in node i's namespace.
  std::vector<std::string> exec_in(int i) const {
    static const char* roles[4] = {"f", "p", "d", "e"};
    if (!namespaces)
      return {};
    return {"ip", "netns", "exec", prefix + roles[i]};
  }
  void teardown() {
    for (const char* r : {"f", "p", "d", "e"}) {
      run("ip link del " + prefix + r + "h");
      run("ip netns del " + prefix + r);
    }
    run("ip link del " + prefix + "b");
  }
};

std::string chat_body(const std::string& image_b64, int max_tokens, bool stream,
                      const std::string& policy = "") {
  nlohmann::json content = nlohmann::json::array();
  if (!image_b64.empty())
    content.push_back(
        {{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64," + image_b64}}}});
  content.push_back({{"type", "text"}, {"text", "What is in the picture?"}});
  nlohmann::json j = {{"model", "builtin:tiny"},
                      {"messages", {{{"role", "user"}, {"content", content}}}},
                      {"max_tokens", max_tokens},
                      {"temperature", 0},
                      {"stream", stream}};
  if (!policy.empty())
    j["mosaic"] = {{"policy", policy}};
  return j.dump();
}

struct answer {
  int status = 0;
  std::string content;
  std::string error;
};

answer ask(const std::string& host, int port, const std::string& body) {
  httplib::Client cli{host, port};
  cli.set_connection_timeout(5, 0);
  cli.set_read_timeout(30, 0);
  auto res = cli.Post("/v1/chat/completions", body, "application/json");
  answer a;
  if (!res) {
    a.error = "no HTTP answer: " + httplib::to_string(res.error());
    return a;
  }
  a.status = res->status;
  auto j = nlohmann::json::parse(res->body, nullptr, false);
  if (j.is_discarded())
    a.error = "bad JSON: " + res->body;
  else if (j.contains("error"))
    a.error = j["error"].value("message", res->body);
  else
    a.content = j["choices"][0]["message"]["content"].get<std::string>();
  return a;
}

int port_from_log(const fs::path& log) {
  auto text = read_file(log);
  auto at = text.find("HTTP front door: http://");
  if (at == std::string::npos)
    return -1;
  auto colon = text.find(':', at + 24);
  return std::atoi(text.c_str() + colon + 1);
}

class NodeCluster : public ::testing::Test {
protected:
  void TearDown() override {
    for (auto* c : {&front, &prefill, &decode, &decode2, &single})
      c->kill_now(SIGTERM);
    net.teardown();
    if (!HasFailure() && !dir.empty())
      fs::remove_all(dir); // logs stay for a failed run
  }

  void start_node(child& c, int i, const std::string& name) {
    auto argv = net.exec_in(i);
    for (std::string a :
         {std::string{MOSAIC_BIN}, std::string{"node"}, std::string{"--topology"}, topo.string(),
          std::string{"--node"}, name, std::string{"--connect-timeout"}, std::string{"40"}})
      argv.push_back(a);
    c.start(argv, dir / (name + ".log"));
  }

  /// Starts `mosaic serve` (the reference), makes the network and writes
  /// the cluster's topology (front, prefill, decode[, decode2]).
  /// Makes the cluster's CA and a certificate per node in `dir` (the
  /// openssl command); returns the topology's top-level `tls_ca` line.
  std::string make_certificates(const std::vector<std::string>& nodes) {
    const auto f = [&](const std::string& name) { return (dir / name).string(); };
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    EXPECT_EQ(run("openssl req -x509" + ec + " -days 30 -subj /CN=ca -keyout " + f("ca.key") +
                  " -out " + f("ca.crt")),
              0);
    for (const auto& n : nodes) {
      EXPECT_EQ(run("openssl req" + ec + " -subj /CN=" + n + " -keyout " + f(n + ".key") +
                    " -out " + f(n + ".csr")),
                0);
      EXPECT_EQ(run("openssl x509 -req -days 30 -in " + f(n + ".csr") + " -CA " + f("ca.crt") +
                    " -CAkey " + f("ca.key") + " -CAcreateserial -out " + f(n + ".crt")),
                0);
    }
    return "tls_ca: " + f("ca.crt") + "\n";
  }

  /// `, tls_cert: ..., tls_key: ...` for node `n` when the cluster uses TLS.
  std::string certificate_of(const std::string& n, bool tls) const {
    if (!tls)
      return "";
    return ", tls_cert: " + (dir / (n + ".crt")).string() +
           ", tls_key: " + (dir / (n + ".key")).string();
  }

  /// `tls`: the control plane over TLS (every node with a certificate of
  /// the cluster's CA; docs/deploy.md).
  void prepare(bool second_decode, bool tls = false) {
    if (geteuid() != 0 && getenv("MOSAIC_CLUSTER_NO_NETNS") == nullptr)
      setenv("MOSAIC_CLUSTER_NO_NETNS", "1", 1); // loopback addresses need no privileges
    dir = fs::path{MOSAIC_TEST_BINARY_DIR} / ("node-cluster-" + std::to_string(getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    setenv("MOSAIC_HOME", (fs::path{MOSAIC_TEST_BINARY_DIR} / "mosaic-home-cluster").c_str(), 1);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    base = 21000 + int(getpid() % 2000) * 8;

    // The reference: every actor in one process. Started first, it also
    // creates builtin:tiny in MOSAIC_HOME before the nodes read it.
    {
      std::ofstream f{dir / "single.yaml"};
      f << "model: builtin:tiny\ndefaults: { policy: full, deadline_ms: 20000 }\nnodes:\n"
        << "  - { name: one, host: 127.0.0.1, control_port: " << base << ", data_port: " << base + 1
        << ", threads: 1, actors: [ { kind: frontend, http_port: " << base + 2
        << " }, { kind: router }, { kind: encoder }, { kind: kv_loader, library: "
        << (dir / "lib1").string()
        << ", io: pread, ram_gb: 0.1, disk_gb: 1 }, { kind: linker }, { kind: prefill }, "
        << "{ kind: decode, max_batch: 8, pool_gb: 0.1 } ] }\n";
    }
    single.start({MOSAIC_BIN, "serve", "--topology", (dir / "single.yaml").string(), "--http-port",
                  "0", "--zmq-port", "0"},
                 dir / "single.log");
    ASSERT_TRUE(single.wait_for("running;", 60s)) << read_file(single.log);
    single_port = port_from_log(single.log);
    ASSERT_GT(single_port, 0);

    net.setup();
    std::printf("cluster on %s: %s %s %s\n",
                net.namespaces ? "network namespaces" : "loopback addresses", net.host[0].c_str(),
                net.host[1].c_str(), net.host[2].c_str());
    if (!net.namespaces)
      std::printf("  (no namespaces: %s)\n", net.why_not.c_str());
    http_port = base + 3;
    topo = dir / "cluster.yaml";
    {
      std::ofstream f{topo};
      const auto ca = tls ? make_certificates({"front", "prefill", "decode", "decode2"}) : "";
      f << "model: builtin:tiny\ndefaults: { policy: full, deadline_ms: 20000 }\n"
        << ca << "nodes:\n"
        << "  - { name: front, host: " << net.host[0] << certificate_of("front", tls)
        << ", control_port: " << base + 4 << ", data_port: " << base + 5
        << ", threads: 1, actors: [ { kind: frontend, http_port: " << http_port
        << ", zmq_port: " << base + 6 << " }, { kind: router }, { kind: encoder } ] }\n"
        << "  - { name: prefill, host: " << net.host[1] << certificate_of("prefill", tls)
        << ", control_port: " << base + 4 << ", data_port: " << base + 5
        << ", threads: 1, actors: [ { kind: kv_loader, library: " << (dir / "lib3").string()
        << ", io: pread, ram_gb: 0.1, disk_gb: 1 }, { kind: linker }, "
        << "{ kind: prefill } ] }\n"
        << "  - { name: decode, host: " << net.host[2] << certificate_of("decode", tls)
        << ", control_port: " << base + 4 << ", data_port: " << base + 5
        << ", threads: 1, actors: [ { kind: decode, max_batch: 8, "
        << "pool_gb: 0.1 } ] }\n";
      if (second_decode)
        f << "  - { name: decode2, host: " << net.host[3] << certificate_of("decode2", tls)
          << ", control_port: " << base + 4 << ", data_port: " << base + 5
          << ", threads: 1, actors: [ { kind: decode, max_batch: 8, "
          << "pool_gb: 0.1 } ] }\n";
    }
  }

  int base = 0;
  int single_port = 0;
  int http_port = 0;

  network net;
  fs::path dir;
  fs::path topo;
  child front, prefill, decode, decode2, single;
};

TEST_F(NodeCluster, ThreeNodesAnswerLikeOneProcessAndSurviveALostDecodeNode) {
  prepare(false, /*tls=*/true);
  if (HasFatalFailure())
    return;
  // Start order: decode last, after the others have been waiting for it.
  start_node(front, 0, "front");
  start_node(prefill, 1, "prefill");
  std::this_thread::sleep_for(1500ms);
  ASSERT_TRUE(front.running()) << read_file(front.log);
  start_node(decode, 2, "decode");
  ASSERT_TRUE(front.wait_for("node front ready", 60s)) << read_file(front.log);
  ASSERT_TRUE(prefill.wait_for("node prefill ready", 30s)) << read_file(prefill.log);
  ASSERT_TRUE(decode.wait_for("node decode ready", 30s)) << read_file(decode.log);
  EXPECT_NE(read_file(front.log).find("(CAF middleman, TLS)"), std::string::npos)
      << read_file(front.log);
  const std::string& fh = net.host[0];

  // Greedy answers equal the single process's: text only, an image
  // (encoded on front, embeddings sent to prefill), the image again.
  const auto png =
      base64(read_file(fs::path{MOSAIC_SOURCE_DIR} / "tests/data/engine/red_square.png"));
  for (const auto& body :
       {chat_body("", 8, false), chat_body(png, 8, false), chat_body(png, 8, false)}) {
    auto want = ask("127.0.0.1", single_port, body);
    auto got = ask(fh, http_port, body);
    ASSERT_EQ(want.status, 200) << want.error;
    ASSERT_EQ(got.status, 200) << got.error << "\n" << read_file(prefill.log);
    EXPECT_FALSE(got.content.empty());
    EXPECT_EQ(got.content, want.content);
  }

  // An upload through front lands in the prefill node's library; DELETE
  // through front removes it there (front has no library of its own).
  {
    httplib::Client cli{fh, http_port};
    cli.set_read_timeout(30, 0);
    const auto raw = read_file(fs::path{MOSAIC_SOURCE_DIR} / "tests/data/engine/red_square.png");
    auto up = cli.Post("/v1/mosaic/images", raw, "image/png");
    ASSERT_TRUE(up);
    ASSERT_EQ(up->status, 200) << up->body;
    const auto id = nlohmann::json::parse(up->body)["id"].get<std::string>();
    auto del = cli.Delete(("/v1/mosaic/images/" + id).c_str());
    ASSERT_TRUE(del);
    EXPECT_EQ(del->status, 200) << del->body;
    EXPECT_NE(del->body.find("\"deleted\":true"), std::string::npos) << del->body;
    auto again = cli.Delete(("/v1/mosaic/images/" + id).c_str());
    ASSERT_TRUE(again);
    EXPECT_EQ(again->status, 404) << again->body;
  }

  // Long streams; kill -9 the decode node once every stream has tokens.
  constexpr int n_streams = 3;
  std::atomic<int> with_tokens{0};
  std::vector<std::string> bodies(n_streams);
  std::vector<clock_type::time_point> ended(n_streams);
  std::vector<std::thread> streams;
  for (int i = 0; i < n_streams; ++i)
    streams.emplace_back([&, i] {
      httplib::Client cli{fh, http_port};
      cli.set_read_timeout(30, 0);
      bool counted = false;
      httplib::Headers headers;
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/chat/completions";
      req.body = chat_body(png, 1900, true);
      req.set_header("Content-Type", "application/json");
      req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
        bodies[size_t(i)].append(data, n);
        if (!counted && bodies[size_t(i)].find("\"content\"") != std::string::npos) {
          counted = true;
          with_tokens++;
        }
        return true;
      };
      cli.send(req);
      ended[size_t(i)] = clock_type::now();
    });
  const auto wait_end = clock_type::now() + 20s;
  while (with_tokens.load() < n_streams && clock_type::now() < wait_end)
    std::this_thread::sleep_for(1ms);
  const auto killed_at = clock_type::now();
  decode.kill_now(SIGKILL);
  for (auto& t : streams)
    t.join();
  ASSERT_EQ(with_tokens.load(), n_streams) << "streams never produced tokens";
  for (int i = 0; i < n_streams; ++i) {
    const auto& b = bodies[size_t(i)];
    const double after = std::chrono::duration<double>(ended[size_t(i)] - killed_at).count();
    std::printf("stream %d ended %.3f s after the kill\n", i, after);
    EXPECT_LT(after, 5.0);
    EXPECT_NE(b.find("\"error\""), std::string::npos)
        << b.substr(b.size() > 600 ? b.size() - 600 : 0);
    EXPECT_NE(b.find("decode"), std::string::npos);
    EXPECT_EQ(b.find("\"finish_reason\":\"length\""), std::string::npos)
        << "stream " << i << " finished normally";
  }

  // While decode is down: refused at once, naming the decode node.
  const auto t0 = clock_type::now();
  auto refused = ask(fh, http_port, chat_body("", 8, false));
  EXPECT_NE(refused.status, 200);
  EXPECT_NE(refused.error.find("decode"), std::string::npos) << refused.error;
  EXPECT_LT(std::chrono::duration<double>(clock_type::now() - t0).count(), 5.0);

  // The restarted decode node rejoins and serves the same answers.
  start_node(decode, 2, "decode");
  ASSERT_TRUE(decode.wait_for("node decode ready", 30s)) << read_file(decode.log);
  const auto body = chat_body(png, 8, false);
  const auto want = ask("127.0.0.1", single_port, body);
  answer got;
  for (auto end = clock_type::now() + 20s; clock_type::now() < end;) {
    got = ask(fh, http_port, body);
    if (got.status == 200)
      break;
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_EQ(got.status, 200) << got.error;
  EXPECT_EQ(got.content, want.content);

  // The KV streamed during the prefill pass: layers were at the decode
  // node before the DecodeTask (sent after the pass) got there. Its
  // counters are printed when it stops.
  // (Under mpic:2: the first is a library miss, stored after use, which
  // the kill -9 below must leave intact; `full` requests store nothing.)
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(ask(fh, http_port, chat_body(png, 4, false, "mpic:2")).status, 200);
  // SIGTERM to the decode node while it streams: the stream it holds
  // finishes before the node stops (a node without a frontend drains too).
  {
    auto j = nlohmann::json::parse(chat_body("", 1500, true));
    j["ignore_eos"] = true;
    std::string streamed;
    std::atomic<bool> flowing{false};
    std::thread stream([&] {
      httplib::Client cli{fh, http_port};
      cli.set_read_timeout(30, 0);
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/chat/completions";
      req.body = j.dump();
      req.set_header("Content-Type", "application/json");
      req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
        streamed.append(d, n);
        if (streamed.find("\"content\"") != std::string::npos)
          flowing = true;
        return true;
      };
      cli.send(req);
    });
    const auto until = clock_type::now() + 20s;
    while (!flowing && clock_type::now() < until)
      std::this_thread::sleep_for(1ms);
    ASSERT_TRUE(flowing) << read_file(decode.log);
    const auto term_at = clock_type::now();
    ::kill(decode.pid, SIGTERM);
    stream.join();
    std::printf("SIGTERM to the streaming decode node: its stream finished %.2f s later\n",
                std::chrono::duration<double>(clock_type::now() - term_at).count());
    EXPECT_NE(streamed.find("\"finish_reason\":\"length\""), std::string::npos)
        << "the stream was cut: "
        << streamed.substr(streamed.size() > 400 ? streamed.size() - 400 : 0);
    EXPECT_TRUE(decode.wait_for("drained (its requests finished)", 10s)) << read_file(decode.log);
  }
  decode.kill_now(SIGTERM);
  {
    const auto log = read_file(decode.log);
    const auto at = log.find("data plane: ");
    ASSERT_NE(at, std::string::npos) << log;
    unsigned long long transfers = 0, layers = 0, early = 0;
    ASSERT_EQ(std::sscanf(log.c_str() + at, "data plane: %llu transfers taken, %llu layers, %llu",
                          &transfers, &layers, &early),
              3)
        << log.substr(at);
    std::printf("restarted decode node: %llu transfers, %llu layers, %llu arrived before their "
                "decode task\n",
                transfers, layers, early);
    EXPECT_GE(transfers, 4u);
    EXPECT_GT(early, 0u) << "no layer arrived while its prefill pass ran";
  }

  // The prefill node's library (the image stored after use) is intact
  // after a kill -9 of that node.
  prefill.kill_now(SIGKILL);
  child verify;
  verify.start({MOSAIC_BIN, "cache", "verify", "--library", (dir / "lib3").string()},
               dir / "verify.log");
  ASSERT_TRUE(verify.wait_for("verified", 30s)) << read_file(verify.log);
  EXPECT_NE(read_file(verify.log).find(" 0 bad"), std::string::npos) << read_file(verify.log);
  const auto report = "\n" + read_file(verify.log);
  std::printf("prefill library after kill -9:%s", report.c_str());
  EXPECT_EQ(report.find("\n0 entries verified"), std::string::npos)
      << "nothing was stored: " << report;
}

// Two decode nodes: requests go to the one with fewer in flight; when one
// dies, new requests fail over to the other with the same answers.
TEST_F(NodeCluster, RequestsFailOverToASecondDecodeNode) {
  prepare(true);
  if (HasFatalFailure())
    return;
  start_node(decode, 2, "decode");
  start_node(decode2, 3, "decode2");
  start_node(prefill, 1, "prefill");
  start_node(front, 0, "front");
  ASSERT_TRUE(front.wait_for("node front ready", 60s)) << read_file(front.log);
  ASSERT_TRUE(prefill.wait_for("node prefill ready", 30s)) << read_file(prefill.log);
  const std::string& fh = net.host[0];
  const auto png =
      base64(read_file(fs::path{MOSAIC_SOURCE_DIR} / "tests/data/engine/red_square.png"));
  const auto body = chat_body(png, 8, false);
  const auto want = ask("127.0.0.1", single_port, body);
  ASSERT_EQ(want.status, 200) << want.error;
  // Concurrent requests spread over both decode nodes and agree.
  {
    std::vector<answer> got(6);
    std::vector<std::thread> ts;
    for (size_t i = 0; i < got.size(); ++i)
      ts.emplace_back([&, i] { got[i] = ask(fh, http_port, chat_body(png, 64, false)); });
    for (auto& t : ts)
      t.join();
    const auto want64 = ask("127.0.0.1", single_port, chat_body(png, 64, false));
    for (const auto& g : got) {
      ASSERT_EQ(g.status, 200) << g.error;
      EXPECT_EQ(g.content, want64.content);
    }
  }
  decode.kill_now(SIGKILL);
  ASSERT_TRUE(prefill.wait_for(
      "'decode' (" + net.host[2] + ":" + std::to_string(base + 4) + ") is DOWN", 5s))
      << read_file(prefill.log);
  for (int i = 0; i < 3; ++i) {
    auto got = ask(fh, http_port, body);
    ASSERT_EQ(got.status, 200) << "request " << i << " after decode died: " << got.error;
    EXPECT_EQ(got.content, want.content);
  }
  // Both gone: refused, naming both.
  decode2.kill_now(SIGKILL);
  std::this_thread::sleep_for(300ms);
  auto refused = ask(fh, http_port, body);
  EXPECT_NE(refused.status, 200);
  EXPECT_NE(refused.error.find("decode2"), std::string::npos) << refused.error;
}

} // namespace
