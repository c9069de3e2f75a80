// The stage scheduler in the live actors (actors/stage_admission): a
// randomized arrival pattern of compressing requests on builtin:tiny with a
// KV pool that holds only a few of them at once never over-commits (the
// reservations stay within the pool, no request runs out of blocks, none
// falls back to uncompressed decoding), every request completes or is
// refused with a clear error, the pool ends empty, and dynamic, fcfs and
// fixed batching give the same greedy tokens.

// GCC 12 at -O3 reports a false maybe-uninitialized inside std::variant's
// copy of wire::segment (see pipeline_test.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstdio>
#include <thread>

#include "tests/actors/actor_test_util.hpp"
#include "topology/loader.hpp"

namespace mosaic::actors {
namespace {

using namespace test;

struct outcome {
  bool ok = false;
  errc code = errc::none;
  std::string message;
  std::vector<int32_t> tokens;
};

struct run_result {
  std::vector<outcome> outcomes;
  node_stats stats;
};

/// Submits `reqs` with the given gaps (ms) to a fresh node and waits for all.
run_result run_live(node_options o, const std::vector<wire::generate_request>& reqs,
                    const std::vector<int>& gaps_ms) {
  run_result r;
  auto c = local_cluster::start(o);
  EXPECT_TRUE(c) << c.err().to_string();
  if (!c)
    return r;
  auto& cluster = **c;
  std::vector<std::shared_ptr<token_stream>> streams;
  for (size_t i = 0; i < reqs.size(); ++i) {
    streams.push_back(cluster.submit(reqs[i]));
    std::this_thread::sleep_for(std::chrono::milliseconds(gaps_ms[i]));
  }
  for (auto& s : streams) {
    auto done = s->wait(120s);
    outcome out;
    out.ok = static_cast<bool>(done);
    if (done) {
      out.tokens = done->tokens;
    } else {
      out.code = done.err().code;
      out.message = done.err().message;
    }
    r.outcomes.push_back(std::move(out));
  }
  EXPECT_TRUE(eventually([&] {
    const auto p = cluster.stats().pool;
    return p.blocks_used == 0 && p.sequences == 0;
  })) << "blocks in use: "
      << cluster.stats().pool.blocks_used;
  r.stats = cluster.stats();
  EXPECT_EQ(cluster.context().compress_jobs.size(), 0u);
  EXPECT_EQ(cluster.context().sequences.size(), 0u);
  EXPECT_EQ(r.stats.stages.kv_reserved_bytes, 0u) << "every reservation returned";
  return r;
}

TEST(stage_admission_test, random_arrivals_never_over_commit_a_small_pool) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng{seed};
  temp_dir probe_lib{"mosaic_stages_probe"};
  // The pool's geometry and a two-image prompt's size, from a probe node.
  size_t bytes_per_block = 0;
  int block_size = 0;
  uint32_t two_image_prompt = 0;
  {
    auto c = local_cluster::start(tiny_options(probe_lib.path()));
    ASSERT_TRUE(c) << c.err().to_string();
    auto done =
        (*c)->submit(greedy_request({random_png(rng), random_png(rng)}, "full", 1))->wait(60s);
    ASSERT_TRUE(done) << done.err().to_string();
    two_image_prompt = done->usage.prompt_tokens();
    bytes_per_block = (*c)->stats().pool.bytes_per_block;
    block_size = (*c)->stats().pool.block_size;
  }
  // Room for about two compressing two-image requests at their peak
  // (prompt + compressed copy + new tokens): fewer than the arrivals.
  const int blocks = 2 * ((2 * int(two_image_prompt) + 16) / block_size + 2);
  const std::vector<std::string> specs{"snapkv:img=0.5,txt=0.5,window=4", "keynorm:img=0.25",
                                       "streaming:img=0.3,sink=2,recent=4", "none"};
  std::vector<wire::generate_request> reqs;
  std::vector<int> gaps;
  for (int i = 0; i < 10; ++i) {
    std::vector<std::vector<uint8_t>> images;
    for (int k = 0, n = 1 + int(rng() % 2); k < n; ++k)
      images.push_back(random_png(rng));
    auto req = greedy_request(images, "full", 4 + uint32_t(rng() % 12));
    req.kv_compression = specs[rng() % specs.size()];
    reqs.push_back(std::move(req));
    // Bursts (queues form) and pauses (they drain).
    gaps.push_back(rng() % 3 == 0 ? int(rng() % 40) : 0);
  }
  // One that can never fit: its max_tokens alone exceed the pool.
  auto huge = greedy_request({random_png(rng)}, "full", uint32_t(blocks * block_size));
  huge.kv_compression = "keynorm:img=0.5";
  reqs.insert(reqs.begin() + 3, huge);
  gaps.insert(gaps.begin() + 3, 0);

