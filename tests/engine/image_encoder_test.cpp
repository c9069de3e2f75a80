#include "engine/image_encoder.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/model/builtin_model.hpp"
#include "engine/model/weights.hpp"

namespace mosaic {
namespace {

namespace fs = std::filesystem;

/// builtin:tiny written into a fresh temporary directory (not the user's cache).
class image_encoder_tiny : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mosaic-image-encoder-" + std::to_string(std::random_device{}()));
    ASSERT_TRUE(write_builtin_model(builtin_preset::tiny, dir_));
    auto cfg = load_model_config(dir_);
    ASSERT_TRUE(cfg) << cfg.err().to_string();
    cfg_ = *cfg;
    auto w = model_weights::load(dir_, cfg_);
    ASSERT_TRUE(w) << w.err().to_string();
    weights_ = std::make_unique<model_weights>(std::move(*w));
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path dir_;
  model_config cfg_;
  std::unique_ptr<model_weights> weights_;
};

decoded_image random_image(std::mt19937& rng, int width, int height) {
  decoded_image img;
  img.width = width;
  img.height = height;
  img.rgb.resize(static_cast<size_t>(width) * height * 3);
  std::uniform_int_distribution<int> dist(0, 255);
  for (uint8_t& v : img.rgb)
    v = static_cast<uint8_t>(dist(rng));
  return img;
}

TEST_F(image_encoder_tiny, yields_one_decoder_embedding_row_per_image_token) {
  auto be = make_cpu_backend(2);
  auto enc = image_encoder::create(*be, cfg_, lookup_in(*weights_));
  ASSERT_TRUE(enc) << enc.err().to_string();
  EXPECT_EQ(enc->view_tokens(), cfg_.image_tokens());
  EXPECT_EQ(enc->view_tokens(), 16);
  EXPECT_EQ(enc->hidden(), cfg_.text.hidden_size);

  std::mt19937 rng(std::random_device{}());
  const decoded_image a = random_image(rng, 53, 31); // odd, non-square size
  auto ea = enc->encode(a);
  ASSERT_TRUE(ea) << ea.err().to_string();
  ASSERT_EQ(ea->size(), static_cast<size_t>(cfg_.image_tokens()) * cfg_.text.hidden_size);
  for (float v : *ea)
    ASSERT_TRUE(std::isfinite(v));

  // Same pixels → same embeddings; the preprocessed path agrees.
  auto again = enc->encode_preprocessed(preprocess_image(a, cfg_.vision));
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *ea);

  // Different pixels → different embeddings.
  auto eb = enc->encode(random_image(rng, 53, 31));
  ASSERT_TRUE(eb);
  EXPECT_NE(*eb, *ea);
}

TEST_F(image_encoder_tiny, rejects_an_empty_image) {
  auto be = make_cpu_backend(1);
  auto enc = image_encoder::create(*be, cfg_, lookup_in(*weights_));
  ASSERT_TRUE(enc);
  auto r = enc->encode(decoded_image{});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::invalid_argument);
}

} // namespace
} // namespace mosaic
