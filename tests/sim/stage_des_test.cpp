// The FastCache stage model: one request costs what the profile says, and
// under random gqa traffic and random budgets every batching policy
// completes every request, stays within the memory budget, and the KV
// that actually exists never exceeds what the resource manager reserved.

#include <gtest/gtest.h>

#include <random>

#include "sim/stage_des.hpp"
#include "tests/support/small_cost_profile.hpp"
#include "tests/support/small_memory_model.hpp"

namespace mosaic::sim {
namespace {

cost_profile profile() {
  auto c = test_support::small_cost_profile();
  c.load_ram_bytes_per_s = 1e9;
  return c;
}

using testing::small_memory_model;

stage_des_options opts(const char* schedule, const char* compression, const memory_model& m) {
  stage_des_options o;
  o.label = std::string{schedule} + " " + compression;
  o.schedule = parse_schedule_policy(schedule).value();
  o.compression = parse_compression(compression).value();
  o.memory = m;
  return o;
}

TEST(stage_des, one_request_costs_what_the_profile_says) {
  workload w;
  sim_request r;
  r.id = 1;
  r.max_tokens = 5;
  r.pieces.push_back({false, "a b c d e f g h i j", -1}); // 10 tokens
  r.pieces.push_back({true, {}, 0});                      // 100 image tokens
  w.requests.push_back(r);
  const auto c = profile();
  const auto m = small_memory_model(10'000'000);
  auto plain = simulate_stages(c, w, opts("dynamic", "none", m));
  ASSERT_TRUE(plain) << plain.err().to_string();
  const double prefill = 0.01 + 0.001 * 110;
  const double step = 0.02 + 0.005;
  const auto& p = plain->run.records.at(0);
  ASSERT_TRUE(p.ok) << p.error;
  EXPECT_EQ(p.prompt_tokens, 110);
  EXPECT_NEAR(p.ttft(), prefill, 1e-9);
  EXPECT_NEAR(p.e2e(), prefill + 4 * step, 1e-9);
  EXPECT_EQ(plain->stages[size_t(stage_kind::compress)].batches, 0);
  EXPECT_EQ(plain->peak_kv_actual, m.kv_bytes(110 + 4)); // the last token's KV is never written

  // streaming keeps half the image tokens and every text token; it only
  // copies rows (W = 0): 110 rows at the pool's bytes per token.
  auto comp = simulate_stages(c, w, opts("dynamic", "streaming:img=0.5,sink=0,recent=0", m));
  ASSERT_TRUE(comp) << comp.err().to_string();
  const double compress = 0.01 + 110.0 * 1024 / 1e9;
  const auto& q = comp->run.records.at(0);
  ASSERT_TRUE(q.ok) << q.error;
  EXPECT_NEAR(q.ttft(), prefill + compress, 1e-9);
  EXPECT_NEAR(q.e2e(), prefill + compress + 4 * step, 1e-9);
  EXPECT_NEAR(comp->ttft_without_compression_mean, prefill, 1e-9);
  EXPECT_NEAR(comp->compress_mean, compress, 1e-9);
  const int kept = kept_count(
      110, kv_keep_fraction(*parse_compression("streaming:img=0.5,sink=0,recent=0"), 100, 10));
  EXPECT_EQ(comp->peak_kv_actual, m.kv_bytes(110) + m.kv_bytes(kept)); // both while compressing
  EXPECT_EQ(comp->stages[size_t(stage_kind::compress)].batches, 1);
}

TEST(stage_des, every_policy_completes_within_budget_and_reservations_cover_the_real_kv) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  auto spec = load_workload_spec("gqa", builtin_workload_dir());
  ASSERT_TRUE(spec) << spec.err().to_string();
  auto c = profile();
  c.image_tokens = 64;
  for (int round = 0; round < 4; ++round) {
    arrival_spec a = spec->arrivals;
    a.rate = 1.0 + double(rng() % 40);
    a.duration_s = 4;
    auto w = generate_workload(*spec, a, rng());
    ASSERT_TRUE(w) << w.err().to_string();
    // From "about one request at a time" to roomy.
    const auto m = small_memory_model(100'000 + 400'000 + size_t(rng() % 3'000'000));
    for (const char* schedule :
         {"fcfs", "p1c1d8", "p2c2d8", "p3c3d6", "p4c4d8", "dynamic", "dynamic:count=4,wait=0.05"}) {
      for (const char* compression : {"none", "snapkv:img=0.25,txt=0.5", "keynorm:img=0.5"}) {
        SCOPED_TRACE(std::string{schedule} + " " + compression + " rate " + std::to_string(a.rate) +
                     " budget " + std::to_string(m.budget_bytes));
        auto r = simulate_stages(c, *w, opts(schedule, compression, m));
        ASSERT_TRUE(r) << r.err().to_string();
        EXPECT_EQ(r->run.summary.completed, int64_t(w->requests.size()));
        EXPECT_LE(r->peak_used, m.budget_bytes);
        EXPECT_LE(r->peak_kv_actual, r->peak_kv_reserved);
        EXPECT_LE(r->ttft_without_compression_mean, r->run.summary.ttft.mean + 1e-12);
        const auto pol = parse_schedule_policy(schedule).value();
        for (auto st : {stage_kind::prefill, stage_kind::compress, stage_kind::decode}) {
          EXPECT_LE(r->stages[size_t(st)].max_batch, pol.batch[size_t(st)]);
          if (pol.kind == schedule_policy::kind_t::fcfs && r->stages[size_t(st)].batches > 0) {
            EXPECT_EQ(r->stages[size_t(st)].max_batch, 1);
          }
        }
        if (std::string_view{compression} == "none") {
          EXPECT_EQ(r->stages[size_t(stage_kind::compress)].batches, 0);
        }
      }
    }
  }
}

TEST(stage_des, the_profile_model_sizes_memory_from_the_model_config) {
  cost_profile c = profile();
  auto m = profile_memory_model(c, 64 << 20);
  ASSERT_TRUE(m) << m.err().to_string();
  EXPECT_EQ(m->budget_bytes, m->weight_bytes + (64 << 20));
  // builtin:small: 8 layers, 2 kv heads of 64 → 2 x 8 x 128 floats per token.
  EXPECT_EQ(m->kv_bytes_per_token, 2u * 8 * 128 * 4);
  c.model = "no-such-model-dir";
  EXPECT_FALSE(profile_memory_model(c, 1 << 20));
}

} // namespace
} // namespace mosaic::sim
