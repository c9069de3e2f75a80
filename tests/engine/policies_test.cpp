#include "engine/policies.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "forward_test_model.hpp"

namespace mosaic {
namespace {

class policies_test : public ::testing::Test {
protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      entries_[i].resize(n_img_[i], cfg_.num_layers, cfg_.hidden_size, cfg_.kv_dim());
      p_.images.push_back({"img" + std::to_string(i), n_img_[i], &entries_[i], nullptr});
    }
    emb_miss_.assign(size_t(5) * cfg_.hidden_size, 0.25f);
    p_.images.push_back({"miss", 5, nullptr, emb_miss_.data()});
    p_.parts = {{segment_kind::text, {1, 2, 3}, -1}, {segment_kind::image, {}, 0},
                {segment_kind::text, {4}, -1},       {segment_kind::image, {}, 2},
                {segment_kind::image, {}, 1},        {segment_kind::text, {5, 6}, -1}};
  }

  link_plan build(std::string_view policy, const vlcache_profile* profile = nullptr) {
    auto spec = parse_policy(policy);
    EXPECT_TRUE(spec);
    auto plan = build_link_plan(p_, *spec, cfg_, {}, profile);
    EXPECT_TRUE(plan) << plan.err().to_string();
    EXPECT_TRUE(plan->validate());
    return std::move(*plan);
  }

  /// Recomputed tokens of cached image i at layer l.
  int recomputed(const link_plan& plan, int image, int layer) const {
    int c = 0;
    for (const auto& seg : plan.segments)
      if (seg.image == image)
        for (int32_t t : plan.compute[size_t(layer)])
          c += t >= seg.begin && t < seg.end;
    return c;
  }

  text_config cfg_ = testing::tiny_text_config(8);
  int n_img_[2] = {40, 24};
  compiled_image entries_[2];
  std::vector<float> emb_miss_;
  prompt p_;
  // text(3) img0(40) text(1) miss(5) img1(24) text(2) = 75 tokens
  static constexpr int n_text = 6;
};

TEST_F(policies_test, layout_places_segments_positions_and_sources) {
  auto plan = build("full_reuse");
  ASSERT_EQ(plan.n_tokens(), 75);
  ASSERT_EQ(plan.segments.size(), 6u);
  EXPECT_EQ(plan.segments[1].begin, 3);
  EXPECT_EQ(plan.segments[4].begin, 49);
  EXPECT_EQ(plan.positions[74], 74);
  EXPECT_EQ(plan.kv[3].kind, kv_source_kind::image_entry);
  EXPECT_EQ(plan.kv[45].kind, kv_source_kind::compute); // the miss
  for (const auto& s : plan.compute)
    EXPECT_EQ(s.size(), size_t(n_text + 5)); // text + miss (last token is text)
}

TEST_F(policies_test, mpic_recomputes_the_first_k_of_each_cached_image) {
  auto plan = build("mpic:32");
  for (int l = 0; l < cfg_.num_layers; ++l) {
    EXPECT_EQ(recomputed(plan, 0, l), 32);
    EXPECT_EQ(recomputed(plan, 1, l), 24);
    EXPECT_EQ(recomputed(plan, 2, l), 5);
  }
  EXPECT_EQ(plan.compute[0][3], 3); // first token of image 0
}

TEST_F(policies_test, vlcache_spends_the_mean_fraction_per_layer_profile) {
  for (float r : {0.05f, 0.25f, 0.6f}) {
    auto plan = build("vlcache:" + std::to_string(r));
    EXPECT_NE(plan.note.find("uniform"), std::string::npos);
    for (int i = 0; i < 2; ++i) {
      double mean = 0.0;
      for (int l = 0; l < cfg_.num_layers; ++l)
        mean += recomputed(plan, i, l);
      mean /= cfg_.num_layers * n_img_[i];
      EXPECT_NEAR(mean, r, 0.5 / n_img_[i] + 1e-6) << "r " << r << " image " << i;
    }
  }
  // A sensitivity profile moves the budget to the sensitive layers while
  // keeping the mean; a fraction past 1 is capped and spread.
  vlcache_profile prof;
  prof.layer_weights = {8, 4, 2, 1, 1, 1, 0.5f, 0.5f};
  prof.uniform = false;
  prof.source = "test";
  const auto f = vlcache_layer_fractions(prof, 0.3f);
  double mean = 0.0;
  for (float x : f) {
    EXPECT_LE(x, 1.0f);
    mean += x;
  }
  EXPECT_NEAR(mean / 8, 0.3, 1e-4);
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  EXPECT_GT(f[1], f[3]);
  auto plan = build("vlcache:0.3", &prof);
  EXPECT_GT(recomputed(plan, 0, 0), recomputed(plan, 0, 7));
  EXPECT_EQ(recomputed(plan, 0, 0), 40);
}

