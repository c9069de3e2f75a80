#include "engine/prefill.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "decoder_fixture.hpp"
#include "engine/policies.hpp"
#include "forward_test_model.hpp"

namespace mosaic {
namespace {

using testing::max_rel_error;

class prefill_test : public testing::decoder_fixture {
protected:
  prefill_test() : decoder_fixture(3) {}

  void SetUp() override {
    decoder_fixture::SetUp();
    pool_ = make_pool(96, 4);
    ASSERT_NE(pool_, nullptr);
  }

  /// Input embeddings of a prompt, as the reference sees them.
  std::vector<float> inputs(const prompt& p) const {
    std::vector<float> x;
    for (const auto& part : p.parts) {
      if (part.kind == segment_kind::text) {
        auto e = model_->embed(part.text_ids);
        x.insert(x.end(), e.begin(), e.end());
      } else {
        const auto& img = p.images[size_t(part.image)];
        const float* emb = img.embeddings ? img.embeddings : img.cached->embeddings.data();
        x.insert(x.end(), emb, emb + size_t(img.n_tokens) * cfg_.hidden_size);
      }
    }
    return x;
  }

  prefill_result run(const prompt& p, std::string_view policy, const prefix_kv& prefix = {}) {
    auto spec = parse_policy(policy);
    EXPECT_TRUE(spec);
    auto plan = build_link_plan(p, *spec, cfg_, prefix);
    EXPECT_TRUE(plan) << plan.err().to_string();
    auto r = run_prefill(*be_, weights_, *pool_, *plan);
    EXPECT_TRUE(r) << r.err().to_string();
    return std::move(*r);
  }

  compiled_image compile(const std::vector<float>& emb) {
    const int n = int(emb.size()) / cfg_.hidden_size;
    auto c = compile_image(*be_, weights_, *pool_, emb.data(), n);
    EXPECT_TRUE(c) << c.err().to_string();
    return std::move(*c);
  }

  /// text(a) image text(b)
  prompt text_image_text(int a, const prompt_image& img, int b) {
    prompt p;
    p.images.push_back(img);
    p.parts.push_back({segment_kind::text, model_->random_ids(a), -1});
    p.parts.push_back({segment_kind::image, {}, 0});
    p.parts.push_back({segment_kind::text, model_->random_ids(b), -1});
    return p;
  }

  /// Downloads layer `l`'s K of the sequence's tokens [begin, end).
  std::vector<float> pool_keys(const kv_sequence& s, int l, int begin, int end) {
    const int kv = cfg_.kv_dim();
    std::vector<float> out(size_t(end - begin) * kv);
    for (int t = begin; t < end; ++t)
      EXPECT_TRUE(be_->download(out.data() + size_t(t - begin) * kv,
                                pool_->k_layer(l) + size_t(s.slot(t)) * kv, kv * sizeof(float)));
    return out;
  }

