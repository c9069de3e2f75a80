// The discrete-event model on a tiny topology: hand-computable single
// requests, sane queueing, policies ordered as their recompute, and the
// cost-profile fit.

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "sim/des.hpp"
#include "tests/support/small_cost_profile.hpp"
#include "topology/loader.hpp"

namespace mosaic::sim {
namespace {

topology test_topology(const char* name) {
  const char* data = std::getenv("MOSAIC_TEST_DATA");
  auto t = load_topology(std::string{data != nullptr ? data : "tests/data"} + "/sim/" + name);
  EXPECT_TRUE(t) << (t ? "" : t.err().to_string());
  return *t;
}

topology tiny_topology() {
  return test_topology("tiny-2node.yaml");
}

cost_profile profile() {
  auto c = test_support::small_cost_profile();
  c.kv_bytes_per_token = 1000;
  return c;
}

des_options opts(const char* policy) {
  des_options o;
  o.policy = parse_policy(policy).value();
  return o;
}

workload one_request(int images, int max_tokens, double at = 0.0) {
  workload w;
  w.spec.image_pool = 4;
  sim_request r;
  r.arrival_s = at;
  r.max_tokens = max_tokens;
  r.pieces.push_back({false, "a b c d e f g h i j", -1}); // 10 words = 10 tokens
  for (int i = 0; i < images; ++i)
    r.pieces.push_back({true, {}, i});
  w.requests.push_back(r);
  return w;
}

TEST(Des, OneRequestCostsWhatTheProfileSays) {
  const auto c = profile();
  auto r = simulate(tiny_topology(), c, one_request(2, 5), opts("full"));
  ASSERT_TRUE(r) << r.err().to_string();
  EXPECT_EQ(r->shape.nodes, 2);
  EXPECT_EQ(r->shape.prefill_workers, 2);
  EXPECT_EQ(r->shape.decode_workers, 2);
  const auto& rec = r->run.records.at(0);
  // 10 text + 2 x 100 image tokens; on a CPU node the two (disk) loads
  // add to the pass.
  const double load = 2 * 100 * 1000 / c.load_disk_bytes_per_s;
  const double prefill = 0.01 + 0.001 * 210 + load;
  EXPECT_NEAR(rec.ttft(), prefill, 1e-9);
  EXPECT_NEAR(rec.e2e(), prefill + 4 * (0.02 + 0.005), 1e-9); // 4 more tokens, batch 1
  EXPECT_EQ(rec.prompt_tokens, 210);
  EXPECT_EQ(rec.image_tokens, 200);

  auto m = simulate(tiny_topology(), c, one_request(2, 5), opts("mpic:32"));
  ASSERT_TRUE(m);
  // 10 text + 2 x 32 computed, + the loads on a CPU node...
  const double compute = 0.01 + 0.001 * 74;
  EXPECT_NEAR(m->run.records[0].ttft(), compute + load, 1e-9);
  // ... overlapped layer by layer with the pass on a GPU.
  auto g = simulate(test_topology("one-node-2gpu.yaml"), c, one_request(2, 5), opts("mpic:32"));
  ASSERT_TRUE(g);
  EXPECT_NEAR(g->run.records[0].ttft(), std::max(compute, load + compute / 8), 1e-9);
}

TEST(Des, ARequestsCountedPromptTokensReplaceTheWordEstimate) {
  const auto c = profile();
  auto w = one_request(2, 1);
  // The tokenizer and the chat template made 30 text tokens of the 10 words.
  w.requests[0].prompt_tokens = 230;
  auto r = simulate(tiny_topology(), c, w, opts("full"));
  ASSERT_TRUE(r) << r.err().to_string();
  const auto& rec = r->run.records.at(0);
  EXPECT_EQ(rec.prompt_tokens, 230);
  const double load = 2 * 100 * 1000 / c.load_disk_bytes_per_s;
  EXPECT_NEAR(rec.ttft(), 0.01 + 0.001 * 230 + load, 1e-9);
  // A count below the image tokens is not believed: the estimate stands.
  w.requests[0].prompt_tokens = 50;
  auto e = simulate(tiny_topology(), c, w, opts("full"));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->run.records.at(0).prompt_tokens, 210);
}

TEST(Des, PoliciesOrderByRecomputeAndOverloadQueues) {
  auto spec = load_workload_spec("gqa", builtin_workload_dir());
  ASSERT_TRUE(spec);
  arrival_spec low = spec->arrivals;
  low.rate = 1.0;
  low.duration_s = 200;
  const auto seed = std::random_device{}();
  auto w = generate_workload(*spec, low, seed);
  ASSERT_TRUE(w);
  const auto topo = tiny_topology();
  const auto c = profile();
  double last = 0;
  // 100-token images, 8 layers: cacheblend computes every token through
  // its check layer (2 of 8 layers) before its 15%, more than mpic's 32.
  for (const char* p : {"full_reuse", "vlcache:0.05", "mpic:32", "cacheblend:0.15", "full"}) {
    auto r = simulate(topo, c, *w, opts(p));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->run.summary.failed, 0);
    EXPECT_GE(r->run.summary.ttft.mean, last) << p;
    last = r->run.summary.ttft.mean;
    // Under capacity: throughput follows the offered rate.
    EXPECT_NEAR(r->run.summary.request_throughput, 1.0, 0.25) << p;
  }
  // Far above the prefill capacity (2 workers x ~0.15 s): queues and TTFT grow.
  arrival_spec high = low;
  high.rate = 40.0;
  high.duration_s = 20;
  auto wh = generate_workload(*spec, high, seed);
  ASSERT_TRUE(wh);
  auto r = simulate(topo, c, *wh, opts("full"));
  ASSERT_TRUE(r);
  EXPECT_GT(r->run.summary.ttft.p90, 10 * last);
  EXPECT_LT(r->run.summary.request_throughput, 20.0);
}

