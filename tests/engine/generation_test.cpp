#include "engine/generation.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/image_encoder.hpp"
#include "engine/model/builtin_model.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic {
namespace {

namespace fs = std::filesystem;

/// builtin:tiny in a fresh temporary directory, loaded once for the suite.
class generation_tiny : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() /
                        ("mosaic-generation-" + std::to_string(std::random_device{}())));
    ASSERT_TRUE(write_builtin_model(builtin_preset::tiny, *dir_));
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }
  void SetUp() override {
    be_ = make_cpu_backend(2);
    auto eng = llava_engine::load(dir_->string(), *be_);
    ASSERT_TRUE(eng) << eng.err().to_string();
    eng_ = std::move(*eng);
    auto enc = image_encoder::create(*be_, eng_->config(), lookup_in(eng_->weights()));
    ASSERT_TRUE(enc);
    std::mt19937 rng(std::random_device{}());
    for (int i = 0; i < 2; ++i) {
      decoded_image img{40, 30, std::vector<uint8_t>(40 * 30 * 3)};
      for (auto& v : img.rgb)
        v = static_cast<uint8_t>(rng());
      auto e = enc->encode(img);
      ASSERT_TRUE(e);
      emb_.push_back(std::move(*e));
      auto c = eng_->compile_image(emb_.back());
      ASSERT_TRUE(c);
      entries_.push_back(std::move(*c));
    }
  }
  std::vector<prompt_image> images(bool cached) const {
    std::vector<prompt_image> v;
    for (size_t i = 0; i < emb_.size(); ++i) {
      prompt_image p;
      p.n_tokens = entries_[i].n_tokens;
      p.embeddings = emb_[i].data();
      p.cached = cached ? &entries_[i] : nullptr;
      v.push_back(p);
    }
    return v;
  }

  static fs::path* dir_;
  std::unique_ptr<backend> be_;
  std::unique_ptr<llava_engine> eng_;
  std::vector<std::vector<float>> emb_;
  std::vector<compiled_image> entries_;
};

fs::path* generation_tiny::dir_ = nullptr;

TEST_F(generation_tiny, prompt_places_images_at_their_markers) {
  const auto& tok = eng_->tokenizer();
  auto text = chat_prompt(tok, "Compare <image> with <image> please", 2);
  ASSERT_TRUE(text);
  auto p = build_prompt(tok, *text, images(true));
  ASSERT_TRUE(p) << p.err().to_string();
  std::vector<segment_kind> kinds;
  for (const auto& part : p->parts)
    kinds.push_back(part.kind);
  const std::vector<segment_kind> want = {segment_kind::text, segment_kind::image,
                                          segment_kind::text, segment_kind::image,
                                          segment_kind::text};
  EXPECT_EQ(kinds, want);
  EXPECT_EQ(p->parts[0].text_ids.front(), tok.bos_id());
  EXPECT_EQ(p->parts[1].image, 0);
  EXPECT_EQ(p->parts[3].image, 1);

  // No markers: images first, as LLaVA does.
  auto first = chat_prompt(tok, "What is this?", 2);
  ASSERT_TRUE(first);
  auto p2 = build_prompt(tok, *first, images(true));
  ASSERT_TRUE(p2);
  EXPECT_EQ(p2->parts[1].kind, segment_kind::image);

  // Marker count must match the images.
  EXPECT_FALSE(chat_prompt(tok, "only <image>", 2));
  EXPECT_FALSE(build_prompt(tok, "<image>", images(true)));
}

TEST_F(generation_tiny, mpic_covering_every_image_token_reproduces_full) {
  const auto& tok = eng_->tokenizer();
  auto text = chat_prompt(tok, "Here <image> and here <image>, what differs?", 2);
  ASSERT_TRUE(text);
  auto fresh = build_prompt(tok, *text, images(false));
  auto linked = build_prompt(tok, *text, images(true));
  ASSERT_TRUE(fresh && linked);
  sampling_params greedy;
  auto full = generate(*eng_, *fresh, *parse_policy("full"), greedy, 6);
  auto mpic = generate(*eng_, *linked, *parse_policy("mpic:64"), greedy, 6);
  ASSERT_TRUE(full) << full.err().to_string();
  ASSERT_TRUE(mpic) << mpic.err().to_string();
  EXPECT_EQ(full->tokens.size(), 6u); // no stop tokens configured
  const agreement a = compare_generations(*full, *mpic);
  EXPECT_TRUE(a.first_token_match);
  EXPECT_LT(a.first_token_kl, 1e-6);
  EXPECT_EQ(a.token_match, 1.0);
  EXPECT_DOUBLE_EQ(mpic->stats.recomputed_fraction, 1.0);

  // Reusing the cache without recompute really skips work.
  auto reuse = generate(*eng_, *linked, *parse_policy("full_reuse"), greedy, 2);
  ASSERT_TRUE(reuse);
  EXPECT_LT(reuse->stats.recomputed_fraction, 0.9);
}

