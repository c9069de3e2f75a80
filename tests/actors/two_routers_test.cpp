// Two routers in one cluster (issue 20): four nodes of one topology
// joined in this process (real CAF links and ZeroMQ data plane on
// 127.0.0.1). r0 and r1 each run frontend, router and encoder; p runs
// kv_loader, linker and prefill; d runs decode. Both routers send
// requests of two tenants at once through the same prefill and decode
// nodes: every answer equals that request's answer alone, none fails,
// and request ids never meet (each router numbers its own range). Every
// node has a CURVE key pair: KV and embeddings cross an encrypted data
// plane that admits only the topology's nodes. Every node also has a TLS
// certificate from the cluster's CA: the CAF control plane is TLS both
// ways, and a peer without such a certificate is refused at the control
// port (the certificates are made with the openssl command at set-up).

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized" // see pipeline_test.cpp

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <future>
#include <sstream>

#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "actors/openssl_error_queue.hpp"
#include "actors/peer_link.hpp"
#include "actors/router_actor.hpp"
#include "kv/transfer/curve_keys.hpp"
#include "messages/caf_types.hpp"
#include "tests/actors/actor_test_util.hpp"
#include "topology/loader.hpp"

namespace mosaic::actors {
namespace {

using namespace test;

/// Runs the openssl command; fails the test when it fails.
void openssl(const std::string& args) {
  const std::string cmd = "openssl " + args + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

/// A CA (NAME.crt, NAME.key) in `dir`.
void make_ca(const std::filesystem::path& dir, const std::string& name) {
  openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=" +
          name + " -keyout " + (dir / (name + ".key")).string() + " -out " +
          (dir / (name + ".crt")).string());
}

/// A certificate for `node` (NODE.crt, NODE.key in `dir`) signed by the CA `ca`.
void make_cert(const std::filesystem::path& dir, const std::string& ca, const std::string& node) {
  const auto p = [&](const std::string& f) { return (dir / f).string(); };
  openssl("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=" + node +
          " -keyout " + p(node + ".key") + " -out " + p(node + ".csr"));
  openssl("x509 -req -days 30 -in " + p(node + ".csr") + " -CA " + p(ca + ".crt") + " -CAkey " +
          p(ca + ".key") + " -CAcreateserial -out " + p(node + ".crt"));
}

static_assert(first_request_id(0) != first_request_id(1));
static_assert((first_request_id(4000) >> 63) == 0, "clear of the embeddings relay's bit");

class two_routers_test : public ::testing::Test {
protected:
  void SetUp() override {
    test_home();
    // Ports above the ephemeral range and above router_nodes_test's
    // (61000-64839), per process: the two may run at the same time.
    const int base = 64840 + int(getpid() % 57) * 12;
    std::ostringstream y;
    make_ca(dir_.path(), "cluster-ca");
    y << "model: builtin:tiny\ndefaults: { policy: \"full\", deadline_ms: 30000 }\ntls_ca: "
      << (dir_.path() / "cluster-ca.crt").string() << "\nnodes:\n";
    // Each node's CURVE pair (public key in the topology, secret in a
    // file) and its TLS certificate and key.
    auto keys = [&](const std::string& node) {
      auto pair = kv::transfer::make_curve_pair();
      EXPECT_TRUE(pair);
      const auto file = dir_.path() / (node + ".curve");
      EXPECT_TRUE(kv::transfer::write_key_file(file, *pair));
      make_cert(dir_.path(), "cluster-ca", node);
      return ", public_key: \"" + pair->public_key + "\", key_file: " + file.string() +
             ", tls_cert: " + (dir_.path() / (node + ".crt")).string() +
             ", tls_key: " + (dir_.path() / (node + ".key")).string();
    };
    int port = base;
    for (const char* r : {"r0", "r1"}) {
      y << "  - { name: " << r << ", host: 127.0.0.1, control_port: " << port
        << ", data_port: " << port + 1 << keys(r)
        << ", threads: 1, actors: [ { kind: frontend, http_port: " << port + 2
        << ", zmq_port: " << port + 3 << " }, { kind: router }, { kind: encoder } ] }\n";
      port += 4;
    }
    y << "  - { name: p, host: 127.0.0.1, control_port: " << port << ", data_port: " << port + 1
      << keys("p")
      << ", threads: 1, actors: [ { kind: kv_loader, library: " << (dir_.path() / "lib").string()
      << ", io: pread, ram_gb: 0.05, disk_gb: 1 }, { kind: linker }, { kind: prefill } ] }\n";
    y << "  - { name: d, host: 127.0.0.1, control_port: " << port + 2 << ", data_port: " << port + 3
      << keys("d")
      << ", threads: 1, actors: [ { kind: decode, max_batch: 16, pool_gb: 0.05 } ] }\n";
    auto topo = parse_topology(y.str(), "two_routers_test.yaml");
    ASSERT_TRUE(topo) << topo.err().to_string();
    topo_ = *topo;
    join_nodes(topo_, {"r0", "r1", "p", "d"}, {&r_[0], &r_[1], &p_, &d_});
  }

  void TearDown() override { end_process_keeping_nodes(); }

