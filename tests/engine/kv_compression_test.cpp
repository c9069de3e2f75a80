#include "engine/kv_compression.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <random>

#include "decoder_fixture.hpp"
#include "engine/decoder.hpp"
#include "engine/policies.hpp"
#include "engine/prefill.hpp"
#include "forward_test_model.hpp"

namespace mosaic {
namespace {

class kv_compression_test : public testing::decoder_fixture {
protected:
  kv_compression_test() : decoder_fixture(2) {}

  void SetUp() override {
    decoder_fixture::SetUp();
    pool_ = make_pool(128, 4);
    ASSERT_NE(pool_, nullptr);
  }

  /// text(a) image(n_img) text(b), prefilled with the full policy.
  struct prefilled {
    std::vector<float> image; // [n_img, hidden]
    link_plan plan;
    kv_sequence sequence;
  };
  prefilled prefill(int a, int n_img, int b, const std::vector<int32_t>& ids,
                    const std::vector<float>& emb) {
    prefilled out;
    out.image = emb;
    prompt p;
    p.images.push_back({"img", n_img, nullptr, out.image.data()});
    p.parts.push_back({segment_kind::text, {ids.begin(), ids.begin() + a}, -1});
    p.parts.push_back({segment_kind::image, {}, 0});
    p.parts.push_back({segment_kind::text, {ids.begin() + a, ids.begin() + a + b}, -1});
    auto plan = build_link_plan(p, *parse_policy("full"), cfg_);
    EXPECT_TRUE(plan) << plan.err().to_string();
    out.plan = std::move(*plan);
    auto r = run_prefill(*be_, weights_, *pool_, out.plan);
    EXPECT_TRUE(r) << r.err().to_string();
    out.sequence = std::move(r->sequence);
    return out;
  }

  /// Decodes `tokens` one by one starting at `position`; returns all logits.
  std::vector<float> decode(kv_sequence& seq, int32_t position,
                            const std::vector<int32_t>& tokens) {
    std::vector<float> all;
    for (size_t i = 0; i < tokens.size(); ++i) {
      decode_input in{&seq, tokens[i], position + static_cast<int32_t>(i)};
      auto logits = decode_step(*be_, weights_, *pool_, {&in, 1});
      EXPECT_TRUE(logits) << logits.err().to_string();
      if (!logits)
        return all;
      all.insert(all.end(), logits->begin(), logits->end());
    }
    return all;
  }

  /// Layer l's K row of every token of `seq` (host copy).
  std::vector<float> k_rows(const kv_sequence& seq, int l) {
    const int kv = cfg_.kv_dim();
    std::vector<float> out(static_cast<size_t>(seq.length()) * kv);
    for (int t = 0; t < seq.length(); ++t) {
      auto st = be_->download(out.data() + static_cast<size_t>(t) * kv,
                              pool_->k_layer(l) + static_cast<size_t>(seq.slot(t)) * kv,
                              sizeof(float) * static_cast<size_t>(kv));
      EXPECT_TRUE(st);
    }
    return out;
  }

