// Fidelity against HF transformers for LLaVA-1.6 (anyres) with a Mistral
// decoder: tests/data/hf_tiny_llava_next/, a tiny random
// LlavaNextForConditionalGeneration saved by transformers 4.49, with what
// transformers (PyTorch, CPU, float32) computes on four prompts of one to
// three images of different sizes (tools/golden/make_llava_next_goldens.py).
// Mosaic must load the same directory and reproduce, stage by stage: the
// token ids before and after HF's processor expands each <image> to its
// size-dependent count, every view's pixels, the vision tower's features
// per view, the packed image embeddings (projected, unpadded, with
// image_newline), the last position's logits and the greedy continuation;
// and linking each image's compiled KV at its new place with a policy that
// recomputes every token gives the plain prefill's logits.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/image_encoder.hpp"
#include "engine/llava_engine.hpp"
#include "engine/model/anyres.hpp"
#include "engine/model/image.hpp"
#include "engine/model/safetensors.hpp"
#include "engine/sampler.hpp"
#include "engine/vision_tower.hpp"
#include "tests/engine/fidelity_util.hpp"

namespace mosaic {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// As hf_fidelity_test.cpp: the model stages sum in another order than
// PyTorch; measured max relative errors are <= 1.1e-6 (features, packed
// embeddings, logits), so 1e-4 leaves two orders of magnitude. Pixels:
// measured exact on these images; 1e-6 as engine_model_anyres_test (the
// anyres resize runs in float before the CLIP resample).
constexpr double pixel_tolerance = 1e-6;
constexpr double rel_tolerance = 1e-4;

fs::path fixture() {
  const char* env = std::getenv("MOSAIC_TEST_DATA");
  return fs::path(env != nullptr ? env : "tests/data") / "hf_tiny_llava_next";
}

using test::max_abs_error;
using test::max_rel_error;

struct golden_prompt {
  std::string text;
  std::vector<std::string> images;
  std::vector<int> image_tokens;
  std::vector<int32_t> input_ids, expanded_input_ids, greedy_tokens;
};

class hf_llava_next : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    std::ifstream in(fixture() / "goldens" / "goldens.json");
    ASSERT_TRUE(in) << "missing " << fixture() << " (make_llava_next_goldens.py writes it)";
    const json m = json::parse(in, nullptr, false);
    ASSERT_TRUE(m.is_object());
    prompts_ = new std::vector<golden_prompt>;
    for (const auto& p : m["prompts"])
      prompts_->push_back({p["text"], p["images"], p["image_tokens"], p["input_ids"],
                           p["expanded_input_ids"], p["greedy_tokens"]});
    auto g = safetensors_file::open(fixture() / "goldens" / "goldens.safetensors");
    ASSERT_TRUE(g) << g.err().to_string();
    goldens_ = new safetensors_file(std::move(*g));
    be_ = make_cpu_backend(2).release();
    auto e = llava_engine::load(fixture().string(), *be_, {64, 16});
    ASSERT_TRUE(e) << e.err().to_string();
    engine_ = e->release();
    auto enc = image_encoder::create(*be_, engine_->config(), lookup_in(engine_->weights()));
    ASSERT_TRUE(enc) << enc.err().to_string();
    encoder_ = new image_encoder(std::move(*enc));
  }
  static void TearDownTestSuite() {
    delete encoder_;
    delete engine_;
    delete be_;
    delete goldens_;
    delete prompts_;
  }

  static const model_config& cfg() { return engine_->config(); }
  static std::vector<float> golden(const std::string& name) {
    auto t = goldens_->read_f32(name);
    EXPECT_TRUE(t) << name << ": " << t.err().to_string();
    return t ? std::move(*t) : std::vector<float>{};
  }
  static std::string key(size_t p, size_t i, const char* what) {
    return "p" + std::to_string(p) + ".i" + std::to_string(i) + "." + what;
  }
  static decoded_image png(const std::string& name) {
    std::ifstream in(fixture() / "goldens" / name, std::ios::binary);
    std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), {}};
    auto img = decode_image(bytes, image_limits{});
    EXPECT_TRUE(img) << name << ": " << img.err().to_string();
    return img ? std::move(*img) : decoded_image{};
  }
  /// Mosaic's embeddings of prompt p's images, encoded from the PNGs.
  static std::vector<std::vector<float>> encode(size_t p) {
    std::vector<std::vector<float>> out;
    for (const auto& f : (*prompts_)[p].images) {
      auto e = encoder_->encode(png(f));
      EXPECT_TRUE(e) << f << ": " << e.err().to_string();
      out.push_back(e ? std::move(*e) : std::vector<float>{});
    }
    return out;
  }
  /// Prompt p with its images' embeddings (and compiled entries, when given).
  static prompt make_prompt(size_t p, const std::vector<std::vector<float>>& emb,
                            const std::vector<compiled_image>* entries = nullptr) {
    std::vector<prompt_image> images;
    for (size_t i = 0; i < emb.size(); ++i)
      images.push_back({"image-" + std::to_string(i),
                        int(emb[i].size() / size_t(cfg().text.hidden_size)),
                        entries != nullptr ? &(*entries)[i] : nullptr, emb[i].data()});
    auto pr = split_prompt((*prompts_)[p].input_ids, cfg().image_token_index, std::move(images));
    EXPECT_TRUE(pr) << pr.err().to_string();
    return pr ? std::move(*pr) : prompt{};
  }
  static prefill_result run(const prompt& pr, const char* policy) {
    return test::prefill_with(*engine_, pr, policy);
  }

  static inline std::vector<golden_prompt>* prompts_ = nullptr;
  static inline safetensors_file* goldens_ = nullptr;
  static inline backend* be_ = nullptr;
  static inline llava_engine* engine_ = nullptr;
  static inline image_encoder* encoder_ = nullptr;
};