  temp_dir dir_{"mosaic_two_routers"};
  topology topo_;
  std::unique_ptr<local_cluster> r_[2], p_, d_;
};

TEST_F(two_routers_test, concurrent_requests_of_two_tenants_through_two_routers_never_mix) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng{seed};
  struct job {
    wire::generate_request req;
    std::vector<int32_t> alone;
  };
  std::vector<job> jobs;
  for (int i = 0; i < 8; ++i) {
    std::vector<std::vector<uint8_t>> imgs;
    if (i % 2 == 0)
      imgs.push_back(random_png(rng));
    auto req = greedy_request(imgs, "full", 6 + uint32_t(i), i % 3 == 0 ? "bob" : "alice");
    req.segments.push_back(wire::text_segment{" case " + std::to_string(i)});
    jobs.push_back({req, {}});
  }
  // Each request alone, one at a time, through r0 and then r1 (so that,
  // were both routers to count from the same place, the ids of the
  // concurrent rounds below would meet).
  for (auto& j : jobs) {
    auto done = r_[0]->submit(j.req)->wait(30s);
    ASSERT_TRUE(done) << done.err().to_string();
    j.alone = done->tokens;
    ASSERT_FALSE(j.alone.empty());
    auto again = r_[1]->submit(j.req)->wait(30s);
    ASSERT_TRUE(again) << again.err().to_string();
    EXPECT_EQ(again->tokens, j.alone);
  }
  // All at once, twice over, half through each router.
  std::vector<std::pair<size_t, std::shared_ptr<token_stream>>> running;
  for (int round = 0; round < 2; ++round)
    for (size_t i = 0; i < jobs.size(); ++i)
      running.emplace_back(i, r_[(i + size_t(round)) % 2]->submit(jobs[i].req));
  for (auto& [i, s] : running) {
    auto done = s->wait(60s);
    ASSERT_TRUE(done) << "request " << i << ": " << done.err().to_string();
    EXPECT_EQ(done->tokens, jobs[i].alone) << "request " << i << " got another's answer";
  }
  EXPECT_EQ(r_[0]->stats().failed + r_[1]->stats().failed, 0u);
}

// The control plane admits only certificates of the cluster's CA: a plain
// CAF peer and a TLS peer with a certificate from another CA are refused
// at p's control port, while one with a cluster certificate gets p's
// directory (so the refusals are about the certificate, not the port).
TEST_F(two_routers_test, a_peer_without_the_clusters_certificate_is_refused_at_the_control_port) {
  const auto* p = topo_.find_node("p");
  ASSERT_NE(p, nullptr);
  const auto port = static_cast<uint16_t>(p->control_port);
  make_ca(dir_.path(), "other-ca");
  make_cert(dir_.path(), "other-ca", "intruder");
  make_cert(dir_.path(), "cluster-ca", "visitor");
  auto connect = [&](const char* who, const std::string& cert_name) -> bool {
    caf::actor_system_config cfg;
    mosaic::init_message_types(cfg);
    mosaic::init_network(cfg);
    cfg.set("logger.console", caf::atom("none"));
    if (cert_name.empty()) {
      caf::actor_system sys{cfg};
      auto r = sys.middleman().remote_actor("127.0.0.1", port);
      return static_cast<bool>(r);
    }
    cfg.load<caf::openssl::manager>();
    cfg.openssl_certificate = (dir_.path() / (cert_name + ".crt")).string();
    cfg.openssl_key = (dir_.path() / (cert_name + ".key")).string();
    cfg.openssl_cafile = (dir_.path() / "cluster-ca.crt").string();
    caf::actor_system sys{cfg};
    auto r = caf::openssl::remote_actor(sys, "127.0.0.1", port);
    if (!r)
      std::printf("%s: refused: %s\n", who, sys.render(r.error()).c_str());
    return static_cast<bool>(r);
  };
  EXPECT_FALSE(connect("plain CAF peer", "")) << "a plain peer reached the control plane";
  EXPECT_FALSE(connect("other CA's certificate", "intruder"))
      << "a certificate from another CA was accepted";
  EXPECT_TRUE(connect("cluster certificate", "visitor"));
  // A certificate of the cluster's CA completes the TLS handshake with
  // another TLS implementation too (the openssl command).
  const auto p_ = [&](const std::string& f) { return (dir_.path() / f).string(); };
  const std::string s_client =
      "echo | openssl s_client -connect 127.0.0.1:" + std::to_string(port) + " -cert " +
      p_("visitor.crt") + " -key " + p_("visitor.key") + " -CAfile " + p_("cluster-ca.crt") +
      " -verify_return_error > " + p_("s_client.txt") + " 2>&1";
  EXPECT_EQ(std::system(s_client.c_str()), 0) << s_client;
  // The cluster still serves: the refused handshakes left OpenSSL errors
  // on p's I/O thread, which CAF 0.17.6 took for a failure of p's other
  // TLS connections until actors/openssl_error_queue.cpp (p lost its
  // routers here).
  EXPECT_TRUE(openssl_error_queue_cleared_per_call());
  auto done = r_[0]->submit(greedy_request({}, "full", 4, "alice"))->wait(30s);
  ASSERT_TRUE(done) << done.err().to_string();
  EXPECT_FALSE(done->tokens.empty());
}

} // namespace
} // namespace mosaic::actors
