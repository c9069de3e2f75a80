// Qwen2-VL's M-RoPE against HF transformers 4.49 (tests/data/hf_mrope,
// tools/golden/make_mrope_goldens.py): position ids of prompts with images
// of several grids at several places, the rotation, and the reuse rule:
// a key rotated where an image was compiled, re-rotated by the 1-D shift
// d, equals the key rotated where HF places the moved image.

#include "engine/mrope.hpp"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/model/safetensors.hpp"

namespace mosaic {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class mrope_test : public ::testing::Test {
protected:
  void SetUp() override {
    const char* d = std::getenv("MOSAIC_TEST_DATA");
    ASSERT_NE(d, nullptr) << "MOSAIC_TEST_DATA (ctest sets it)";
    dir_ = fs::path{d} / "hf_mrope";
    std::ifstream in(dir_ / "goldens.json");
    m_ = json::parse(in, nullptr, false);
    ASSERT_TRUE(m_.is_object());
    auto g = safetensors_file::open(dir_ / "goldens.safetensors");
    ASSERT_TRUE(g) << g.err().to_string();
    g_ = std::make_unique<safetensors_file>(std::move(*g));
    section_ = m_["mrope_section"].get<std::vector<int>>();
    heads_ = m_["heads"];
    head_dim_ = m_["head_dim"];
    theta_ = m_["theta"];
  }

  std::vector<vision_grid> grids(const json& p) const {
    std::vector<vision_grid> out;
    for (const auto& g : p["grids"])
      out.push_back({g[0].get<int>(), g[1].get<int>(), g[2].get<int>()});
    return out;
  }

  result<mrope_positions> positions(const json& p) const {
    return mrope_position_ids(p["ids"].get<std::vector<int32_t>>(), m_["image"].get<int32_t>(),
                              grids(p), m_["merge"].get<int>());
  }

  std::vector<float> tensor(size_t p, const char* what) const {
    auto t = g_->read_f32("p" + std::to_string(p) + "." + what);
    EXPECT_TRUE(t) << t.err().to_string();
    return t ? std::move(*t) : std::vector<float>{};
  }