TEST_F(policies_test, vlcache_profile_is_read_beside_the_model) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("mosaic_vlcache_" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  auto none = load_vlcache_profile(dir, 4);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->uniform);
  std::ofstream{dir / "vlcache_profile.json"} << R"({"layer_weights": [1, 2, 3, 4]})";
  auto prof = load_vlcache_profile(dir, 4);
  ASSERT_TRUE(prof) << prof.err().to_string();
  EXPECT_FALSE(prof->uniform);
  EXPECT_EQ(prof->layer_weights[3], 4.0f);
  auto wrong = load_vlcache_profile(dir, 5);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.err().code, errc::corrupt_data);
  std::ofstream{dir / "vlcache_profile.json"} << "{not json";
  EXPECT_FALSE(load_vlcache_profile(dir, 4));
  std::filesystem::remove_all(dir);
}

/// Random deviations for the cached image tokens of `plan`, -1 elsewhere.
std::vector<float> random_deviations(const link_plan& plan, std::mt19937& rng) {
  std::vector<float> dev(size_t(plan.n_tokens()), -1.0f);
  for (int t = 0; t < plan.n_tokens(); ++t)
    if (plan.kv[size_t(t)].kind == kv_source_kind::image_entry)
      dev[size_t(t)] = std::uniform_real_distribution<float>{0, 1}(rng);
  return dev;
}

/// What the completion must pick for the measured tokens (dev >= 0): per
/// image, the round(r * measured) largest.
std::vector<int32_t> top_per_image(const link_plan& plan, const std::vector<float>& dev, float r) {
  std::vector<int32_t> out;
  for (const auto& seg : plan.segments) {
    if (seg.kind != segment_kind::image)
      continue;
    std::vector<int32_t> m;
    for (int t = seg.begin; t < seg.end; ++t)
      if (dev[size_t(t)] >= 0.0f)
        m.push_back(t);
    std::sort(m.begin(), m.end(),
              [&](int32_t a, int32_t b) { return dev[size_t(a)] > dev[size_t(b)]; });
    m.resize(size_t(std::lround(r * float(m.size()))));
    out.insert(out.end(), m.begin(), m.end());
  }
  return out;
}

std::vector<int32_t> sorted_union(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  std::sort(a.begin(), a.end());
  a.erase(std::unique(a.begin(), a.end()), a.end());
  return a;
}

TEST_F(policies_test, cacheblend_computes_everything_through_the_check_layer_then_completes) {
  auto plan = build("cacheblend:0.25");
  ASSERT_EQ(plan.completion.layer, 1); // CacheBlend's check layer
  EXPECT_EQ(plan.compute[0].size(), 75u);
  EXPECT_EQ(plan.compute[1].size(), 75u);
  std::mt19937 rng{std::random_device{}()};
  const auto dev = random_deviations(plan, rng);
  ASSERT_TRUE(plan.completion.complete(plan, dev));
  for (int l = 2; l < cfg_.num_layers; ++l) {
    EXPECT_EQ(recomputed(plan, 0, l), 10);
    EXPECT_EQ(recomputed(plan, 1, l), 6);
    EXPECT_EQ(recomputed(plan, 2, l), 5);
  }
  // The chosen tokens of image 0 are its 10 largest deviations.
  std::vector<float> chosen, rest;
  for (int t = 3; t < 43; ++t)
    (std::binary_search(plan.compute[2].begin(), plan.compute[2].end(), t) ? chosen : rest)
        .push_back(dev[size_t(t)]);
  EXPECT_GE(*std::min_element(chosen.begin(), chosen.end()),
            *std::max_element(rest.begin(), rest.end()));
  plan.completion = {};
  EXPECT_TRUE(plan.validate()) << plan.validate().err().to_string();
}

TEST_F(policies_test, cacheblend_check_layer_is_a_parameter_clamped_to_the_last_layer) {
  for (int c : {0, 3, 6}) {
    auto plan = build("cacheblend:0.25@" + std::to_string(c));
    ASSERT_EQ(plan.completion.layer, c);
    for (int l = 0; l < cfg_.num_layers; ++l)
      EXPECT_EQ(plan.compute[size_t(l)].size(), l <= c ? 75u : size_t(n_text + 5)) << l;
  }
  // At or past the last layer nothing is left to select: all tokens, all layers.
  for (std::string_view spec : {"cacheblend:0.25@7", "cacheblend:0.25@100"}) {
    auto plan = build(spec);
    EXPECT_EQ(plan.completion.layer, -1);
    for (const auto& s : plan.compute)
      EXPECT_EQ(s.size(), 75u);
  }
  // A one-layer model: the default check layer 1 clamps to 0.
  const auto one = testing::tiny_text_config(1);
  compiled_image e;
  e.resize(6, 1, one.hidden_size, one.kv_dim());
  prompt p;
  p.images.push_back({"img", 6, &e, nullptr});
  p.parts = {{segment_kind::text, {1, 2}, -1},
             {segment_kind::image, {}, 0},
             {segment_kind::text, {3}, -1}};
  auto plan = build_link_plan(p, *parse_policy("cacheblend:0.5"), one);
  ASSERT_TRUE(plan) << plan.err().to_string();
  EXPECT_EQ(plan->completion.layer, -1);
  EXPECT_EQ(plan->compute[0].size(), 9u);
  EXPECT_TRUE(plan->validate());
}