  std::unique_ptr<kv_pool> pool_;
};

TEST_F(kv_compression_test, ratio_one_decodes_exactly_like_the_uncompressed_sequence) {
  SCOPED_TRACE(trace());
  const auto ids = model_->random_ids(12);
  const auto emb = model_->random_embeddings(9);
  const auto steps = model_->random_ids(4);
  for (const char* spec_text : {"none", "snapkv:img=1,txt=1", "keynorm:img=1,txt=1",
                                "streaming:img=1,txt=1,sink=2,recent=3"}) {
    SCOPED_TRACE(spec_text);
    auto ref = prefill(5, 9, 7, ids, emb);
    const auto expected = decode(ref.sequence, ref.sequence.length(), steps);
    auto x = prefill(5, 9, 7, ids, emb);
    auto c = compress_kv(*be_, weights_, *pool_, x.sequence, x.plan, *parse_compression(spec_text));
    ASSERT_TRUE(c) << c.err().to_string();
    EXPECT_FALSE(x.sequence.valid()); // consumed
    EXPECT_EQ(c->stats.tokens_after, 21);
    EXPECT_EQ(c->next_position, 21);
    const auto got = decode(c->sequence, c->next_position, steps);
    ASSERT_EQ(got.size(), expected.size());
    float max_diff = 0.0f;
    for (size_t i = 0; i < got.size(); ++i)
      max_diff = std::max(max_diff, std::abs(got[i] - expected[i]));
    EXPECT_LE(max_diff, 1e-6f);
  }
  EXPECT_EQ(pool_->stats().blocks_used, 0);
}

TEST_F(kv_compression_test, compressed_sequences_keep_the_right_rows_and_decode) {
  SCOPED_TRACE(trace());
  std::mt19937 rng(seed_);
  const int a = 3 + int(rng() % 4), n_img = 12 + int(rng() % 8), b = 6 + int(rng() % 4);
  const int n = a + n_img + b;
  const auto ids = model_->random_ids(a + b);
  const auto emb = model_->random_embeddings(n_img);
  for (const char* spec_text :
       {"snapkv:img=0.25,txt=0.5,window=4,pool=3", "keynorm:img=0.3,txt=0.6",
        "streaming:img=0.5,txt=0.5,sink=2,recent=3"}) {
    SCOPED_TRACE(spec_text);
    const auto spec = *parse_compression(spec_text);
    auto x = prefill(a, n_img, b, ids, emb);
    std::vector<std::vector<float>> before;
    for (int l = 0; l < cfg_.num_layers; ++l)
      before.push_back(k_rows(x.sequence, l));
    const size_t used_before = pool_->stats().bytes_used;
    auto c = compress_kv(*be_, weights_, *pool_, x.sequence, x.plan, spec);
    ASSERT_TRUE(c) << c.err().to_string();
    EXPECT_FALSE(x.sequence.valid());
    EXPECT_LT(pool_->stats().bytes_used, used_before);
    const int m = c->stats.tokens_after;
    EXPECT_EQ(c->sequence.length(), m);
    EXPECT_EQ(c->next_position, n);
    EXPECT_EQ(c->stats.image_before, n_img);
    EXPECT_GE(c->stats.image_after, kept_count(n_img, spec.image_ratio));
    EXPECT_LT(m, n);
    for (int l = 0; l < cfg_.num_layers; ++l) {
      const auto& kept = c->kept[size_t(l)];
      ASSERT_EQ(int(kept.size()), m);
      EXPECT_TRUE(std::is_sorted(kept.begin(), kept.end()));
      EXPECT_EQ(kept.back(), n - 1); // the last token always stays
      // Row i holds the original row kept[i], unchanged (RoPE included).
      const auto after = k_rows(c->sequence, l);
      const int kv = cfg_.kv_dim();
      for (int i = 0; i < m; ++i)
        for (int d = 0; d < kv; ++d)
          ASSERT_EQ(after[size_t(i) * kv + d], before[size_t(l)][size_t(kept[size_t(i)]) * kv + d]);
      if (spec.method == compression_method::keynorm) {
        // Low-norm keys are kept: every kept image key is no longer than
        // every dropped one.
        auto norm = [&](int t) {
          double s = 0;
          for (int d = 0; d < kv; ++d)
            s += std::pow(before[size_t(l)][size_t(t) * kv + d], 2);
          return s;
        };
        double max_kept = 0, min_dropped = 1e300;
        for (int t = a; t < a + n_img; ++t) {
          if (std::binary_search(kept.begin(), kept.end(), t))
            max_kept = std::max(max_kept, norm(t));
          else
            min_dropped = std::min(min_dropped, norm(t));
        }
        EXPECT_LE(max_kept, min_dropped);
      }
      if (spec.method == compression_method::streaming) {
        EXPECT_EQ(kept.front(), 0);
        EXPECT_TRUE(std::binary_search(kept.begin(), kept.end(), 1)); // sink 2
      }
    }
    const auto steps = model_->random_ids(3);
    const auto logits = decode(c->sequence, c->next_position, steps);
    ASSERT_EQ(logits.size(), steps.size() * size_t(cfg_.vocab_size));
    for (float v : logits)
      ASSERT_TRUE(std::isfinite(v));
    EXPECT_EQ(c->sequence.length(), m + 3);
  }
  EXPECT_EQ(pool_->stats().blocks_used, 0);
  EXPECT_EQ(pool_->stats().sequences, 0);
}

TEST_F(kv_compression_test, out_of_memory_leaves_the_input_usable) {
  SCOPED_TRACE(trace());
  auto small = kv_pool::create(*be_, cfg_.num_layers, cfg_.kv_dim(), {6, 4});
  ASSERT_TRUE(small);
  pool_ = std::move(*small);
  const auto ids = model_->random_ids(8);
  const auto emb = model_->random_embeddings(12);
  auto x = prefill(4, 12, 4, ids, emb); // 20 tokens = 5 of 6 blocks
  ASSERT_TRUE(x.sequence.valid());
  auto c = compress_kv(*be_, weights_, *pool_, x.sequence, x.plan,
                       *parse_compression("keynorm:img=0.5,txt=0.5"));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.err().code, errc::out_of_memory);
  ASSERT_TRUE(x.sequence.valid());
  EXPECT_EQ(x.sequence.length(), 20);
  const auto logits = decode(x.sequence, 20, model_->random_ids(1));
  EXPECT_EQ(logits.size(), size_t(cfg_.vocab_size));
}

TEST_F(kv_compression_test, rejects_a_plan_that_does_not_match_the_sequence) {
  const auto ids = model_->random_ids(8);
  const auto emb = model_->random_embeddings(4);
  auto x = prefill(4, 4, 4, ids, emb);
  link_plan other = x.plan;
  other.positions.pop_back();
  auto c = compress_kv(*be_, weights_, *pool_, x.sequence, other, *parse_compression("keynorm"));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.err().code, errc::invalid_argument);
  EXPECT_TRUE(x.sequence.valid());
}

