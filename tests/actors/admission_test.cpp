// Many requests at once, deadlines, back-pressure and cancellation: every
// request ends (result or a clear error), never hangs, and the paged pool
// is fully free afterwards.

// GCC 12 at -O3 reports a false maybe-uninitialized inside std::variant's
// copy of wire::segment (a string of image_data_segment); the values are
// always initialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <thread>

#include "tests/actors/actor_test_util.hpp"

namespace mosaic::actors {
namespace {

using namespace test;

/// A long sampled request: it ignores EOS (greedy decoding of the tiny
/// model may stop on it at once, and a sampled answer that ended right
/// after the test looked would race its cancel); the seed picks the answer.
wire::generate_request long_request(uint64_t seed = 12345) {
  auto r = greedy_request({}, "full", 1800);
  r.sampling.temperature = 1.0f;
  r.sampling.seed = seed;
  r.sampling.ignore_eos = true;
  r.segments = {wire::text_segment{"Tell me a very long story about the sea."}};
  return r;
}

/// A request that has streamed 30 tokens and is still decoding (seeds
/// are tried until one's answer is that long); null if none is.
std::shared_ptr<token_stream> start_long(local_cluster& cluster) {
  for (uint64_t seed = 1; seed <= 32; ++seed) {
    auto s = cluster.submit(long_request(seed));
    int n = 0;
    while (n < 30 && s->next(10s))
      ++n;
    if (n == 30 && !s->finished())
      return s;
    s->cancel();
    (void)s->wait(10s);
  }
  return nullptr;
}

std::unique_ptr<local_cluster> start(const node_options& o) {
  auto c = local_cluster::start(o);
  EXPECT_TRUE(c) << c.err().to_string();
  return c ? std::move(*c) : nullptr;
}

TEST(admission_test, sixty_four_concurrent_requests_all_end_and_free_the_pool) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng{seed};
  temp_dir lib{"mosaic_actors_lib"};
  auto o = tiny_options(lib.path());
  o.max_inflight = 16;
  o.max_queue = 32; // 64 - 16 - 32 = 16 may be refused at once
  o.decode_max_batch = 8;
  auto cluster = start(o);
  ASSERT_TRUE(cluster);
  const std::vector<std::vector<uint8_t>> pool{random_png(rng), random_png(rng), random_png(rng)};

  std::vector<std::shared_ptr<token_stream>> streams;
  for (int i = 0; i < 64; ++i) {
    std::vector<std::vector<uint8_t>> imgs;
    for (int k = 0; k < int(rng() % 3); ++k)
      imgs.push_back(pool[rng() % pool.size()]);
    const char* policies[] = {"full", "prefix", "mpic:4"};
    streams.push_back(cluster->submit(greedy_request(imgs, policies[rng() % 3], 1 + rng() % 12)));
  }
  int ok = 0;
  int refused = 0;
  for (auto& s : streams) {
    auto done = s->wait(60s);
    if (done) {
      ++ok;
      EXPECT_NE(done->finish, msg::FinishReason::none);
      continue;
    }
    // The only acceptable failure is a clear overload answer.
    EXPECT_EQ(done.err().code, errc::overloaded) << done.err().to_string();
    EXPECT_NE(done.err().message.find("overloaded"), std::string::npos);
    ++refused;
  }
  EXPECT_EQ(ok + refused, 64);
  EXPECT_GE(ok, 48); // 16 running + 32 queued always get in
  ASSERT_TRUE(eventually([&] { return cluster->stats().pool.blocks_used == 0; }))
      << cluster->stats().pool.blocks_used << " blocks still used";
  EXPECT_EQ(cluster->stats().pool.sequences, 0);
}

TEST(admission_test, a_request_past_its_deadline_fails_with_timeout) {
  temp_dir lib{"mosaic_actors_lib"};
  auto cluster = start(tiny_options(lib.path()));
  ASSERT_TRUE(cluster);
  auto req = long_request();
  req.deadline_unix_ns = unix_now_ns() - 1'000'000;
  auto done = cluster->submit(req)->wait(10s);
  ASSERT_FALSE(done);
  EXPECT_EQ(done.err().code, errc::timeout) << done.err().to_string();
}

TEST(admission_test, a_request_behind_a_busy_node_ends_by_its_deadline) {
  temp_dir lib{"mosaic_actors_lib"};
  auto o = tiny_options(lib.path());
  o.max_inflight = 1;
  o.max_queue = 4;
  auto cluster = start(o);
  ASSERT_TRUE(cluster);
  auto busy = start_long(*cluster);
  ASSERT_TRUE(busy) << "no sampled answer ran long enough";

  auto late = long_request(1);
  late.deadline_unix_ns = unix_now_ns() + 5'000'000; // 5 ms
  const auto t0 = std::chrono::steady_clock::now();
  auto done = cluster->submit(late)->wait(10s);
  ASSERT_FALSE(done);
  // Queued behind `busy`: overloaded at its deadline (had `busy` just
  // ended, the request ran and its own deadline ended it: timeout).
  EXPECT_TRUE(done.err().code == errc::overloaded || done.err().code == errc::timeout)
      << done.err().to_string();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  busy->cancel();
  (void)busy->wait(10s);
  ASSERT_TRUE(eventually([&] { return cluster->stats().pool.blocks_used == 0; }));
}

TEST(admission_test, decodes_past_their_deadline_end_with_timeout_and_free_their_blocks) {
  temp_dir lib{"mosaic_actors_lib"};
  auto o = tiny_options(lib.path());
  o.decode_max_batch = 8;
  auto cluster = start(o);
  ASSERT_TRUE(cluster);
  std::vector<std::shared_ptr<token_stream>> streams;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    auto req = long_request(seed);
    req.deadline_unix_ns = unix_now_ns() + 60'000'000; // 60 ms: mid-decode for some
    streams.push_back(cluster->submit(req));
  }
  int timeouts = 0;
  for (auto& s : streams) {
    auto done = s->wait(10s);
    if (!done) {
      EXPECT_EQ(done.err().code, errc::timeout) << done.err().to_string();
      ++timeouts;
    }
  }
  ASSERT_TRUE(eventually([&] { return cluster->stats().pool.blocks_used == 0; }));
  if (timeouts == 0)
    GTEST_SKIP() << "every answer ended within 60 ms on this machine";
}

TEST(admission_test, cancelling_a_request_frees_its_blocks) {
  temp_dir lib{"mosaic_actors_lib"};
  auto cluster = start(tiny_options(lib.path()));
  ASSERT_TRUE(cluster);
  auto s = start_long(*cluster);
  ASSERT_TRUE(s) << "no sampled answer ran long enough";
  EXPECT_GT(cluster->stats().pool.blocks_used, 0);
  s->cancel();
  auto done = s->wait(10s);
  ASSERT_FALSE(done);
  EXPECT_EQ(done.err().code, errc::cancelled);
  ASSERT_TRUE(eventually([&] { return cluster->stats().pool.blocks_used == 0; }))
      << cluster->stats().pool.blocks_used << " blocks still used after the cancel";
  EXPECT_TRUE(eventually([&] { return cluster->stats().cancelled == 1; }));
}

} // namespace
} // namespace mosaic::actors