  std::vector<std::vector<std::vector<int32_t>>> tokens_by_policy;
  for (const std::string policy : {"dynamic", "fcfs", "p2c2d4:wait=0.02"}) {
    SCOPED_TRACE(policy);
    temp_dir lib{"mosaic_stages_lib"};
    auto o = tiny_options(lib.path());
    o.pool_bytes = uint64_t(blocks) * bytes_per_block;
    o.schedule = policy;
    o.default_deadline_ms = 60000;
    const auto r = run_live(o, reqs, gaps);
    ASSERT_EQ(r.outcomes.size(), reqs.size());
    std::vector<std::vector<int32_t>> tokens;
    for (size_t i = 0; i < reqs.size(); ++i) {
      const auto& out = r.outcomes[i];
      if (i == 3) {
        ASSERT_FALSE(out.ok) << "the request larger than the pool was admitted";
        EXPECT_EQ(out.code, errc::out_of_memory);
        EXPECT_NE(out.message.find("grow the pool"), std::string::npos) << out.message;
      } else {
        ASSERT_TRUE(out.ok) << "request " << i << ": " << out.message;
        EXPECT_FALSE(out.tokens.empty());
      }
      tokens.push_back(out.tokens);
    }
    const auto& s = r.stats;
    std::printf("%-18s batches p/c/d %llu/%llu/%llu, largest %llu/%llu/%llu, KV reserved peak "
                "%zu of %zu bytes, pool peak %d of %d blocks\n",
                policy.c_str(), (unsigned long long)s.stages.batches[0],
                (unsigned long long)s.stages.batches[1], (unsigned long long)s.stages.batches[2],
                (unsigned long long)s.stages.max_batch[0],
                (unsigned long long)s.stages.max_batch[1],
                (unsigned long long)s.stages.max_batch[2], s.stages.kv_reserved_high_water,
                s.stages.kv_budget_bytes, s.pool.blocks_high_water, s.pool.blocks_total);
    EXPECT_TRUE(s.stages.scheduled);
    EXPECT_LE(s.pool.blocks_high_water, s.pool.blocks_total);
    EXPECT_GT(s.pool.blocks_high_water, 0);
    EXPECT_LE(s.stages.kv_reserved_high_water, s.stages.kv_budget_bytes);
    EXPECT_GT(s.stages.kv_reserved_high_water, 0u);
    EXPECT_EQ(s.stages.refused, 1u);
    EXPECT_EQ(s.compress_fallbacks, 0u) << "a compressed copy found no room in the pool";
    EXPECT_GT(s.stages.batches[0], 0u);
    if (policy == "fcfs") {
      for (auto b : s.stages.max_batch)
        EXPECT_LE(b, 1u);
    }
    tokens_by_policy.push_back(std::move(tokens));
  }
  EXPECT_EQ(tokens_by_policy[0], tokens_by_policy[1]) << "dynamic vs fcfs";
  EXPECT_EQ(tokens_by_policy[0], tokens_by_policy[2]) << "dynamic vs fixed";
}

TEST(stage_admission_test, without_compression_the_node_runs_unscheduled) {
  temp_dir lib{"mosaic_stages_off"};
  auto c = local_cluster::start(tiny_options(lib.path()));
  ASSERT_TRUE(c) << c.err().to_string();
  std::mt19937_64 rng{fresh_seed()};
  auto req = greedy_request({random_png(rng)}, "full", 4);
  req.kv_compression = "snapkv:img=0.5";
  auto done = (*c)->submit(req)->wait(60s);
  ASSERT_TRUE(done) << done.err().to_string();
  ASSERT_TRUE(done->compression) << "a request's own compression still passes the stage";
  const auto s = (*c)->stats();
  EXPECT_FALSE(s.stages.scheduled);
  EXPECT_EQ(s.stages.policy, "off");
  EXPECT_EQ(s.stages.batches[0], 0u);
  EXPECT_EQ(s.compressions, 1u);
}

TEST(stage_admission_test, learned_requests_are_sized_by_the_compressors_groups) {
  auto be = make_backend("cpu", 1);
  ASSERT_TRUE(be) << be.err().to_string();
  text_config cfg;
  cfg.hidden_size = 64;
  cfg.num_layers = 2;
  cfg.num_heads = 4;
  cfg.num_kv_heads = 2;
  cfg.intermediate_size = 128;
  cfg.vocab_size = 100;
  auto pool = kv_pool::create(**be, cfg.num_layers, cfg.kv_dim(), kv_pool_options{64, 16});
  ASSERT_TRUE(pool) << pool.err().to_string();
  node_options o;
  prefill_job job;
  job.images.resize(2);
  for (auto& im : job.images)
    im.n_tokens = 128;
  job.ids.assign(2 + 62, 7); // two image placeholders and 62 text tokens
  job.compression = *parse_compression("learned");
  auto sized = [&](learned_groups g) {
    auto a = stage_admission::create(schedule_policy{}, cfg, **pool, o, g);
    EXPECT_TRUE(a) << a.err().to_string();
    return (*a)->request_of(job);
  };
  // Groups of 4 image tokens, text kept: 64 + 62 rows of 318, plus a block.
  const auto r = sized({4, 1});
  EXPECT_EQ(r.prompt_tokens, 318);
  EXPECT_NEAR(r.kv_keep_ratio, (64.0 + 62.0 + 16.0) / 318.0, 1e-4);
  // No compressor file read: the whole prompt again (as before groups were known).
  EXPECT_GT(sized({}).kv_keep_ratio, 0.999f);
}

TEST(stage_admission_test, a_bad_schedule_is_refused_at_start) {
  temp_dir lib{"mosaic_stages_bad"};
  auto o = tiny_options(lib.path());
  o.schedule = "p0c1d1";
  auto c = local_cluster::start(o);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.err().code, errc::invalid_argument);
  EXPECT_NE(c.err().message.find("p0c1d1"), std::string::npos) << c.err().message;
}