// Measures (does not assert) how often the first decoded token's argmax
// agrees with the uncompressed one, on random tiny models: reported in
// docs/fastcache.md.
TEST_F(kv_compression_test, measures_first_token_agreement) {
  SCOPED_TRACE(trace());
  for (const char* spec_text : {"snapkv:img=0.75,txt=0.75", "keynorm:img=0.75,txt=0.75",
                                "streaming:img=0.75,txt=0.75", "snapkv:img=0.25,txt=0.5"}) {
    int agree = 0;
    const int trials = 16;
    for (int trial = 0; trial < trials; ++trial) {
      const auto ids = model_->random_ids(12);
      const auto emb = model_->random_embeddings(24);
      const auto tok = model_->random_ids(1);
      auto ref = prefill(4, 24, 8, ids, emb);
      const auto e = decode(ref.sequence, 36, tok);
      auto x = prefill(4, 24, 8, ids, emb);
      auto c =
          compress_kv(*be_, weights_, *pool_, x.sequence, x.plan, *parse_compression(spec_text));
      ASSERT_TRUE(c) << c.err().to_string();
      const auto g = decode(c->sequence, c->next_position, tok);
      ASSERT_EQ(g.size(), e.size());
      agree += std::max_element(g.begin(), g.end()) - g.begin() ==
               std::max_element(e.begin(), e.end()) - e.begin();
    }
    std::cout << "[ measured ] " << spec_text << ": first-token argmax agreement " << agree << "/"
              << trials << "\n";
  }
  EXPECT_EQ(pool_->stats().blocks_used, 0);
}

} // namespace
} // namespace mosaic
