#include "engine/sampler.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

namespace mosaic {
namespace {

std::vector<float> random_logits(std::mt19937& rng, size_t n, float spread = 3.0f) {
  std::normal_distribution<float> dist(0.0f, spread);
  std::vector<float> l(n);
  for (float& v : l)
    v = dist(rng);
  return l;
}

TEST(sampler, greedy_is_argmax) {
  std::mt19937 rng(std::random_device{}());
  sampler s{sampling_params{}};
  for (int i = 0; i < 20; ++i) {
    auto l = random_logits(rng, 100);
    const int32_t want = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    EXPECT_EQ(argmax(l), want);
    EXPECT_EQ(s.sample(l), want);
  }
}

TEST(sampler, logprobs_are_the_raw_log_softmax_chosen_first_then_the_top) {
  const std::vector<float> logits{1.0f, 3.0f, std::nanf(""), 3.0f, -2.0f};
  const double lse = std::log(std::exp(1.0) + 2 * std::exp(3.0) + std::exp(-2.0));
  const auto lp = logprobs_of(logits, 4, 3);
  ASSERT_EQ(lp.size(), 4u);
  EXPECT_EQ(lp[0].token, 4);
  EXPECT_NEAR(lp[0].logprob, -2.0 - lse, 1e-6);
  // Ties by the lower id; NaN ranks last and is -inf.
  EXPECT_EQ(lp[1].token, 1);
  EXPECT_EQ(lp[2].token, 3);
  EXPECT_EQ(lp[3].token, 0);
  EXPECT_NEAR(lp[1].logprob, 3.0 - lse, 1e-6);
  EXPECT_EQ(lp[1].logprob, lp[2].logprob);
  EXPECT_EQ(logprobs_of(logits, 2, 0)[0].logprob, -std::numeric_limits<float>::infinity());
  EXPECT_EQ(logprobs_of(logits, 0, 99).size(), 6u); // clamped to the vocabulary
  EXPECT_EQ(logprobs_of(logits, 0, -3).size(), 1u);
  // Large logits do not overflow.
  const std::vector<float> big{1e30f, 1e30f};
  EXPECT_NEAR(logprobs_of(big, 0, 1)[1].logprob, -std::log(2.0), 1e-6);
  const std::vector<float> none{std::nanf(""), std::nanf("")};
  EXPECT_EQ(logprobs_of(none, 0, 1)[1].logprob, -std::numeric_limits<float>::infinity());
}

TEST(sampler, same_seed_same_tokens_different_seed_different_tokens) {
  std::mt19937 rng(std::random_device{}());
  const auto l = random_logits(rng, 64, 0.5f); // flat-ish: many plausible tokens
  sampling_params p;
  p.temperature = 1.0f;
  p.seed = 1234;
  sampler a{p}, b{p};
  p.seed = 99;
  sampler c{p};
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 50; ++i) {
    ta.push_back(a.sample(l));
    tb.push_back(b.sample(l));
    tc.push_back(c.sample(l));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
  EXPECT_GT(std::set<int32_t>(ta.begin(), ta.end()).size(), 5u);
}

TEST(sampler, rng_is_defined_bit_for_bit) {
  // xoshiro256** seeded by splitmix64(0): fixed across platforms.
  sampling_rng r(0);
  sampling_rng r2(0);
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(r.next_u64(), r2.next_u64());
  for (int i = 0; i < 1000; ++i) {
    const double u = r.next_unit();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST(sampler, top_p_only_draws_from_the_nucleus) {
  std::mt19937 rng(std::random_device{}());
  const auto l = random_logits(rng, 50, 2.0f);
  const auto p = softmax(l);
  std::vector<size_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
  const double top_p = 0.6;
  std::set<int32_t> nucleus;
  double cum = 0.0;
  for (size_t i : order) {
    nucleus.insert(static_cast<int32_t>(i));
    cum += p[i];
    if (cum >= top_p)
      break;
  }
  sampling_params sp;
  sp.temperature = 1.0f;
  sp.top_p = static_cast<float>(top_p);
  sp.seed = rng();
  sampler s{sp};
  const int n = 4000;
  int top_count = 0;
  for (int i = 0; i < n; ++i) {
    const int32_t t = s.sample(l);
    ASSERT_TRUE(nucleus.count(t)) << "token " << t << " is outside the top-p nucleus";
    top_count += t == static_cast<int32_t>(order[0]) ? 1 : 0;
  }
  // The nucleus is renormalised: the top token's share is p_top / mass.
  EXPECT_NEAR(static_cast<double>(top_count) / n, p[order[0]] / cum, 0.05);
}

TEST(sampler, top_k_limits_candidates_and_frequencies_follow_probabilities) {
  const std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  sampling_params sp;
  sp.temperature = 1.0f;
  sp.top_k = 2;
  sp.seed = 42;
  sampler s{sp};
  int counts[4] = {};
  const int n = 20000;
  for (int i = 0; i < n; ++i)
    ++counts[s.sample(l)];
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_NEAR(static_cast<double>(counts[0]) / n, 0.5 / 0.8, 0.02);
}

TEST(sampler, temperature_near_zero_behaves_greedy) {
  std::mt19937 rng(std::random_device{}());
  for (float t : {0.0f, 1e-6f, 1e-3f}) {
    sampling_params sp;
    sp.temperature = t;
    sp.seed = rng();
    sampler s{sp};
    for (int i = 0; i < 20; ++i) {
      auto l = random_logits(rng, 200);
      // Greedy only where the top logit leads by much more than t: with
      // 200 normal logits the top two are sometimes ~1e-3 apart, and then
      // t = 1e-3 rightly samples either (a CI run drew such a pair).
      l[size_t(argmax(l))] += 0.05f;
      EXPECT_EQ(s.sample(l), argmax(l)) << "temperature " << t;
    }
  }
}

TEST(sampler, stop_tokens_and_validation) {
  sampling_params sp;
  sp.stop_token_ids = {2, 7};
  sampler s{sp};
  EXPECT_TRUE(s.is_stop(2));
  EXPECT_TRUE(s.is_stop(7));
  EXPECT_FALSE(s.is_stop(3));

  EXPECT_TRUE(sampling_params{}.validate());
  sampling_params bad;
  bad.temperature = -1.0f;
  EXPECT_FALSE(bad.validate());
  bad = {};
  bad.top_p = 0.0f;
  EXPECT_FALSE(bad.validate());
  bad = {};
  bad.top_p = 1.5f;
  EXPECT_FALSE(bad.validate());
  bad = {};
  bad.top_k = -2;
  EXPECT_FALSE(bad.validate());
  bad = {};
  bad.temperature = std::nanf("");
  EXPECT_FALSE(bad.validate());
}

TEST(sampler, softmax_kl_and_argmax_helpers) {
  std::mt19937 rng(std::random_device{}());
  const auto a = random_logits(rng, 30);
  const auto pa = softmax(a);
  double sum = 0.0;
  for (double v : pa)
    sum += v;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  EXPECT_NEAR(kl_divergence(a, a), 0.0, 1e-12);
  // Softmax is shift-invariant, so is KL.
  std::vector<float> shifted = a;
  for (float& v : shifted)
    v += 5.0f;
  EXPECT_NEAR(kl_divergence(a, shifted), 0.0, 1e-9);
  const auto b = random_logits(rng, 30);
  EXPECT_GT(kl_divergence(a, b), 0.0);
  // Two-point check against the closed form.
  const std::vector<float> p = {0.0f, 0.0f}, q = {std::log(3.0f), 0.0f};
  EXPECT_NEAR(kl_divergence(p, q), 0.5 * std::log(0.5 / 0.75) + 0.5 * std::log(0.5 / 0.25), 1e-6);
  EXPECT_TRUE(std::isnan(kl_divergence(a, std::vector<float>(3))));
  const std::vector<float> with_nan = {1.0f, std::nanf(""), 3.0f};
  EXPECT_EQ(argmax(with_nan), 2);
  EXPECT_EQ(argmax(std::vector<float>{}), -1);
}

TEST(sampler, min_tokens_bans_end_tokens_until_reached) {
  sampling_params p;
  p.min_tokens = 2;
  p.eos_id = 3;
  p.stop_token_ids = {5};
  sampler s{p};
  const std::vector<float> logits{0.0f, 1.0f, 0.5f, 9.0f, 0.2f, 8.0f};
  EXPECT_EQ(s.sample(logits), 1); // 3 and 5 are banned
  EXPECT_EQ(s.sample(logits), 1);
  EXPECT_EQ(s.sample(logits), 3); // two tokens out: allowed again
  // A token the prefill picked counts too.
  sampler d{p};
  d.observe(1);
  d.observe(1);
  EXPECT_EQ(d.sample(logits), 3);
}

TEST(sampler, penalties_follow_vllms_definitions) {
  const std::vector<float> logits{2.0f, 1.9f, -1.0f, -1.2f};
  {
    sampling_params p;
    p.repetition_penalty = 2.0f; // positive logits halved, negative doubled
    sampler s{p};
    s.set_prompt(std::vector<int32_t>{0});
    EXPECT_EQ(s.sample(logits), 1); // 2.0 -> 1.0 < 1.9
    // Token 1 is output now: 1.9 -> 0.95; 0 (prompt) 1.0 wins.
    EXPECT_EQ(s.sample(logits), 0);
  }
  {
    sampling_params p;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.0f;
    sampler s{p};
    EXPECT_EQ(s.sample(logits), 0);
    EXPECT_EQ(s.sample(logits), 1); // 2.0 - 0.5 < 1.9
  }
  {
    sampling_params p;
    p.frequency_penalty = 0.06f; // per occurrence
    sampler s{p};
    EXPECT_EQ(s.sample(logits), 0); // 2.0
    EXPECT_EQ(s.sample(logits), 0); // 1.94 > 1.9
    EXPECT_EQ(s.sample(logits), 1); // 1.88 < 1.9
  }
  sampling_params bad;
  bad.repetition_penalty = 0.0f;
  EXPECT_FALSE(bad.validate());
  bad = {};
  bad.presence_penalty = 3.0f;
  EXPECT_FALSE(bad.validate());
  bad = {};
  bad.min_p = 1.5f;
  EXPECT_FALSE(bad.validate());
}

TEST(sampler, min_p_keeps_only_tokens_near_the_most_likely) {
  sampling_params p;
  p.temperature = 1.0f;
  p.min_p = 0.5f;
  p.seed = 11;
  sampler s{p};
  // p(0) : p(1) = e^1 : 1, so token 1 (ratio 0.37 < 0.5) is never drawn;
  // token 2 (ratio 0.9) is.
  const std::vector<float> logits{1.0f, 0.0f, 0.9f};
  std::set<int32_t> seen;
  for (int i = 0; i < 400; ++i)
    seen.insert(s.sample(logits));
  EXPECT_EQ(seen, (std::set<int32_t>{0, 2}));
}

} // namespace
} // namespace mosaic
