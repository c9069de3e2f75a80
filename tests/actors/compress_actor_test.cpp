// The compress stage (FastCache) in the actor pipeline on builtin:tiny: a
// compressed request decodes from the paged pool, keep ratios of 1 give
// exactly the uncompressed tokens, the original blocks are freed and the
// pool is empty once requests finish; the topology's prefill actor sets
// the default and a request overrides it.

// GCC 12 at -O3 reports a false maybe-uninitialized inside std::variant's
// copy of wire::segment (see pipeline_test.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <thread>

#include "tests/actors/actor_test_util.hpp"
#include "topology/loader.hpp"

namespace mosaic::actors {
namespace {

using namespace test;

std::unique_ptr<local_cluster> start_cluster(const node_options& o) {
  auto c = local_cluster::start(o);
  EXPECT_TRUE(c) << c.err().to_string();
  return c ? std::move(*c) : nullptr;
}

class compress_actor_test : public ::testing::Test {
protected:
  void SetUp() override {
    rng_.seed(seed_);
    cluster_ = start_cluster(tiny_options(library_.path()));
    ASSERT_NE(cluster_, nullptr);
  }

  completion run(wire::generate_request req, const std::string& compression) {
    req.kv_compression = compression;
    auto done = cluster_->submit(req)->wait(60s);
    EXPECT_TRUE(done) << compression << ": " << done.err().to_string();
    return done ? *done : completion{};
  }

  uint64_t seed_ = fresh_seed();
  std::mt19937_64 rng_;
  temp_dir library_{"mosaic_compress_lib"};
  std::unique_ptr<local_cluster> cluster_;
};

TEST_F(compress_actor_test, a_compressed_request_decodes_and_frees_its_blocks) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::vector<std::vector<uint8_t>> images{random_png(rng_), random_png(rng_)};
  const auto req = greedy_request(images, "full", 10);
  const auto plain = run(req, "");
  ASSERT_FALSE(plain.compression) << "compression is off by default";
  // The encoder compiles the fresh images after use (store after use) and
  // borrows pool blocks while it does: wait for that, not for a leak.
  const auto pool_empty = [&] {
    const auto p = cluster_->stats().pool;
    return p.blocks_used == 0 && p.sequences == 0;
  };
  EXPECT_TRUE(eventually(pool_empty)) << "blocks in use: " << cluster_->stats().pool.blocks_used;

  for (const std::string spec :
       {"snapkv:img=0.25,txt=0.5,window=4", "keynorm:img=0.3,txt=0.7", "streaming:img=0.5"}) {
    SCOPED_TRACE(spec);
    const auto c = run(req, spec);
    // The random model may reach EOS early over the compressed KV (a CI
    // run did at token 9): then the request stops, short of max_tokens.
    if (c.finish == msg::FinishReason::stop) {
      EXPECT_GE(c.tokens.size(), 1u);
      EXPECT_LE(c.tokens.size(), 10u);
    } else {
      EXPECT_EQ(c.finish, msg::FinishReason::length);
      EXPECT_EQ(c.tokens.size(), 10u);
    }
    ASSERT_TRUE(c.compression);
    const auto& u = *c.compression;
    EXPECT_EQ(u.tokens_before(), c.usage.prompt_tokens());
    EXPECT_LT(u.tokens_after(), u.tokens_before());
    EXPECT_LT(u.kv_bytes_after(), u.kv_bytes_before());
    EXPECT_GT(u.compress_us(), 0u);
    EXPECT_EQ(c.usage.prompt_tokens(), plain.usage.prompt_tokens());
  }
  const auto s = cluster_->stats();
  EXPECT_EQ(s.compressions, 3u);
  EXPECT_GT(s.compress_saved_bytes, 0u);
  EXPECT_EQ(s.compress_fallbacks, 0u);
  EXPECT_TRUE(eventually(pool_empty)) << "blocks in use: " << cluster_->stats().pool.blocks_used;
}

TEST_F(compress_actor_test, keep_ratios_of_one_give_the_uncompressed_tokens) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::vector<std::vector<uint8_t>> images{random_png(rng_)};
  const auto req = greedy_request(images, "full", 12);
  const auto plain = run(req, "none");
  ASSERT_FALSE(plain.tokens.empty());
  for (const std::string spec :
       {"snapkv:img=1,txt=1", "keynorm:img=1,txt=1", "streaming:img=1,txt=1,sink=0,recent=0"}) {
    SCOPED_TRACE(spec);
    const auto c = run(req, spec);
    ASSERT_TRUE(c.compression);
    EXPECT_EQ(c.compression->tokens_after(), c.compression->tokens_before());
    EXPECT_EQ(c.tokens, plain.tokens);
    EXPECT_EQ(c.text, plain.text);
  }
  EXPECT_TRUE(eventually([&] { return cluster_->stats().pool.blocks_used == 0; }))
      << "blocks in use: " << cluster_->stats().pool.blocks_used;
}