TEST(Des, DecodeBatchesShareSteps) {
  // Two requests at once on a one-decode-worker-per-node topology: each
  // node's decode worker takes one, so both decode at batch 1.
  auto w = one_request(0, 11);
  w.requests.push_back(w.requests[0]);
  w.requests[1].id = 1;
  auto r = simulate(tiny_topology(), profile(), w, opts("full"));
  ASSERT_TRUE(r);
  for (const auto& rec : r->run.records)
    EXPECT_NEAR(rec.tpot(), 0.025, 1e-9);
  EXPECT_NEAR(r->run.summary.itl.mean, 0.025, 1e-9);
}

TEST(Des, WorkersOnOneDeviceShareIt) {
  // A decodes 11 tokens (10 steps of 0.025 s from t = 0.02); B arrives at
  // 0.03, mid-step. On one CPU, B's prefill waits for the step in progress
  // (it ends at 0.045), and A's decoding waits for B's prefill.
  auto w = one_request(0, 11);
  w.requests.push_back(one_request(0, 1, 0.03).requests[0]);
  w.requests[1].id = 1;
  const auto c = profile();
  const double prefill = 0.01 + 0.001 * 10, step = 0.025;
  auto shared = simulate(test_topology("one-node-shared.yaml"), c, w, opts("full"));
  ASSERT_TRUE(shared) << shared.err().to_string();
  EXPECT_EQ(shared->shape.devices, 1);
  const auto& a = shared->run.records[0];
  const auto& b = shared->run.records[1];
  EXPECT_NEAR(b.first_token_s, prefill + step + prefill, 1e-9);
  EXPECT_NEAR(a.end_s, prefill + 10 * step + prefill, 1e-9);

  // Prefill on one GPU, decode on another: neither waits for the other.
  auto apart = simulate(test_topology("one-node-2gpu.yaml"), c, w, opts("full"));
  ASSERT_TRUE(apart) << apart.err().to_string();
  EXPECT_EQ(apart->shape.devices, 2);
  EXPECT_NEAR(apart->run.records[1].first_token_s, 0.03 + prefill, 1e-9);
  EXPECT_NEAR(apart->run.records[0].end_s, prefill + 10 * step, 1e-9);
}

TEST(Des, PrefillAndDecodeTakeTheDeviceInTurn) {
  // A (11 tokens), B and C (1 token each) arrive together on one CPU. As
  // the live actors take the compute lock in turn, one step of A's
  // decoding runs between two prefill passes (not every prefill first).
  auto w = one_request(0, 11);
  for (uint64_t id : {1, 2}) {
    w.requests.push_back(one_request(0, 1).requests[0]);
    w.requests.back().id = id;
  }
  const auto c = profile();
  const double prefill = 0.01 + 0.001 * 10, step = 0.025;
  auto r = simulate(test_topology("one-node-shared.yaml"), c, w, opts("full"));
  ASSERT_TRUE(r) << r.err().to_string();
  const auto& rec = r->run.records;
  EXPECT_NEAR(rec[0].first_token_s, prefill, 1e-9);
  EXPECT_NEAR(rec[1].first_token_s, prefill + step + prefill, 1e-9);
  EXPECT_NEAR(rec[2].first_token_s, 2 * (prefill + step) + prefill, 1e-9);
  EXPECT_NEAR(rec[0].end_s, 3 * prefill + 10 * step, 1e-9);
}

TEST(Des, TheNodeScalesThePassAndChargesLinkedTokens) {
  auto c = profile();
  c.prefill_pipeline_factor = 1.5;
  c.prefill_node_per_reused_token_s = 1e-4;
  auto r = simulate(tiny_topology(), c, one_request(2, 1), opts("mpic:32"));
  ASSERT_TRUE(r);
  // 10 text + 2 x 32 computed, 2 x 68 linked from the library.
  const double load = 2 * 100 * 1000 / c.load_disk_bytes_per_s;
  EXPECT_NEAR(r->run.records[0].ttft(), 1.5 * (0.01 + 0.001 * 74) + 1e-4 * 136 + load, 1e-9);
}

