#include "engine/projector.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/cpu/cpu_backend.hpp"
#include "tests/engine/vision_reference.hpp"

namespace mosaic {
namespace {

TEST(projector, matches_linear_gelu_linear_reference) {
  std::mt19937 rng(std::random_device{}());
  model_config cfg;
  cfg.vision.hidden_size = 12;
  cfg.text.hidden_size = 20;
  test::weight_map w;
  test::add_projector_weights(w, rng, 12, 20);
  auto be = make_cpu_backend(2);
  auto proj = projector::create(*be, cfg, w.lookup());
  ASSERT_TRUE(proj) << proj.err().to_string();
  EXPECT_EQ(proj->in_dim(), 12);
  EXPECT_EQ(proj->out_dim(), 20);
  for (int rows : {1, 7, 33}) {
    std::normal_distribution<float> dist(0.0f, 1.5f);
    std::vector<float> feat(static_cast<size_t>(rows) * 12);
    for (float& v : feat)
      v = dist(rng);
    auto got = proj->project_host(feat);
    ASSERT_TRUE(got) << got.err().to_string();
    const test::matrix want =
        test::ref_projector(w, test::matrix(feat.begin(), feat.end()), rows, 12, 20);
    ASSERT_EQ(got->size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR((*got)[i], want[i], 1e-4 * (1.0 + std::abs(want[i]))) << i;
  }
}

TEST(projector, rejects_bad_inputs_with_clear_errors) {
  std::mt19937 rng(1);
  model_config cfg;
  cfg.vision.hidden_size = 8;
  cfg.text.hidden_size = 10;
  test::weight_map w;
  test::add_projector_weights(w, rng, 8, 10);
  auto be = make_cpu_backend(1);

  auto proj = projector::create(*be, cfg, w.lookup());
  ASSERT_TRUE(proj);
  std::vector<float> ragged(13, 0.0f);
  EXPECT_FALSE(proj->project_host(ragged));

  model_config act = cfg;
  act.projector_hidden_act = "swish";
  auto r = projector::create(*be, act, w.lookup());
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("swish"), std::string::npos);

  model_config wide = cfg;
  wide.text.hidden_size = 11;
  auto r2 = projector::create(*be, wide, w.lookup());
  ASSERT_FALSE(r2);
  EXPECT_NE(r2.err().message.find("linear_1.weight"), std::string::npos);
}

} // namespace
} // namespace mosaic