TEST_F(generation_tiny, compression_after_prefill_decodes_from_the_smaller_sequence) {
  const auto& tok = eng_->tokenizer();
  auto text = chat_prompt(tok, "Here <image> and here <image>, what differs?", 2);
  ASSERT_TRUE(text);
  auto p = build_prompt(tok, *text, images(false));
  ASSERT_TRUE(p);
  sampling_params greedy;
  const auto full = *parse_policy("full");
  auto plain = generate(*eng_, *p, full, greedy, 6);
  ASSERT_TRUE(plain) << plain.err().to_string();
  EXPECT_FALSE(plain->compression);

  // Ratio 1 keeps every row: the same tokens as without compression.
  auto keep_all = generate(*eng_, *p, full, greedy, 6, {*parse_compression("keynorm"), nullptr});
  ASSERT_TRUE(keep_all) << keep_all.err().to_string();
  ASSERT_TRUE(keep_all->compression);
  EXPECT_EQ(keep_all->compression->tokens_after, keep_all->compression->tokens_before);
  EXPECT_EQ(keep_all->tokens, plain->tokens);

  // Half the image rows: a smaller sequence that still decodes every token,
  // the first one (from the prefill) unchanged, and the pool back to empty.
  auto half = generate(*eng_, *p, full, greedy, 6, {*parse_compression("snapkv:img=0.5"), nullptr});
  ASSERT_TRUE(half) << half.err().to_string();
  ASSERT_TRUE(half->compression);
  EXPECT_LT(half->compression->bytes_after, half->compression->bytes_before);
  EXPECT_EQ(half->compression->image_after, half->compression->image_before / 2);
  EXPECT_EQ(half->tokens.size(), 6u);
  EXPECT_EQ(half->tokens.front(), plain->tokens.front());
  EXPECT_EQ(eng_->pool().stats().blocks_used, 0);

  // The question's last tokens decoded over the compressed KV: with every
  // row kept, the logits that choose the first token are the prefill's
  // (up to decode-vs-prefill rounding).
  auto asked = generate(*eng_, *p, full, greedy, 6, {*parse_compression("keynorm"), nullptr, 3});
  ASSERT_TRUE(asked) << asked.err().to_string();
  ASSERT_EQ(asked->first_logits.size(), plain->first_logits.size());
  float scale = 0.0f, diff = 0.0f;
  for (size_t i = 0; i < plain->first_logits.size(); ++i) {
    scale = std::max(scale, std::abs(plain->first_logits[i]));
    diff = std::max(diff, std::abs(plain->first_logits[i] - asked->first_logits[i]));
  }
  EXPECT_LT(diff, 1e-3f * scale);
  EXPECT_EQ(asked->compression->tokens_before + 3, keep_all->compression->tokens_before);
  // Holding back more tokens than the prompt's text tail is refused.
  EXPECT_FALSE(generate(*eng_, *p, full, greedy, 6, {*parse_compression("keynorm"), nullptr, 500}));
  EXPECT_EQ(eng_->pool().stats().blocks_used, 0);

  // "learned" without the model's compressor is a clear error.
  auto learned = generate(*eng_, *p, full, greedy, 6, {*parse_compression("learned"), nullptr});
  ASSERT_FALSE(learned);
  EXPECT_NE(learned.err().to_string().find("learned"), std::string::npos);
  EXPECT_EQ(eng_->pool().stats().blocks_used, 0);
}

TEST(generation, agreement_counts_mismatches_and_early_stops) {
  generation_result a, b;
  a.first_logits = {0.0f, 2.0f, 1.0f};
  b.first_logits = {0.0f, 2.0f, 1.5f};
  a.tokens = {1, 2, 3, 4};
  b.tokens = {1, 2, 9};
  b.stopped = true;
  const agreement g = compare_generations(a, b);
  EXPECT_TRUE(g.first_token_match);
  EXPECT_GT(g.first_token_kl, 0.0);
  EXPECT_DOUBLE_EQ(g.token_match, 0.5); // 2 of 4 positions
}

} // namespace
} // namespace mosaic