TEST(Des, PipelineOverheadsDelayThePrefillAndEveryStep) {
  auto c = profile();
  c.pipeline_base_s = 0.05;
  c.pipeline_per_image_s = 0.01;
  c.decode_step_overhead_s = 0.002;
  auto r = simulate(tiny_topology(), c, one_request(2, 5), opts("full"));
  ASSERT_TRUE(r);
  const auto& rec = r->run.records.at(0);
  const double prefill = 0.01 + 0.001 * 210 + 2 * 100 * 1000 / c.load_disk_bytes_per_s;
  EXPECT_NEAR(rec.ttft(), 0.05 + 2 * 0.01 + prefill, 1e-9);
  EXPECT_NEAR(rec.e2e() - rec.ttft(), 4 * (0.02 + 0.005 + 0.002), 1e-9);

  // Longer contexts make steps dearer (the step's cost is taken at the
  // start of each run of steps: 210 prompt tokens here).
  c.decode_step_per_context_token_s = 1e-5;
  auto ctx = simulate(tiny_topology(), c, one_request(2, 5), opts("full"));
  ASSERT_TRUE(ctx);
  const auto& rc = ctx->run.records.at(0);
  EXPECT_NEAR(rc.e2e() - rc.ttft(), 4 * (0.02 + 0.005 + 0.002 + 210 * 1e-5), 1e-9);
}

TEST(CostProfile, FitRecoversLinearCoefficients) {
  std::mt19937_64 g{std::random_device{}()};
  std::uniform_real_distribution<double> u(0, 1000);
  std::vector<std::vector<double>> x;
  std::vector<double> y;
  for (int i = 0; i < 20; ++i) {
    const double a = u(g), b = u(g) * 100;
    x.push_back({1.0, a, b});
    y.push_back(0.5 + 0.002 * a + 3e-6 * b);
  }
  auto c = fit_linear(x, y);
  ASSERT_TRUE(c);
  EXPECT_NEAR((*c)[0], 0.5, 1e-9);
  EXPECT_NEAR((*c)[1], 0.002, 1e-12);
  EXPECT_NEAR((*c)[2], 3e-6, 1e-12);
  EXPECT_FALSE(fit_linear({{1.0, 2.0}, {1.0, 2.0}}, std::vector<double>{1.0, 1.0}));
}

TEST(CostProfile, CostFitIsNonNegativeAndRelative) {
  // Exact data: recovered.
  std::vector<std::vector<double>> x;
  std::vector<double> y;
  for (double a : {10.0, 100.0, 1000.0, 50.0, 500.0})
    for (double b : {1e3, 1e5, 1e6}) {
      x.push_back({1.0, a, b});
      y.push_back(0.05 + 0.0004 * a + 3e-7 * b);
    }
  auto c = fit_costs(x, y);
  ASSERT_TRUE(c) << c.err().to_string();
  EXPECT_NEAR((*c)[0], 0.05, 1e-9);
  EXPECT_NEAR((*c)[1], 0.0004, 1e-12);
  EXPECT_NEAR((*c)[2], 3e-7, 1e-15);
  // The largest shape ran 3x slow (another job had the cores): plain least
  // squares turns the per-token cost negative; the cost fit keeps every
  // coefficient >= 0 and the small shapes within 15%.
  y.back() *= 3.0;
  auto plain = fit_linear(x, y);
  ASSERT_TRUE(plain);
  auto robust = fit_costs(x, y);
  ASSERT_TRUE(robust);
  for (double v : *robust)
    EXPECT_GE(v, 0.0);
  for (size_t r = 0; r + 1 < x.size(); ++r) {
    if (y[r] > 0.2)
      continue;
    const double pred = (*robust)[0] + (*robust)[1] * x[r][1] + (*robust)[2] * x[r][2];
    EXPECT_NEAR(pred / y[r], 1.0, 0.15) << "row " << r;
  }
  EXPECT_FALSE(fit_costs({{1.0}}, std::vector<double>{0.0}));
  EXPECT_FALSE(fit_costs({{1.0, 2.0}}, std::vector<double>{1.0, 2.0}));
}

TEST(CostProfile, SavesAndLoads) {
  auto c = profile();
  c.pipeline_base_s = 0.042;
  c.provenance["prefill"] = "measured: test";
  const auto path = std::filesystem::temp_directory_path() /
                    ("mosaic_profile_" + std::to_string(std::random_device{}()) + ".json");
  ASSERT_TRUE(save_profile(c, path));
  auto back = load_profile(path);
  ASSERT_TRUE(back) << back.err().to_string();
  EXPECT_EQ(back->prefill_per_computed_token_s, c.prefill_per_computed_token_s);
  EXPECT_EQ(back->provenance.at("prefill"), "measured: test");
  EXPECT_EQ(back->pipeline_base_s, 0.042);
  std::filesystem::remove(path);
  EXPECT_FALSE(load_profile(path));
}

} // namespace
} // namespace mosaic::sim