TEST_F(policies_test, cacheblend_completion_decides_only_for_the_measured_tokens) {
  // The chunked-prefill contract: two calls with disjoint measured subsets
  // give the union of the per-subset selections.
  std::mt19937 rng{std::random_device{}()};
  auto plan = build("cacheblend:0.3");
  const auto base = plan.compute[2]; // text + miss + last
  const auto dev = random_deviations(plan, rng);
  std::vector<float> a(dev.size(), -1.0f), b(dev.size(), -1.0f);
  for (size_t t = 0; t < dev.size(); ++t)
    (t % 3 == 0 ? a : b)[t] = dev[t];
  const auto top_a = top_per_image(plan, a, 0.3f);
  const auto top_b = top_per_image(plan, b, 0.3f);
  ASSERT_TRUE(plan.completion.complete(plan, a));
  for (int l = 2; l < cfg_.num_layers; ++l)
    EXPECT_EQ(plan.compute[size_t(l)], sorted_union(base, top_a)) << "layer " << l;
  ASSERT_TRUE(plan.completion.complete(plan, b));
  const auto both = sorted_union(sorted_union(base, top_a), top_b);
  for (int l = 2; l < cfg_.num_layers; ++l)
    EXPECT_EQ(plan.compute[size_t(l)], both) << "layer " << l;
  // Measuring a subset again re-decides it and leaves the others alone.
  ASSERT_TRUE(plan.completion.complete(plan, a));
  EXPECT_EQ(plan.compute[2], both);
  std::vector<float> flipped = a;
  for (auto& x : flipped)
    if (x >= 0.0f)
      x = 1.0f - x;
  ASSERT_TRUE(plan.completion.complete(plan, flipped));
  EXPECT_EQ(plan.compute[2],
            sorted_union(sorted_union(base, top_per_image(plan, flipped, 0.3f)), top_b));
  // Nothing measured: nothing changes.
  ASSERT_TRUE(plan.completion.complete(plan, std::vector<float>(dev.size(), -1.0f)));
  EXPECT_EQ(plan.compute[2],
            sorted_union(sorted_union(base, top_per_image(plan, flipped, 0.3f)), top_b));
  plan.completion = {};
  EXPECT_TRUE(plan.validate()) << plan.validate().err().to_string();
}

TEST_F(policies_test, vlcache_sets_are_nested_for_any_profile) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng{seed};
  const int L = cfg_.num_layers;
  for (int trial = 0; trial < 40; ++trial) {
    vlcache_profile prof;
    prof.uniform = false;
    prof.source = "random";
    for (int l = 0; l < L; ++l)
      prof.layer_weights.push_back(std::bernoulli_distribution{0.2}(rng)
                                       ? 0.0f
                                       : std::uniform_real_distribution<float>{0, 4}(rng));
    prof.layer_weights[size_t(std::uniform_int_distribution<int>{0, L - 1}(rng))] = 1.0f;
    // Layers that may get budget: those with a positive weight at or below them.
    int live = 0;
    for (int l = 0; l < L; ++l)
      live += *std::max_element(prof.layer_weights.begin() + l, prof.layer_weights.end()) > 0;
    for (float r : {0.02f, 0.05f, 0.2f, 0.5f, 0.9f}) {
      const auto f = vlcache_layer_fractions(prof, r);
      double mean = 0.0;
      for (int l = 0; l < L; ++l) {
        EXPECT_GE(f[size_t(l)], 0.0f);
        EXPECT_LE(f[size_t(l)], 1.0f);
        if (l > 0) {
          EXPECT_LE(f[size_t(l)], f[size_t(l - 1)]) << "layer " << l << " r " << r;
        }
        mean += f[size_t(l)];
      }
      EXPECT_NEAR(mean / L, std::min(double(r), double(live) / L), 1e-4) << "r " << r;

      auto spec = parse_policy("vlcache:" + std::to_string(r));
      ASSERT_TRUE(spec);
      auto plan = build_link_plan(p_, *spec, cfg_, {}, &prof);
      ASSERT_TRUE(plan) << plan.err().to_string();
      ASSERT_TRUE(plan->validate()) << plan->validate().err().to_string();
      for (int l = 1; l < L; ++l) {
        const auto& cur = plan->compute[size_t(l)];
        const auto& prev = plan->compute[size_t(l - 1)];
        EXPECT_TRUE(std::includes(prev.begin(), prev.end(), cur.begin(), cur.end()))
            << "S_" << l << " is not inside S_" << l - 1;
      }
      // Each image recomputes a leading run: its first `count` tokens.
      for (int l = 0; l < L; ++l)
        for (const auto& seg : plan->segments) {
          if (seg.kind != segment_kind::image || seg.image == 2)
            continue;
          const int count = recomputed(*plan, seg.image, l);
          EXPECT_EQ(count, std::lround(f[size_t(l)] * float(seg.end - seg.begin)));
          for (int t = seg.begin; t < seg.begin + count; ++t)
            EXPECT_TRUE(std::binary_search(plan->compute[size_t(l)].begin(),
                                           plan->compute[size_t(l)].end(), t));
        }
    }
  }
}