TEST(stage_admission_topology, the_prefill_actor_picks_the_schedule) {
  temp_dir lib{"mosaic_stages_topo"};
  const auto topo_with = [&](const std::string& prefill) {
    return R"(model: builtin:tiny
nodes:
  - name: local
    host: 127.0.0.1
    actors:
      - { kind: frontend }
      - { kind: router }
      - { kind: encoder }
      - { kind: kv_loader, library: )" +
           lib.path().string() + R"(, io: pread }
      - { kind: linker }
      - )" +
           prefill + R"(
      - { kind: decode, pool_gb: 0.01 }
)";
  };
  auto topo = parse_topology(
      topo_with(R"({ kind: prefill, compression: "keynorm:img=0.5", schedule: "p1c1d8" })"),
      "inline");
  ASSERT_TRUE(topo) << topo.err().message;
  auto o = node_options_from_topology(*topo);
  ASSERT_TRUE(o) << o.err().to_string();
  EXPECT_EQ(o->schedule, "p1c1d8");

  auto plain = parse_topology(topo_with("{ kind: prefill }"), "inline");
  ASSERT_TRUE(plain) << plain.err().message;
  EXPECT_EQ(node_options_from_topology(*plain)->schedule, "auto");

  auto bad = parse_topology(topo_with(R"({ kind: prefill, schedule: "lifo" })"), "inline");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.err().message.find("schedule"), std::string::npos) << bad.err().message;
  EXPECT_NE(bad.err().message.find("lifo"), std::string::npos) << bad.err().message;

  auto unknown = parse_topology(topo_with(R"({ kind: prefill, scheduler: "fcfs" })"), "inline");
  ASSERT_FALSE(unknown) << "unknown keys stay errors";
  EXPECT_NE(unknown.err().message.find("scheduler"), std::string::npos) << unknown.err().message;
}

} // namespace
} // namespace mosaic::actors