  fs::path dir_;
  json m_;
  std::unique_ptr<safetensors_file> g_;
  std::vector<int> section_;
  int heads_ = 0, head_dim_ = 0;
  float theta_ = 0;
};

TEST_F(mrope_test, position_ids_and_delta_equal_hf) {
  for (const auto& p : m_["prompts"]) {
    SCOPED_TRACE(p["grids"].dump());
    auto pos = positions(p);
    ASSERT_TRUE(pos) << pos.err().to_string();
    EXPECT_EQ(pos->t, p["positions"][0].get<std::vector<int32_t>>());
    EXPECT_EQ(pos->h, p["positions"][1].get<std::vector<int32_t>>());
    EXPECT_EQ(pos->w, p["positions"][2].get<std::vector<int32_t>>());
    EXPECT_EQ(pos->delta, p["delta"].get<int32_t>());
  }
}

TEST_F(mrope_test, rotation_equals_hf) {
  for (size_t i = 0; i < m_["prompts"].size(); ++i) {
    auto pos = positions(m_["prompts"][i]);
    ASSERT_TRUE(pos);
    auto x = tensor(i, "keys"); // [tokens, heads, head_dim]
    const auto want = tensor(i, "rotated");
    const int rows = static_cast<int>(pos->t.size());
    ASSERT_EQ(x.size(), static_cast<size_t>(rows * heads_ * head_dim_));
    ASSERT_TRUE(mrope_rotate(x.data(), *pos, rows, heads_, head_dim_, section_, theta_));
    float worst = 0;
    for (size_t k = 0; k < x.size(); ++k)
      worst = std::max(worst, std::abs(x[k] - want[k]));
    EXPECT_LT(worst, 2e-5f) << "prompt " << i;
  }
}

TEST_F(mrope_test, a_moved_image_is_placed_by_the_1d_shift_and_text_after_it_follows_hf) {
  // Prompt 0 has image A (1x4x6) after 5 text tokens + vision_start;
  // prompt 1 has the same image after 12 + vision_start.
  auto at0 = positions(m_["prompts"][0]);
  auto at1 = positions(m_["prompts"][1]);
  ASSERT_TRUE(at0);
  ASSERT_TRUE(at1);
  const int image = m_["image"];
  const auto ids0 = m_["prompts"][0]["ids"].get<std::vector<int32_t>>();
  const auto ids1 = m_["prompts"][1]["ids"].get<std::vector<int32_t>>();
  const auto first0 =
      static_cast<size_t>(std::find(ids0.begin(), ids0.end(), image) - ids0.begin());
  const auto first1 =
      static_cast<size_t>(std::find(ids1.begin(), ids1.end(), image) - ids1.begin());
  const int n = 6; // 1 x (4/2) x (6/2)
  const int32_t d = at1->t[first1] - at0->t[first0];
  EXPECT_EQ(d, 7);
  for (int k = 0; k < n; ++k) { // every component moves by the same d
    EXPECT_EQ(at1->t[first1 + k] - at0->t[first0 + k], d);
    EXPECT_EQ(at1->h[first1 + k] - at0->h[first0 + k], d);
    EXPECT_EQ(at1->w[first1 + k] - at0->w[first0 + k], d);
  }
  // The image's keys rotated where it was compiled, then by the 1-D rope
  // with pos = d, equal the same keys rotated at the new place.
  const auto keys = tensor(0, "keys");
  const size_t row = static_cast<size_t>(heads_ * head_dim_);
  std::vector<float> k_img(keys.begin() + static_cast<ptrdiff_t>(first0 * row),
                           keys.begin() + static_cast<ptrdiff_t>((first0 + n) * row));
  mrope_positions old_pos, new_pos;
  for (int k = 0; k < n; ++k) {
    old_pos.t.push_back(at0->t[first0 + k]);
    old_pos.h.push_back(at0->h[first0 + k]);
    old_pos.w.push_back(at0->w[first0 + k]);
    new_pos.t.push_back(at1->t[first1 + k]);
    new_pos.h.push_back(at1->h[first1 + k]);
    new_pos.w.push_back(at1->w[first1 + k]);
  }
  auto cached = k_img;
  ASSERT_TRUE(mrope_rotate(cached.data(), old_pos, n, heads_, head_dim_, section_, theta_));
  auto be = make_cpu_backend(1);
  const std::vector<int32_t> shift(static_cast<size_t>(n), d);
  be->rope(cached.data(), shift.data(), n, heads_, head_dim_, theta_);
  auto fresh = k_img;
  ASSERT_TRUE(mrope_rotate(fresh.data(), new_pos, n, heads_, head_dim_, section_, theta_));
  float worst = 0;
  for (size_t k = 0; k < fresh.size(); ++k)
    worst = std::max(worst, std::abs(fresh[k] - cached[k]));
  EXPECT_LT(worst, 2e-5f);
  // The text after the image continues from its largest position + 1
  // (3 for a 1x2x3 grid), not from its token count (6).
  EXPECT_EQ(at1->t[first1 + n], at1->t[first1] + 3);
}

TEST_F(mrope_test, prompts_that_do_not_match_their_grids_are_refused) {
  const int32_t img = m_["image"];
  const std::vector<int32_t> ids = {1, 2, img, img, img, img, 3};
  const std::vector<vision_grid> four = {{1, 4, 4}}; // 4 tokens at merge 2
  EXPECT_TRUE(mrope_position_ids(ids, img, four, 2));
  const std::vector<vision_grid> six = {{1, 4, 6}};
  EXPECT_FALSE(mrope_position_ids(ids, img, six, 2)); // run too short
  const std::vector<vision_grid> two = {{1, 2, 4}};
  EXPECT_FALSE(mrope_position_ids(ids, img, two, 2)); // run too long
  EXPECT_FALSE(mrope_position_ids(ids, img, {}, 2));  // an image without a grid
  const std::vector<vision_grid> odd = {{1, 3, 4}};
  EXPECT_FALSE(mrope_position_ids(ids, img, odd, 2)); // not whole merges
  const std::vector<vision_grid> extra = {{1, 4, 4}, {1, 2, 2}};
  EXPECT_FALSE(mrope_position_ids(ids, img, extra, 2)); // a grid without an image
  auto pos = mrope_position_ids(ids, img, four, 2);
  std::vector<float> x(7 * 2 * 16, 1.0f);
  const std::vector<int> bad_section = {2, 3, 2};
  EXPECT_FALSE(mrope_rotate(x.data(), *pos, 7, 2, 16, bad_section, 10000.0f));
}

} // namespace
} // namespace mosaic