TEST_F(policies_test, vlcache_gives_a_layer_the_budget_of_any_deeper_layer) {
  // A calibrated profile that is not monotone: the suffix maxima of the
  // weights are {8, 8, 4, 4, 4, 1, 1, 1}.
  vlcache_profile prof{{1, 8, 1, 1, 4, 1, 0, 1}, false, "test"};
  const auto f = vlcache_layer_fractions(prof, 0.3f);
  EXPECT_FLOAT_EQ(f[0], f[1]);
  EXPECT_FLOAT_EQ(f[2], f[4]);
  EXPECT_FLOAT_EQ(f[5], f[7]);
  EXPECT_GT(f[1], f[2]);
  EXPECT_GT(f[4], f[5]);
  EXPECT_NEAR(std::accumulate(f.begin(), f.end(), 0.0) / 8, 0.3, 1e-4);
  // Proportional to the nested weights where not capped at 1.
  EXPECT_NEAR(f[2] / f[5], 4.0, 1e-4);
  auto plan = build("vlcache:0.3", &prof);
  for (int l = 1; l < cfg_.num_layers; ++l)
    EXPECT_LE(recomputed(plan, 0, l), recomputed(plan, 0, l - 1));
}

TEST_F(policies_test, every_policy_builds_nested_sets) {
  std::mt19937 rng{std::random_device{}()};
  vlcache_profile prof{{1, 3, 0.5f, 2, 1, 4, 0, 1}, false, "test"};
  for (std::string_view spec : {"full", "prefix", "full_reuse", "mpic:4", "mpic:32", "vlcache:0.3",
                                "cacheblend:0.15", "cacheblend:0.5@4"}) {
    auto plan = build(spec, &prof);
    if (plan.completion.layer >= 0) {
      ASSERT_TRUE(plan.completion.complete(plan, random_deviations(plan, rng)));
      plan.completion = {};
    }
    EXPECT_TRUE(plan.validate()) << spec << ": " << plan.validate().err().to_string();
  }
}

TEST_F(policies_test, rejects_bad_prompts) {
  auto spec = parse_policy("mpic:4");
  prompt bad = p_;
  bad.parts.push_back({segment_kind::image, {}, 9});
  EXPECT_EQ(build_link_plan(bad, *spec, cfg_).err().code, errc::invalid_argument);
  prompt miss = p_;
  miss.images[2].embeddings = nullptr;
  auto r = build_link_plan(miss, *spec, cfg_);
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("vision encoder"), std::string::npos);
  prompt vocab = p_;
  vocab.parts[0].text_ids = {cfg_.vocab_size};
  EXPECT_FALSE(build_link_plan(vocab, *spec, cfg_));
  EXPECT_FALSE(build_link_plan(prompt{}, *spec, cfg_));
}

TEST_F(policies_test, split_prompt_expands_image_markers_in_order) {
  const int32_t img = 99;
  auto p = split_prompt(std::vector<int32_t>{1, 7, img, 8, img, img, 9}, img,
                        {p_.images[0], p_.images[2], p_.images[1]});
  ASSERT_TRUE(p) << p.err().to_string();
  ASSERT_EQ(p->parts.size(), 6u);
  EXPECT_EQ(p->parts[0].text_ids, (std::vector<int32_t>{1, 7}));
  EXPECT_EQ(p->parts[1].image, 0);
  EXPECT_EQ(p->parts[3].image, 1);
  EXPECT_EQ(p->parts[4].image, 2);
  EXPECT_EQ(p->parts[5].text_ids, (std::vector<int32_t>{9}));
  auto plan = build_link_plan(*p, *parse_policy("full"), cfg_);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->n_tokens(), 4 + 40 + 5 + 24);
  EXPECT_FALSE(split_prompt(std::vector<int32_t>{1, img}, img, {}));
  EXPECT_FALSE(split_prompt(std::vector<int32_t>{1, 2}, img, {p_.images[0]}));
}

} // namespace
} // namespace mosaic