  std::unique_ptr<kv_pool> pool_;
};

TEST_F(prefill_test, full_plan_equals_plain_prefill) {
  SCOPED_TRACE(trace());
  auto emb = model_->random_embeddings(7);
  auto p = text_image_text(5, {"img", 7, nullptr, emb.data()}, 4);
  auto r = run(p, "full");
  EXPECT_LE(max_rel_error(r.logits, model_->reference_logits(inputs(p))), 1e-5);
  EXPECT_EQ(r.sequence.length(), 16);
  EXPECT_DOUBLE_EQ(r.stats.recomputed_fraction, 1.0);
}

TEST_F(prefill_test, prefix_plan_equals_plain_prefill) {
  SCOPED_TRACE(trace());
  auto emb = model_->random_embeddings(6);
  auto p = text_image_text(4, {"img", 6, nullptr, emb.data()}, 5);
  // A previous prompt that shares the first 12 tokens (text + image + 2).
  prompt prev = p;
  prev.parts[2].text_ids.resize(2);
  auto tail = model_->random_ids(3);
  prev.parts.push_back({segment_kind::text, tail, -1});
  auto first = run(prev, "full");
  const int shared = 12;
  auto r = run(p, "prefix", {&first.sequence, shared});
  EXPECT_LE(max_rel_error(r.logits, model_->reference_logits(inputs(p))), 1e-5);
  EXPECT_EQ(r.stats.reused_prefix_tokens, shared);
  for (int c : r.stats.computed_per_layer)
    EXPECT_EQ(c, 15 - shared);
  // A prefix that covers the whole prompt still recomputes the last token.
  auto whole = run(p, "prefix", {&r.sequence, 15});
  EXPECT_LE(max_rel_error(whole.logits, r.logits), 1e-5);
  EXPECT_EQ(whole.stats.computed_per_layer[0], 1);
}

TEST_F(prefill_test, prefix_policy_ignores_standalone_image_caches) {
  SCOPED_TRACE(trace());
  auto entry = compile(model_->random_embeddings(5));
  auto p = text_image_text(3, {"img", 5, &entry, nullptr}, 2);
  auto r = run(p, "prefix");
  EXPECT_EQ(r.stats.reused_image_tokens, 0);
  EXPECT_DOUBLE_EQ(r.stats.recomputed_fraction, 1.0);
  EXPECT_LE(max_rel_error(r.logits, model_->reference_logits(inputs(p))), 1e-5);
}

TEST_F(prefill_test, mpic_with_k_covering_the_image_equals_full) {
  SCOPED_TRACE(trace());
  auto entry = compile(model_->random_embeddings(6));
  auto p = text_image_text(3, {"img", 6, &entry, nullptr}, 3);
  auto full = run(p, "full");
  auto mpic = run(p, "mpic:6");
  auto mpic_big = run(p, "mpic:64");
  EXPECT_LE(max_rel_error(mpic.logits, full.logits), 1e-5);
  EXPECT_LE(max_rel_error(mpic_big.logits, full.logits), 1e-5);
  // With fewer tokens recomputed the answer moves (reuse is approximate).
  auto mpic2 = run(p, "mpic:2");
  EXPECT_EQ(mpic2.stats.computed_per_layer[0], 3 + 2 + 3);
  EXPECT_GT(max_rel_error(mpic2.logits, full.logits), 1e-4);
}

TEST_F(prefill_test, reuse_is_exact_for_an_image_that_starts_the_prompt) {
  SCOPED_TRACE(trace());
  auto emb = model_->random_embeddings(6);
  auto entry = compile(emb);
  prompt p;
  p.images.push_back({"img", 6, &entry, nullptr});
  p.parts.push_back({segment_kind::image, {}, 0});
  p.parts.push_back({segment_kind::text, model_->random_ids(4), -1});
  auto r = run(p, "full_reuse");
  EXPECT_EQ(r.stats.computed_per_layer[1], 4);
  EXPECT_LE(max_rel_error(r.logits, model_->reference_logits(inputs(p))), 1e-5);
}

TEST_F(prefill_test, compiled_keys_placed_at_p_equal_keys_computed_at_p) {
  SCOPED_TRACE(trace());
  auto emb = model_->random_embeddings(5);
  auto entry = compile(emb);
  const int p0 = 7;
  auto p = text_image_text(p0, {"img", 5, &entry, nullptr}, 2);
  auto computed = run(p, "full");
  auto placed = run(p, "full_reuse");
  EXPECT_EQ(placed.stats.reused_image_tokens, 5);
  // Layer-0 K depends on the token alone: placing is exact there.
  EXPECT_LE(max_rel_error(pool_keys(placed.sequence, 0, p0, p0 + 5),
                          pool_keys(computed.sequence, 0, p0, p0 + 5)),
            1e-5);
  std::vector<double> ref_k;
  model_->reference_logits(inputs(p), &ref_k);
  const auto got = pool_keys(computed.sequence, 0, p0, p0 + 5);
  std::vector<float> want(ref_k.begin() + p0 * cfg_.kv_dim(),
                          ref_k.begin() + (p0 + 5) * cfg_.kv_dim());
  EXPECT_LE(max_rel_error(got, want), 1e-5);
}

TEST_F(prefill_test, compile_image_keeps_pre_rope_keys_of_the_standalone_prefill) {
  SCOPED_TRACE(trace());
  auto emb = model_->random_embeddings(6);
  auto entry = compile(emb);
  EXPECT_EQ(entry.n_tokens, 6);
  EXPECT_EQ(entry.embeddings, emb);
  EXPECT_EQ(pool_->stats().blocks_used, 0); // the standalone sequence is gone
  std::vector<double> ref_k;
  model_->reference_logits(emb, &ref_k);
  const int kv = cfg_.kv_dim();
  for (int l = 0; l < cfg_.num_layers; ++l) {
    std::vector<float> rotated;
    for (int t = 0; t < 6; ++t) {
      std::vector<double> row(entry.k_layer(l) + t * kv, entry.k_layer(l) + (t + 1) * kv);
      model_->rope_row(row.data(), cfg_.num_kv_heads, t);
      rotated.insert(rotated.end(), row.begin(), row.end());
    }
    std::vector<float> want(ref_k.begin() + size_t(l) * 6 * kv,
                            ref_k.begin() + size_t(l + 1) * 6 * kv);
    EXPECT_LE(max_rel_error(rotated, want), 1e-5) << "layer " << l;
  }
}

TEST_F(prefill_test, wait_layer_runs_before_each_layer_and_its_error_aborts) {
  SCOPED_TRACE(trace());
  auto entry = compile(model_->random_embeddings(4));
  auto p = text_image_text(2, {"img", 4, &entry, nullptr}, 2);
  auto spec = parse_policy("mpic:1");
  auto plan = build_link_plan(p, *spec, cfg_);
  ASSERT_TRUE(plan);
  std::vector<int> seen;
  prefill_options opt;
  opt.wait_layer = [&](int l) -> status {
    seen.push_back(l);
    if (l == 1)
      return make_error(errc::io_error, "layer 1 failed to load");
    return {};
  };
  auto r = run_prefill(*be_, weights_, *pool_, *plan, opt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::io_error);
  EXPECT_EQ(seen, (std::vector<int>{0, 1}));
  EXPECT_EQ(pool_->stats().blocks_used, 0);
}

/// Layer `l`'s K and V rows of the sequence's tokens [0, n), as the pool holds them now.
std::vector<float> layer_rows(backend& be, const kv_pool& pool, const kv_sequence& s, int l,
                              int n) {
  const int kv = pool.kv_dim();
  std::vector<float> out(size_t(2) * n * kv);
  for (int t = 0; t < n; ++t) {
    const size_t row = size_t(s.slot(t)) * kv;
    EXPECT_TRUE(be.download(out.data() + size_t(t) * kv, pool.k_layer(l) + row, kv * 4));
    EXPECT_TRUE(be.download(out.data() + size_t(n + t) * kv, pool.v_layer(l) + row, kv * 4));
  }
  return out;
}

TEST_F(prefill_test, layer_done_fires_once_per_layer_in_order_with_that_layer_final) {
  SCOPED_TRACE(trace());
  auto entry = compile(model_->random_embeddings(5));
  auto p = text_image_text(3, {"img", 5, &entry, nullptr}, 4);
  auto spec = parse_policy("mpic:1"); // cached rows, rotated, plus recomputed ones
  auto plan = build_link_plan(p, *spec, cfg_);
  ASSERT_TRUE(plan);
  const int n = plan->n_tokens();
  // Dirty the pool so that rows not yet written by the pass show.
  for (int l = 0; l < pool_->n_layers(); ++l) {
    std::vector<float> junk(size_t(pool_->kv_dim()) * 96 * 4, 1e30f);
    ASSERT_TRUE(be_->upload(pool_->k_layer(l), junk.data(), junk.size() * 4));
    ASSERT_TRUE(be_->upload(pool_->v_layer(l), junk.data(), junk.size() * 4));
  }
  std::vector<int> seen;
  std::vector<std::vector<float>> at_hook;
  std::vector<bool> next_written;
  prefill_options opt;
  opt.layer_done = [&](int l, const kv_sequence& s) -> status {
    seen.push_back(l);
    EXPECT_GE(s.capacity(), n);
    at_hook.push_back(layer_rows(*be_, *pool_, s, l, n));
    if (l + 1 < pool_->n_layers()) {
      auto next = layer_rows(*be_, *pool_, s, l + 1, n);
      next_written.push_back(
          std::none_of(next.begin(), next.end(), [](float x) { return x == 1e30f; }));
    }
    return {};
  };
  auto r = run_prefill(*be_, weights_, *pool_, *plan, opt);
  ASSERT_TRUE(r) << r.err().to_string();
  std::vector<int> want(size_t(cfg_.num_layers));
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(seen, want);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    auto final_rows = layer_rows(*be_, *pool_, r->sequence, l, n);
    EXPECT_EQ(at_hook[size_t(l)], final_rows) << "layer " << l << " changed after its hook";
    EXPECT_TRUE(
        std::none_of(final_rows.begin(), final_rows.end(), [](float x) { return x == 1e30f; }));
  }
  for (bool w : next_written)
    EXPECT_FALSE(w) << "a later layer was already written when the hook ran";
  // Same answer as without the hook.
  auto plan2 = build_link_plan(p, *spec, cfg_);
  ASSERT_TRUE(plan2);
  auto plain = run_prefill(*be_, weights_, *pool_, *plan2);
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->logits, r->logits);
}

