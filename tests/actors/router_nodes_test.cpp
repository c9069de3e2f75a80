// The router over prefill NODES, each with its own KV library: three
// nodes of one topology joined in this process (local_cluster::join, real
// CAF middleman links and ZeroMQ data plane on 127.0.0.1). front runs
// frontend, router, encoder and decode; p0 and p1 each kv_loader, linker
// and prefill. A repeated image goes to the node whose library has it and
// is a library hit there; a node that goes down is skipped and its images
// are recomputed on the survivor.

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized" // see pipeline_test.cpp

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <future>
#include <sstream>
#include <thread>

#include "actors/peer_link.hpp"
#include "tests/actors/actor_test_util.hpp"
#include "topology/loader.hpp"

namespace mosaic::actors {
namespace {

using namespace test;

class router_nodes_test : public ::testing::Test {
protected:
  void start(const std::string& strategy = "cache_aware") {
    test_home();
    rng_.seed(seed_);
    // Fresh ports for every test of the program: a node's listening
    // sockets and its peers' reconnecting links outlive it briefly. Above
    // the kernel's ephemeral range (32768-60999 by default), so that no
    // outgoing connection of a test running alongside holds one of them.
    static int started = 0;
    const int base = 61000 + int(getpid() % 80) * 48 + 8 * (started++ % 6);
    std::ostringstream y;
    y << "model: builtin:tiny\ndefaults: { policy: \"mpic:4\", deadline_ms: 20000 }\nnodes:\n"
      << "  - { name: front, host: 127.0.0.1, control_port: " << base << ", data_port: " << base + 1
      << ", threads: 1, actors: [ { kind: frontend, http_port: " << base + 2
      << ", zmq_port: " << base + 3 << " }, { kind: router, strategy: " << strategy
      << " }, { kind: encoder }, "
      << "{ kind: decode, max_batch: 8, pool_gb: 0.05 } ] }\n";
    for (int i = 0; i < 2; ++i)
      y << "  - { name: p" << i << ", host: 127.0.0.1, control_port: " << base + 4 + 2 * i
        << ", data_port: " << base + 5 + 2 * i << ", threads: 1, actors: [ { kind: kv_loader, "
        << "library: " << (dir_.path() / ("lib" + std::to_string(i))).string()
        << ", io: pread, ram_gb: 0.05, disk_gb: 1 }, { kind: linker }, "
        << "{ kind: prefill, store_after_use: first } ] }\n"; // a new image is a hit next time
    auto topo = parse_topology(y.str(), "router_nodes_test.yaml");
    ASSERT_TRUE(topo) << topo.err().to_string();
    topo_ = *topo;
    join_nodes(topo_, {"front", "p0", "p1"}, {&front_, &p_[0], &p_[1]});
  }

  // Each case runs in its own process (tests/actors/CMakeLists.txt).
  void TearDown() override { end_process_keeping_nodes(); }

  /// Runs `req` from the front node; the prefill node it went to.
  int run_on(const wire::generate_request& req) {
    const auto before = front_->stats().routed_per_worker;
    auto done = front_->submit(req)->wait(40s);
    EXPECT_TRUE(done) << done.err().to_string();
    if (done) {
      EXPECT_FALSE(done->tokens.empty());
    }
    const auto after = front_->stats().routed_per_worker;
    EXPECT_EQ(after.size(), before.size());
    if (after.size() != before.size())
      return -1;
    for (size_t i = 0; i < after.size(); ++i)
      if (after[i] != before[i])
        return int(i);
    ADD_FAILURE() << "routed nowhere";
    return -1;
  }

  /// Waits until prefill node `i` stored `n` entries (store after use).
  void wait_stores(int i, uint64_t n) {
    ASSERT_TRUE(eventually([&] { return p_[i]->stats().stores >= n; }, 20s))
        << "p" << i << " stored " << p_[i]->stats().stores << " of " << n;
  }

