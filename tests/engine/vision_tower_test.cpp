#include "engine/vision_tower.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/cpu/cpu_backend.hpp"
#include "tests/engine/vision_reference.hpp"

namespace mosaic {
namespace {

vision_config small_config() {
  vision_config c;
  c.image_size = 12;
  c.patch_size = 4; // 9 patches + class token
  c.num_channels = 3;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 3;
  c.num_heads = 4;
  c.feature_layer = -2; // output of layer 1 (two layers run)
  return c;
}

std::vector<float> random_image(std::mt19937& rng, const vision_config& c) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> img(static_cast<size_t>(c.num_channels) * c.image_size * c.image_size);
  for (float& v : img)
    v = dist(rng);
  return img;
}

void expect_matches_reference(const vision_config& c, uint32_t seed) {
  std::mt19937 rng(seed);
  test::weight_map w;
  test::add_vision_weights(w, rng, c);
  auto be = make_cpu_backend(2);
  auto tower = vision_tower::create(*be, c, w.lookup());
  ASSERT_TRUE(tower) << tower.err().to_string();
  for (int trial = 0; trial < 2; ++trial) {
    const std::vector<float> img = random_image(rng, c);
    auto got = tower->encode_host(img);
    ASSERT_TRUE(got) << got.err().to_string();
    const test::matrix want = test::ref_vision_tower(w, c, img);
    ASSERT_EQ(got->size(), want.size());
    ASSERT_EQ(got->size(), static_cast<size_t>(tower->output_tokens()) * c.hidden_size);
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR((*got)[i], want[i], 2e-4 * (1.0 + std::abs(want[i]))) << "element " << i;
  }
}

TEST(vision_tower, matches_scalar_reference_with_feature_layer_minus_two) {
  expect_matches_reference(small_config(), std::random_device{}());
}

TEST(vision_tower, honours_gelu_full_select_and_other_feature_layers) {
  vision_config c = small_config();
  c.hidden_act = "gelu";
  c.feature_select = "full";
  c.feature_layer = -1; // every layer
  expect_matches_reference(c, std::random_device{}());
  c.feature_layer = 0; // embeddings only (after pre_layrnorm)
  c.hidden_act = "quick_gelu";
  expect_matches_reference(c, std::random_device{}());
}

TEST(vision_tower, runs_only_layers_up_to_the_feature_layer) {
  // Layer 2 is never run with feature_layer -2: its weights may be absent.
  vision_config c = small_config();
  std::mt19937 rng(7);
  test::weight_map w;
  test::add_vision_weights(w, rng, c);
  for (auto it = w.tensors.begin(); it != w.tensors.end();)
    it = it->first.find("layers.2.") != std::string::npos ? w.tensors.erase(it) : std::next(it);
  auto be = make_cpu_backend(1);
  EXPECT_TRUE(vision_tower::create(*be, c, w.lookup()));
}

TEST(vision_tower, missing_or_misshapen_tensor_is_a_clear_error) {
  vision_config c = small_config();
  std::mt19937 rng(3);
  test::weight_map w;
  test::add_vision_weights(w, rng, c);
  auto be = make_cpu_backend(1);

  test::weight_map missing = w;
  missing.tensors.erase(test::vision_layer(1, "mlp.fc1.weight"));
  auto r = vision_tower::create(*be, c, missing.lookup());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::not_found);
  EXPECT_NE(r.err().message.find("layers.1.mlp.fc1.weight"), std::string::npos);

  test::weight_map bad = w;
  bad.add_random(rng, test::vision_layer(0, "self_attn.k_proj.weight"), {16, 8}, 0.1f);
  auto r2 = vision_tower::create(*be, c, bad.lookup());
  ASSERT_FALSE(r2);
  EXPECT_NE(r2.err().message.find("k_proj.weight"), std::string::npos);
  EXPECT_NE(r2.err().message.find("[16, 8]"), std::string::npos);
}

TEST(vision_tower, rejects_wrong_image_size_and_bad_config) {
  vision_config c = small_config();
  std::mt19937 rng(5);
  test::weight_map w;
  test::add_vision_weights(w, rng, c);
  auto be = make_cpu_backend(1);
  auto tower = vision_tower::create(*be, c, w.lookup());
  ASSERT_TRUE(tower);
  std::vector<float> wrong(10, 0.0f);
  auto r = tower->encode_host(wrong);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::invalid_argument);

  vision_config odd = c;
  odd.image_size = 13;
  EXPECT_FALSE(vision_tower::create(*be, odd, w.lookup()));
  vision_config act = c;
  act.hidden_act = "relu6";
  EXPECT_FALSE(vision_tower::create(*be, act, w.lookup()));
}

} // namespace
} // namespace mosaic
