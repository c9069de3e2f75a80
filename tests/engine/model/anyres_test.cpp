// LLaVA-NeXT anyres geometry against HF transformers
// (tests/data/hf_anyres, tools/golden/make_anyres_goldens.py): grid choice,
// views and their pixel values, token count and feature packing, for images
// wide, tall, tiny, and with odd centred padding.

#include "engine/model/anyres.hpp"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <iterator>
#include <nlohmann/json.hpp>

#include "engine/model/safetensors.hpp"

namespace mosaic {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class anyres_test : public ::testing::Test {
protected:
  void SetUp() override {
    const char* data = std::getenv("MOSAIC_TEST_DATA");
    ASSERT_NE(data, nullptr) << "MOSAIC_TEST_DATA (ctest sets it)";
    dir_ = fs::path{data} / "hf_anyres";
    std::ifstream in(dir_ / "goldens.json");
    manifest_ = json::parse(in, nullptr, false);
    ASSERT_TRUE(manifest_.is_object()) << dir_ / "goldens.json";
    for (const auto& p : manifest_["pinpoints"])
      pinpoints_.emplace_back(p[0].get<int>(), p[1].get<int>());
    cfg_.image_size = manifest_["tile"].get<int>();
    cfg_.patch_size = manifest_["patch"].get<int>();
    dim_ = manifest_["dim"].get<int>();
    auto g = safetensors_file::open(dir_ / "goldens.safetensors");
    ASSERT_TRUE(g) << g.err().to_string();
    goldens_ = std::make_unique<safetensors_file>(std::move(*g));
    ASSERT_GE(manifest_["cases"].size(), 10u);
  }

  std::vector<float> golden(const std::string& name) const {
    auto t = goldens_->read_f32(name);
    EXPECT_TRUE(t) << name << ": " << t.err().to_string();
    return t ? std::move(*t) : std::vector<float>{};
  }

