// Qwen2-VL image preprocessing against HF transformers 4.49
// (tests/data/hf_qwen2vl_image, tools/golden/make_qwen2vl_image_goldens.py).

#include "engine/model/qwen2vl_image.hpp"

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

fs::path dir() {
  const char* d = std::getenv("MOSAIC_TEST_DATA");
  return d == nullptr ? fs::path{} : fs::path{d} / "hf_qwen2vl_image";
}

json manifest() {
  std::ifstream in(dir() / "goldens.json");
  return json::parse(in, nullptr, false);
}

TEST(qwen2vl_image, smart_resize_equals_hf_including_ties_and_refusals) {
  ASSERT_FALSE(dir().empty()) << "MOSAIC_TEST_DATA (ctest sets it)";
  const json m = manifest();
  ASSERT_TRUE(m.is_object());
  ASSERT_GE(m["smart_resize"].size(), 10u);
  for (const auto& s : m["smart_resize"]) {
    const int h = s["height"], w = s["width"];
    SCOPED_TRACE(std::to_string(h) + "x" + std::to_string(w));
    auto r = smart_resize(h, w, 28, s["min_pixels"], s["max_pixels"]);
    if (s["resized"].is_null()) {
      ASSERT_FALSE(r);
      EXPECT_EQ(r.err().code, errc::invalid_argument);
      continue;
    }
    ASSERT_TRUE(r) << r.err().to_string();
    EXPECT_EQ(r->first, s["resized"][0].get<int>());
    EXPECT_EQ(r->second, s["resized"][1].get<int>());
  }
}

TEST(qwen2vl_image, pixel_values_and_grid_equal_hf) {
  ASSERT_FALSE(dir().empty()) << "MOSAIC_TEST_DATA (ctest sets it)";
  const json m = manifest();
  auto g = safetensors_file::open(dir() / "goldens.safetensors");
  ASSERT_TRUE(g) << g.err().to_string();
  ASSERT_GE(m["cases"].size(), 5u);
  for (size_t i = 0; i < m["cases"].size(); ++i) {
    const auto& c = m["cases"][i];
    SCOPED_TRACE(c["image"].get<std::string>());
    std::ifstream in(dir() / c["image"].get<std::string>(), std::ios::binary);
    const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in),
                                     std::istreambuf_iterator<char>()};
    auto img = decode_image(bytes, {});
    ASSERT_TRUE(img) << img.err().to_string();
    qwen2vl_image_config cfg;
    cfg.min_pixels = c["min_pixels"];
    cfg.max_pixels = c["max_pixels"];
    auto px = preprocess_qwen2vl(*img, cfg);
    ASSERT_TRUE(px) << px.err().to_string();
    EXPECT_EQ(px->grid.t, c["grid"][0].get<int>());
    EXPECT_EQ(px->grid.h, c["grid"][1].get<int>());
    EXPECT_EQ(px->grid.w, c["grid"][2].get<int>());
    auto want = g->read_f32("c" + std::to_string(i) + ".pixel_values");
    ASSERT_TRUE(want) << want.err().to_string();
    ASSERT_EQ(px->values.size(), want->size());
    float worst = 0;
    for (size_t k = 0; k < want->size(); ++k)
      worst = std::max(worst, std::abs(px->values[k] - (*want)[k]));
    EXPECT_LE(worst, 1e-6f);
  }
}

TEST(qwen2vl_image, images_hf_cannot_take_are_refused) {
  decoded_image tiny;
  tiny.width = 20;
  tiny.height = 40;
  tiny.rgb.assign(20 * 40 * 3, 7);
  auto r = preprocess_qwen2vl(tiny, {});
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("at least 28"), std::string::npos) << r.err().message;
  EXPECT_FALSE(smart_resize(100, 100, 28, 5000, 100)); // limits the wrong way round
  EXPECT_FALSE(smart_resize(100, 100, 0, 0, 100));
}

} // namespace
} // namespace mosaic
