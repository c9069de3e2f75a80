// The router over several prefill workers, end to end on builtin:tiny in
// one process (local_cluster with node_options::prefill_workers = 2):
// a repeated image goes to the worker that already has it, a flood of one
// image spreads over both, an upload routes later requests by its key,
// and a stopped worker is skipped.

// GCC 12 at -O3 reports a false maybe-uninitialized inside std::variant's
// copy of wire::segment (see pipeline_test.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <thread>

#include "tests/actors/actor_test_util.hpp"

namespace mosaic::actors {
namespace {

using namespace test;

class router_prefill_test : public ::testing::Test {
protected:
  void start(router_strategy strategy = router_strategy::cache_aware) {
    rng_.seed(seed_);
    auto o = tiny_options(library_.path());
    o.prefill_workers = 2;
    o.route_strategy = strategy;
    auto c = local_cluster::start(o);
    ASSERT_TRUE(c) << c.err().to_string();
    cluster_ = std::move(*c);
    ASSERT_EQ(cluster_->prefill_workers(), 2u);
  }

  std::vector<uint64_t> routed() const { return cluster_->stats().routed_per_worker; }

  /// Runs `req` to its end; the worker the router sent it to.
  size_t run_on(const wire::generate_request& req) {
    const auto before = routed();
    auto done = cluster_->submit(req)->wait(30s);
    EXPECT_TRUE(done) << done.err().to_string();
    const auto after = routed();
    EXPECT_EQ(after.size(), before.size());
    if (after.size() != before.size())
      return 99;
    for (size_t i = 0; i < after.size(); ++i)
      if (after[i] != before[i])
        return i;
    ADD_FAILURE() << "the request was routed to no worker";
    return 99;
  }

  uint64_t seed_ = fresh_seed();
  std::mt19937_64 rng_;
  temp_dir library_{"mosaic_router_lib"};
  std::unique_ptr<local_cluster> cluster_;
};

TEST_F(router_prefill_test, a_repeated_image_goes_to_the_worker_that_has_it) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  start();
  const auto x = random_png(rng_), y = random_png(rng_);
  const size_t wx = run_on(greedy_request({x}, "mpic:4", 4));
  const size_t wy = run_on(greedy_request({y}, "mpic:4", 4));
  EXPECT_NE(wx, wy) << "equal costs take turns";
  EXPECT_EQ(cluster_->stats().routed_by_affinity, 0u);
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(run_on(greedy_request({y}, "mpic:4", 4)), wy);
    EXPECT_EQ(run_on(greedy_request({x}, "mpic:4", 4)), wx);
  }
  const auto s = cluster_->stats();
  EXPECT_EQ(s.routed_by_affinity, 4u);
  EXPECT_EQ(s.routed_images_held, 4u);
  EXPECT_EQ(s.routed_per_worker[wx], 3u);
  EXPECT_EQ(s.routed_per_worker[wy], 3u);
  // Another tenant's request for the same bytes is no affinity hit.
  (void)run_on(greedy_request({x}, "mpic:4", 4, "bob"));
  EXPECT_EQ(cluster_->stats().routed_by_affinity, 4u);
}

TEST_F(router_prefill_test, a_flood_of_one_image_spreads_over_both_workers) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  start();
  const auto x = random_png(rng_);
  const size_t wx = run_on(greedy_request({x}, "mpic:4", 4));
  std::vector<std::shared_ptr<token_stream>> flood;
  for (int i = 0; i < 8; ++i)
    flood.push_back(cluster_->submit(greedy_request({x}, "mpic:4", 4)));
  for (auto& s : flood) {
    auto done = s->wait(60s);
    EXPECT_TRUE(done) << done.err().to_string();
  }
  const auto r = routed();
  EXPECT_EQ(r[0] + r[1], 9u);
  EXPECT_GE(r[wx], 4u) << "the holder takes its share";
  EXPECT_GE(r[1 - wx], 1u) << "load keeps the holder from taking the whole flood";
}

TEST_F(router_prefill_test, an_upload_routes_requests_for_its_key_to_its_worker) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  start();
  // The upload is compiled into one worker's library (in one process all
  // share it; across nodes each has its own): requests follow it there.
  const auto png = random_png(rng_);
  auto up = cluster_->upload("alice", png);
  ASSERT_TRUE(up) << up.err().to_string();
  auto req = greedy_request({png}, "mpic:4", 4);
  req.segments[1] = wire::image_key_segment{up->image_key};
  const size_t first = run_on(req);
  EXPECT_EQ(run_on(req), first);
  EXPECT_EQ(run_on(greedy_request({png}, "mpic:4", 4)), first) << "by bytes too";
  EXPECT_EQ(cluster_->stats().routed_by_affinity, 3u);
  EXPECT_EQ(cluster_->stats().library_hits, 3u);
}

TEST_F(router_prefill_test, a_stopped_worker_is_skipped) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  start();
  const auto x = random_png(rng_);
  const size_t wx = run_on(greedy_request({x}, "mpic:4", 4));
  ASSERT_TRUE(cluster_->stop_prefill_worker(wx));
  // At once, before or after the router saw it stop: the request that
  // would have gone to the holder goes to the survivor and completes.
  std::vector<std::shared_ptr<token_stream>> after;
  for (int i = 0; i < 4; ++i)
    after.push_back(cluster_->submit(greedy_request({x}, "mpic:4", 4)));
  for (auto& s : after) {
    auto done = s->wait(60s);
    ASSERT_TRUE(done) << done.err().to_string();
    EXPECT_FALSE(done->tokens.empty());
  }
  const auto r = routed();
  EXPECT_EQ(r[1 - wx], 4u);
  EXPECT_FALSE(cluster_->stop_prefill_worker(7)) << "no such worker";
  // With both stopped, a request fails at once with unavailable.
  ASSERT_TRUE(cluster_->stop_prefill_worker(1 - wx));
  auto none = cluster_->submit(greedy_request({x}, "mpic:4", 4))->wait(30s);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.err().code, errc::unavailable) << none.err().to_string();
  EXPECT_NE(none.err().message.find("no prefill worker is up"), std::string::npos)
      << none.err().message;
}

TEST_F(router_prefill_test, round_robin_alternates_whatever_the_images) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  start(router_strategy::round_robin);
  const auto x = random_png(rng_);
  const size_t a = run_on(greedy_request({x}, "mpic:4", 4));
  const size_t b = run_on(greedy_request({x}, "mpic:4", 4));
  EXPECT_NE(a, b);
  EXPECT_EQ(cluster_->stats().routed_by_affinity, 0u);
}

} // namespace
} // namespace mosaic::actors