TEST_F(prefill_test, layer_done_error_aborts_the_pass_and_frees_the_sequence) {
  SCOPED_TRACE(trace());
  auto emb = model_->random_embeddings(4);
  auto p = text_image_text(3, {"img", 4, nullptr, emb.data()}, 2);
  auto plan = build_link_plan(p, *parse_policy("full"), cfg_);
  ASSERT_TRUE(plan);
  std::vector<int> seen;
  prefill_options opt;
  opt.layer_done = [&](int l, const kv_sequence&) -> status {
    seen.push_back(l);
    if (l == 1)
      return make_error(errc::unavailable, "decode node went away");
    return {};
  };
  auto r = run_prefill(*be_, weights_, *pool_, *plan, opt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::unavailable);
  EXPECT_EQ(seen, (std::vector<int>{0, 1}));
  EXPECT_EQ(pool_->stats().blocks_used, 0);
}

TEST_F(prefill_test, cacheblend_selects_the_requested_fraction_in_the_same_pass) {
  SCOPED_TRACE(trace());
  auto entry = compile(model_->random_embeddings(10));
  auto p = text_image_text(3, {"img", 10, &entry, nullptr}, 2);
  auto r = run(p, "cacheblend:0.3");
  EXPECT_EQ(r.stats.computed_per_layer[0], 15);
  for (int l = 1; l < cfg_.num_layers; ++l)
    EXPECT_EQ(r.stats.computed_per_layer[size_t(l)], 3 + 3 + 2);
  auto all = run(p, "cacheblend:1");
  auto full = run(p, "full");
  EXPECT_LE(max_rel_error(all.logits, full.logits), 1e-5);
}