TEST_F(hf_llava_next, config_is_anyres_with_a_mistral_decoder_and_counts_tokens_as_hf) {
  EXPECT_TRUE(cfg().anyres());
  EXPECT_EQ(cfg().text.model_type, "mistral");
  EXPECT_EQ(cfg().text.sliding_window, 0);
  EXPECT_EQ(cfg().vision.grid_pinpoints.size(), 5u);
  // The largest grid (112 x 112: 8 x 8 features, 8 newlines) after the
  // 4 x 4 base view.
  EXPECT_EQ(cfg().image_tokens(), 16 + 8 * 9);
  size_t checked = 0;
  for (const auto& g : *prompts_)
    for (size_t i = 0; i < g.images.size(); ++i, ++checked) {
      const auto img = png(g.images[i]);
      auto n = cfg().image_tokens_for(img.height, img.width);
      ASSERT_TRUE(n) << n.err().to_string();
      EXPECT_EQ(*n, g.image_tokens[i]) << g.images[i];
    }
  EXPECT_EQ(checked, 7u);
}

TEST_F(hf_llava_next, prompt_ids_match_hf_before_and_after_image_expansion) {
  for (size_t p = 0; p < prompts_->size(); ++p) {
    const auto& g = (*prompts_)[p];
    EXPECT_EQ(engine_->tokenizer().encode_prompt(g.text), g.input_ids) << g.text;
    std::vector<std::vector<float>> none;
    for (int n : g.image_tokens)
      none.emplace_back(size_t(n) * size_t(cfg().text.hidden_size));
    EXPECT_EQ(test::expanded_ids(make_prompt(p, none), cfg().image_token_index),
              g.expanded_input_ids)
        << g.text;
  }
}