  uint64_t seed_ = fresh_seed();
  std::mt19937_64 rng_;
  temp_dir dir_{"mosaic_router_nodes"};
  topology topo_;
  std::unique_ptr<local_cluster> front_;
  std::unique_ptr<local_cluster> p_[2];
};

TEST_F(router_nodes_test, a_repeated_image_is_a_library_hit_on_the_node_that_has_it) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  start();
  ASSERT_EQ(front_->stats().routed_per_worker.size(), 2u);
  const auto x = random_png(rng_), y = random_png(rng_);
  const int nx = run_on(greedy_request({x}, "mpic:4", 4));
  ASSERT_GE(nx, 0);
  wait_stores(nx, 1);
  const int ny = run_on(greedy_request({y}, "mpic:4", 4));
  ASSERT_GE(ny, 0);
  EXPECT_NE(nx, ny) << "equal costs take turns";
  wait_stores(ny, 1);
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(run_on(greedy_request({x}, "mpic:4", 4)), nx);
    EXPECT_EQ(run_on(greedy_request({y}, "mpic:4", 4)), ny);
  }
  for (int i : {nx, ny}) {
    const auto s = p_[i]->stats();
    EXPECT_EQ(s.library_misses, 1u) << "p" << i << ": only the first sight is computed";
    EXPECT_EQ(s.library_hits, 2u) << "p" << i;
  }
  EXPECT_EQ(front_->stats().routed_by_affinity, 4u);
}

TEST_F(router_nodes_test, a_node_that_goes_down_is_skipped) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  start();
  const auto x = random_png(rng_);
  const int nx = run_on(greedy_request({x}, "mpic:4", 4));
  ASSERT_GE(nx, 0);
  wait_stores(nx, 1);
  const int other = 1 - nx;
  const std::string gone = "p" + std::to_string(nx);
  // The node that holds x stops. Its teardown runs beside the test: in
  // one process the last step of an actor system's teardown (waiting for
  // its detached actors' threads) can wait on handles the other joined
  // systems still hold (end_process_keeping_nodes); by then its middleman and data
  // plane are closed, so its peers see it go down all the same.
  std::thread([node = std::move(p_[nx])]() mutable { node.reset(); }).detach();
  ASSERT_TRUE(eventually([&] { return !front_->health()->up(gone); }, 10s))
      << "the front node did not see " << gone << " go down";
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(run_on(greedy_request({x}, "mpic:4", 4)), other);
  EXPECT_GE(p_[other]->stats().library_hits + p_[other]->stats().library_misses, 3u);
}

TEST_F(router_nodes_test, an_upload_and_the_requests_naming_its_key_meet_on_one_node) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  start();
  const auto png = random_png(rng_);
  auto up = front_->upload("alice", png);
  ASSERT_TRUE(up) << up.err().to_string();
  const int holder = p_[0]->stats().stores == 1 ? 0 : 1;
  ASSERT_EQ(p_[holder]->stats().stores, 1u);
  ASSERT_EQ(p_[1 - holder]->stats().stores, 0u);
  auto req = greedy_request({png}, "mpic:4", 4);
  req.segments[1] = wire::image_key_segment{up->image_key};
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(run_on(req), holder);
  EXPECT_EQ(p_[holder]->stats().library_hits, 3u);
}

TEST_F(router_nodes_test, a_key_the_router_has_no_record_of_is_tried_on_the_other_node) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  start("round_robin"); // ignores where images are: the key's requests alternate
  const auto png = random_png(rng_);
  auto up = front_->upload("alice", png);
  ASSERT_TRUE(up) << up.err().to_string();
  const int holder = p_[0]->stats().stores == 1 ? 0 : 1;
  auto req = greedy_request({png}, "mpic:4", 4);
  req.segments[1] = wire::image_key_segment{up->image_key};
  for (int i = 0; i < 2; ++i) {
    auto done = front_->submit(req)->wait(40s);
    ASSERT_TRUE(done) << done.err().to_string();
  }
  EXPECT_EQ(p_[holder]->stats().library_hits, 2u);
  // Round robin sent at least the second request to the other node first
  // (not_found there, before anything started); it went on to the holder.
  const auto misses = p_[1 - holder]->stats().library_misses;
  EXPECT_GE(misses, 1u);
  EXPECT_LE(misses, 2u);
  // A key no library has fails with not_found once both were asked.
  digest unknown{};
  unknown[0] = 1;
  req.segments[1] = wire::image_key_segment{unknown};
  auto none = front_->submit(req)->wait(40s);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.err().code, errc::not_found) << none.err().to_string();
}

} // namespace
} // namespace mosaic::actors
