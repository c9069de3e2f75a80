#include "engine/policies.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
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

TEST_F(policies_test, cacheblend_computes_everything_at_layer_zero_then_completes) {
  auto plan = build("cacheblend:0.25");
  EXPECT_EQ(plan.compute[0].size(), 75u);
  ASSERT_EQ(plan.completion.layer, 0);
  std::vector<float> dev(75, -1.0f);
  std::mt19937 rng{std::random_device{}()};
  for (int t = 0; t < 75; ++t)
    if (plan.kv[size_t(t)].kind == kv_source_kind::image_entry)
      dev[size_t(t)] = std::uniform_real_distribution<float>{0, 1}(rng);
  ASSERT_TRUE(plan.completion.complete(plan, dev));
  for (int l = 1; l < cfg_.num_layers; ++l) {
    EXPECT_EQ(recomputed(plan, 0, l), 10);
    EXPECT_EQ(recomputed(plan, 1, l), 6);
    EXPECT_EQ(recomputed(plan, 2, l), 5);
  }
  // The chosen tokens of image 0 are its 10 largest deviations.
  std::vector<float> chosen, rest;
  for (int t = 3; t < 43; ++t)
    (std::binary_search(plan.compute[1].begin(), plan.compute[1].end(), t) ? chosen : rest)
        .push_back(dev[size_t(t)]);
  EXPECT_GE(*std::min_element(chosen.begin(), chosen.end()),
            *std::max_element(rest.begin(), rest.end()));
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