TEST_F(hf_llava_next, views_vision_features_and_packed_embeddings_match_hf) {
  auto tower = vision_tower::create(*be_, cfg().vision, lookup_in(engine_->weights()));
  ASSERT_TRUE(tower) << tower.err().to_string();
  const size_t view = 3u * size_t(cfg().vision.image_size) * size_t(cfg().vision.image_size);
  for (size_t p = 0; p < prompts_->size(); ++p) {
    const auto& g = (*prompts_)[p];
    const auto emb = encode(p);
    for (size_t i = 0; i < g.images.size(); ++i) {
      SCOPED_TRACE("prompt " + std::to_string(p) + " image " + g.images[i]);
      const auto hf_pixels = golden(key(p, i, "pixel_values"));
      auto mine = preprocess_anyres(png(g.images[i]), cfg().vision.grid_pinpoints, cfg().vision);
      ASSERT_TRUE(mine) << mine.err().to_string();
      EXPECT_LE(max_abs_error(*mine, hf_pixels), pixel_tolerance);
      // The tower on HF's pixels, view by view.
      const auto hf_features = golden(key(p, i, "vision_features"));
      const size_t views = hf_pixels.size() / view;
      const size_t per = hf_features.size() / views;
      for (size_t v = 0; v < views; ++v) {
        auto f = tower->encode_host(std::span<const float>(hf_pixels).subspan(v * view, view));
        ASSERT_TRUE(f) << f.err().to_string();
        EXPECT_LE(max_rel_error(*f, {hf_features.begin() + std::ptrdiff_t(v * per),
                                     hf_features.begin() + std::ptrdiff_t((v + 1) * per)}),
                  rel_tolerance)
            << "view " << v;
      }
      // The whole encoder, from the PNG.
      const auto hf_emb = golden(key(p, i, "image_embeddings"));
      EXPECT_EQ(emb[i].size(), size_t(g.image_tokens[i]) * size_t(cfg().text.hidden_size));
      EXPECT_LE(max_rel_error(emb[i], hf_emb), rel_tolerance);
    }
  }
}

TEST_F(hf_llava_next, the_encoder_pauses_between_views_and_stops_on_an_error) {
  // image_0 (96 x 72): the base view and a 2 x 2 grid, so four pauses.
  const auto img = png("image_0.png");
  int pauses = 0;
  auto e = encoder_->encode(img, [&]() -> status {
    ++pauses;
    return {};
  });
  ASSERT_TRUE(e) << e.err().to_string();
  EXPECT_EQ(pauses, 4);
  EXPECT_EQ(*e, *encoder_->encode(img)); // pausing changes nothing
  auto stopped = encoder_->encode(
      img, []() -> status { return make_error(errc::cancelled, "the request was cancelled"); });
  ASSERT_FALSE(stopped);
  EXPECT_EQ(stopped.err().code, errc::cancelled);
}

TEST_F(hf_llava_next, full_prefill_logits_and_greedy_continuation_equal_hf) {
  for (size_t p = 0; p < prompts_->size(); ++p) {
    const auto& g = (*prompts_)[p];
    SCOPED_TRACE(g.text);
    const auto emb = encode(p);
    auto r = run(make_prompt(p, emb), "full");
    ASSERT_TRUE(r.sequence.valid());
    EXPECT_EQ(r.sequence.length(), int(g.expanded_input_ids.size()));
    EXPECT_LE(max_rel_error(r.logits, golden("p" + std::to_string(p) + ".logits")), rel_tolerance);
    EXPECT_EQ(test::greedy_continuation(*engine_, r, g.greedy_tokens.size()), g.greedy_tokens);
  }
}

TEST_F(hf_llava_next, cached_images_linked_at_new_places_with_full_recompute_equal_the_prefill) {
  // Prompt 3 holds three images of 36, 70 and 72 tokens after text; each
  // was compiled alone at positions 0..n-1.
  const size_t p = 3;
  const auto emb = encode(p);
  std::vector<compiled_image> entries;
  for (const auto& e : emb) {
    auto c = engine_->compile_image(e);
    ASSERT_TRUE(c) << c.err().to_string();
    entries.push_back(std::move(*c));
  }
  const auto plain = run(make_prompt(p, emb), "full");
  // mpic:k with k at least the largest image recomputes every token.
  const std::string all = "mpic:" + std::to_string(cfg().image_tokens());
  const auto linked = run(make_prompt(p, emb, &entries), all.c_str());
  EXPECT_LE(max_rel_error(linked.logits, plain.logits), rel_tolerance);
  EXPECT_EQ(argmax(linked.logits), (*prompts_)[p].greedy_tokens[0]);
  // mpic:8 reuses the rest of each image's KV, rotated to its new place.
  const auto reused = run(make_prompt(p, emb, &entries), "mpic:8");
  ASSERT_EQ(reused.logits.size(), plain.logits.size());
  EXPECT_GT(max_rel_error(reused.logits, plain.logits), 0.0);
  EXPECT_EQ(reused.sequence.length(), plain.sequence.length());
}

} // namespace
} // namespace mosaic