TEST_F(compress_actor_test, concurrent_mixed_requests_leave_the_pool_empty) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::vector<std::string> specs{"", "snapkv:img=0.5", "keynorm:img=0.25,txt=0.5",
                                       "streaming:img=0.3,sink=2,recent=4", "snapkv:txt=0.5"};
  std::vector<std::shared_ptr<token_stream>> streams;
  for (int i = 0; i < 6; ++i) {
    auto req = greedy_request({random_png(rng_)}, "full", 4 + uint32_t(rng_() % 8));
    req.kv_compression = specs[rng_() % specs.size()];
    streams.push_back(cluster_->submit(req));
  }
  // One more that the client cancels while it may sit in any stage.
  auto cancelled_req = greedy_request({random_png(rng_)}, "full", 200);
  cancelled_req.kv_compression = "snapkv:img=0.5";
  auto cancelled = cluster_->submit(cancelled_req);
  std::this_thread::sleep_for(std::chrono::milliseconds(rng_() % 200));
  cancelled->cancel();
  for (auto& s : streams) {
    auto done = s->wait(60s);
    ASSERT_TRUE(done) << done.err().to_string();
    EXPECT_FALSE(done->tokens.empty());
  }
  (void)cancelled->wait(60s);
  ASSERT_TRUE(eventually([&] {
    const auto p = cluster_->stats().pool;
    return p.blocks_used == 0 && p.sequences == 0;
  })) << "blocks in use: "
      << cluster_->stats().pool.blocks_used;
  EXPECT_EQ(cluster_->context().compress_jobs.size(), 0u);
  EXPECT_EQ(cluster_->context().sequences.size(), 0u);
}

TEST_F(compress_actor_test, a_bad_compression_string_fails_the_request_with_a_clear_error) {
  auto req = greedy_request({}, "full", 4);
  req.kv_compression = "snapkv:img=2";
  auto done = cluster_->submit(req)->wait(30s);
  ASSERT_FALSE(done);
  EXPECT_EQ(done.err().code, errc::invalid_argument);
  EXPECT_NE(done.err().message.find("img=2"), std::string::npos) << done.err().message;
}

TEST(compress_actor_topology, the_prefill_actor_sets_the_default_and_requests_override_it) {
  temp_dir lib{"mosaic_compress_topo_lib"};
  auto topo = parse_topology(R"(model: builtin:tiny
nodes:
  - name: local
    host: 127.0.0.1
    actors:
      - { kind: frontend }
      - { kind: router }
      - { kind: encoder }
      - { kind: kv_loader, library: )" +
                                 lib.path().string() +
                                 R"(, io: pread }
      - { kind: linker }
      - { kind: prefill, compression: "keynorm:img=0.5,txt=0.5" }
      - { kind: decode, pool_gb: 0.01 }
)",
                             "inline");
  ASSERT_TRUE(topo) << topo.err().message;
  auto o = node_options_from_topology(*topo);
  ASSERT_TRUE(o) << o.err().to_string();
  EXPECT_EQ(o->default_compression.to_string(), "keynorm:img=0.5,txt=0.5");
  auto base = tiny_options(lib.path());
  base.default_compression = o->default_compression;
  auto cluster = start_cluster(base);
  ASSERT_NE(cluster, nullptr);
  std::mt19937_64 rng{fresh_seed()};
  auto req = greedy_request({random_png(rng)}, "full", 4);
  auto by_default = cluster->submit(req)->wait(60s);
  ASSERT_TRUE(by_default) << by_default.err().to_string();
  ASSERT_TRUE(by_default->compression);
  EXPECT_LT(by_default->compression->tokens_after(), by_default->compression->tokens_before());
  req.kv_compression = "none";
  auto off = cluster->submit(req)->wait(60s);
  ASSERT_TRUE(off) << off.err().to_string();
  EXPECT_FALSE(off->compression);
  EXPECT_EQ(cluster->stats().compressions, 1u);
}

} // namespace
} // namespace mosaic::actors