  fs::path dir_;
  json manifest_;
  std::vector<resolution> pinpoints_;
  vision_config cfg_;
  int dim_ = 0;
  std::unique_ptr<safetensors_file> goldens_;
};

TEST_F(anyres_test, grid_views_and_token_count_equal_hf) {
  for (const auto& c : manifest_["cases"]) {
    const int h = c["height"], w = c["width"];
    SCOPED_TRACE(std::to_string(h) + "x" + std::to_string(w));
    const auto best = select_best_resolution(h, w, pinpoints_);
    EXPECT_EQ(best.first, c["best"][0].get<int>());
    EXPECT_EQ(best.second, c["best"][1].get<int>());
    const auto grid = anyres_grid_for(h, w, pinpoints_, cfg_.image_size);
    ASSERT_TRUE(grid) << grid.err().to_string();
    EXPECT_EQ(1 + grid->tiles(), c["views"].get<int>());
    const auto count = anyres_feature_count(h, w, pinpoints_, cfg_);
    ASSERT_TRUE(count);
    EXPECT_EQ(*count, c["tokens"].get<int>());
  }
}

TEST_F(anyres_test, pixel_values_equal_hf_within_float_rounding) {
  int checked = 0;
  for (size_t i = 0; i < manifest_["cases"].size(); ++i) {
    const auto& c = manifest_["cases"][i];
    if (!c["pixels"].get<bool>())
      continue;
    SCOPED_TRACE(c["image"].get<std::string>());
    auto img = decode_image(read_bytes(dir_ / c["image"].get<std::string>()), {});
    ASSERT_TRUE(img) << img.err().to_string();
    ASSERT_EQ(img->height, c["height"].get<int>());
    const auto views = anyres_views(*img, pinpoints_, cfg_.image_size);
    ASSERT_TRUE(views);
    ASSERT_EQ(static_cast<int>(views->size()), c["views"].get<int>());
    const auto pixels = preprocess_anyres(*img, pinpoints_, cfg_);
    ASSERT_TRUE(pixels);
    const auto& mine = *pixels;
    const auto want = golden("c" + std::to_string(i) + ".pixel_values");
    ASSERT_EQ(mine.size(), want.size());
    float worst = 0;
    for (size_t k = 0; k < want.size(); ++k)
      worst = std::max(worst, std::abs(mine[k] - want[k]));
    // The same uint8 pixels through the same float32 arithmetic as numpy.
    EXPECT_LE(worst, 1e-6f);
    ++checked;
  }
  EXPECT_GE(checked, 4);
}

TEST_F(anyres_test, odd_padding_leaves_a_short_edge_tile_as_hf_does) {
  // 90x60 into 112x112: resized to 112x75, padded by 18 on each side to
  // 111 wide, so the right-hand tiles are 55 px wide.
  decoded_image img;
  img.width = 60;
  img.height = 90;
  img.rgb.assign(60 * 90 * 3, 200);
  const auto got = anyres_views(img, pinpoints_, cfg_.image_size);
  ASSERT_TRUE(got);
  const auto& views = *got;
  ASSERT_EQ(views.size(), 5u);
  EXPECT_EQ(views[0].width, 56);
  EXPECT_EQ(views[1].width, 56);
  EXPECT_EQ(views[2].width, 55);
  EXPECT_EQ(views[4].width, 55);
  EXPECT_EQ(views[4].height, 56);
  // The padding is black, the image is not.
  EXPECT_EQ(views[1].rgb[0], 0);
  EXPECT_EQ(views[1].rgb[(10 * 56 + 30) * 3], 200);
}

TEST_F(anyres_test, packed_features_equal_hf) {
  const auto newline = golden("newline");
  ASSERT_EQ(static_cast<int>(newline.size()), dim_);
  for (size_t i = 0; i < manifest_["cases"].size(); ++i) {
    const auto& c = manifest_["cases"][i];
    const int h = c["height"], w = c["width"];
    SCOPED_TRACE(std::to_string(h) + "x" + std::to_string(w));
    const auto features = golden("c" + std::to_string(i) + ".features");
    auto packed = pack_anyres_features(features, newline, dim_, h, w, pinpoints_, cfg_);
    ASSERT_TRUE(packed) << packed.err().to_string();
    const auto want = golden("c" + std::to_string(i) + ".packed");
    ASSERT_EQ(packed->size(), want.size());
    EXPECT_EQ(static_cast<int>(want.size()) / dim_, c["tokens"].get<int>());
    EXPECT_EQ(*packed, want); // a permutation: exact
  }
}

TEST_F(anyres_test, empty_images_tiles_and_grid_lists_are_refused) {
  // An image so thin that its unpadded features have no row (HF's
  // pack_image_features fails on it): refused with the reason.
  auto thin = anyres_feature_count(2, 400, pinpoints_, cfg_);
  ASSERT_FALSE(thin);
  EXPECT_NE(thin.err().message.find("too thin"), std::string::npos) << thin.err().message;
  EXPECT_FALSE(anyres_feature_count(400, 2, pinpoints_, cfg_));
  const std::vector<float> newline(static_cast<size_t>(dim_), 1.0f);
  const std::vector<float> feats(static_cast<size_t>(4 * cfg_.num_patches() * dim_), 0.5f);
  EXPECT_FALSE(pack_anyres_features(feats, newline, dim_, 2, 400, pinpoints_, cfg_));
  decoded_image img;
  img.width = 96;
  img.height = 72;
  img.rgb.assign(96 * 72 * 3, 128);
  EXPECT_FALSE(anyres_views(img, pinpoints_, 0));
  EXPECT_FALSE(anyres_views(img, {}, cfg_.image_size));
  EXPECT_FALSE(anyres_feature_count(0, 96, pinpoints_, cfg_));
  EXPECT_FALSE(anyres_grid_for(72, 96, pinpoints_, 0));
  const std::vector<resolution> ragged = {{112, 60}};
  EXPECT_FALSE(preprocess_anyres(img, ragged, cfg_));
}

TEST_F(anyres_test, packing_refuses_wrong_sizes_and_the_full_strategy) {
  const std::vector<float> newline(static_cast<size_t>(dim_), 1.0f);
  const int p2 = cfg_.num_patches();
  std::vector<float> features(static_cast<size_t>(5 * p2 * dim_), 0.5f); // 72x96: 5 views
  ASSERT_TRUE(pack_anyres_features(features, newline, dim_, 72, 96, pinpoints_, cfg_));
  features.pop_back();
  auto r = pack_anyres_features(features, newline, dim_, 72, 96, pinpoints_, cfg_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::invalid_argument);
  features.push_back(0.5f);
  EXPECT_FALSE(
      pack_anyres_features(features, std::span(newline).first(1), dim_, 72, 96, pinpoints_, cfg_));
  EXPECT_FALSE(pack_anyres_features(features, newline, dim_, 0, 96, pinpoints_, cfg_));
  EXPECT_FALSE(pack_anyres_features(features, newline, dim_, 72, 96, {}, cfg_));
  const std::vector<resolution> ragged = {{112, 60}};
  EXPECT_FALSE(pack_anyres_features(features, newline, dim_, 72, 96, ragged, cfg_));
  vision_config full = cfg_;
  full.feature_select = "full";
  EXPECT_FALSE(pack_anyres_features(features, newline, dim_, 72, 96, pinpoints_, full));
}

} // namespace
} // namespace mosaic