TEST_F(prefill_test, vlcache_runs_its_per_layer_budget_in_one_pass) {
  SCOPED_TRACE(trace());
  auto entry = compile(model_->random_embeddings(20));
  auto p = text_image_text(2, {"img", 20, &entry, nullptr}, 2);
  vlcache_profile prof{{4, 1, 1}, false, "test profile"};
  auto plan = build_link_plan(p, *parse_policy("vlcache:0.3"), cfg_, {}, &prof);
  ASSERT_TRUE(plan);
  std::vector<int> sizes;
  for (const auto& s : plan->compute)
    sizes.push_back(int(s.size()));
  auto r = run_prefill(*be_, weights_, *pool_, *plan);
  ASSERT_TRUE(r) << r.err().to_string();
  EXPECT_EQ(r->stats.computed_per_layer, sizes);
  EXPECT_EQ(sizes[0], 4 + 12); // weights 4:1:1 at mean 0.3: 0.6, 0.15, 0.15
  EXPECT_EQ(sizes[1], 4 + 3);
  EXPECT_NE(r->stats.note.find("test profile"), std::string::npos);
  EXPECT_EQ(r->stats.reused_image_tokens, 20);
}

TEST_F(prefill_test, out_of_pool_blocks_is_an_error) {
  auto small = kv_pool::create(*be_, cfg_.num_layers, cfg_.kv_dim(), {2, 4});
  ASSERT_TRUE(small);
  auto plan = plain_text_plan(cfg_, model_->random_ids(9));
  auto r = run_prefill(*be_, weights_, **small, plan);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::out_of_memory);
  EXPECT_EQ((*small)->stats().blocks_used, 0);
}

} // namespace
} // namespace mosaic
