#include "engine/prefill.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

  compiled_image compile(const std::vector<float>& emb) { return compile_in(*pool_, emb); }

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

TEST_F(prefill_test, a_compile_in_chunks_equals_one_pass_and_yields_between_its_steps) {
  SCOPED_TRACE(trace());
  auto emb = model_->random_embeddings(7);
  auto whole = compile(emb);
  std::vector<int> steps;
  auto chunked = compile_image(*be_, weights_, *pool_, emb.data(), 7,
                               [&](int layer) -> status {
                                 steps.push_back(layer);
                                 return {};
                               },
                               3);
  ASSERT_TRUE(chunked) << chunked.err().to_string();
  // Chunks of 3, 3 and 1 tokens, every layer of each.
  ASSERT_EQ(steps.size(), size_t(3 * cfg_.num_layers));
  for (size_t i = 0; i < steps.size(); ++i)
    EXPECT_EQ(steps[i], int(i % size_t(cfg_.num_layers)));
  EXPECT_EQ(chunked->embeddings, whole.embeddings);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const size_t n = size_t(7) * cfg_.kv_dim();
    EXPECT_LE(max_rel_error(std::vector<float>(chunked->k_layer(l), chunked->k_layer(l) + n),
                            std::vector<float>(whole.k_layer(l), whole.k_layer(l) + n)),
              1e-5)
        << "layer " << l;
    EXPECT_LE(max_rel_error(std::vector<float>(chunked->v_layer(l), chunked->v_layer(l) + n),
                            std::vector<float>(whole.v_layer(l), whole.v_layer(l) + n)),
              1e-5)
        << "layer " << l;
  }
  EXPECT_EQ(pool_->stats().blocks_used, 0);
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
  // Layers 0..1 (the check layer) compute everything; then 3 of 10.
  EXPECT_EQ(r.stats.computed_per_layer[0], 15);
  EXPECT_EQ(r.stats.computed_per_layer[1], 15);
  for (int l = 2; l < cfg_.num_layers; ++l)
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

TEST_F(prefill_test, cacheblend_recomputes_the_keys_that_deviate_most_at_the_check_layer) {
  SCOPED_TRACE(trace());
  auto entry = compile(model_->random_embeddings(12));
  // Corrupt the cached K/V of three non-leading tokens at the check layer
  // (1) only: their deviation there dwarfs what the new context causes,
  // while at layer 0 (a token's K depends on itself alone) nothing shows.
  const std::vector<int> bad = {4, 7, 10};
  const int kv = cfg_.kv_dim();
  for (int row : bad)
    for (int i = 0; i < kv; ++i) {
      entry.k_layer(1)[size_t(row) * kv + i] += 50.0f;
      entry.v_layer(1)[size_t(row) * kv + i] -= 50.0f;
    }
  auto p = text_image_text(3, {"img", 12, &entry, nullptr}, 2);
  auto plan = build_link_plan(p, *parse_policy("cacheblend:0.25"), cfg_); // 3 of 12
  ASSERT_TRUE(plan) << plan.err().to_string();
  auto r = run_prefill(*be_, weights_, *pool_, *plan);
  ASSERT_TRUE(r) << r.err().to_string();
  std::vector<int32_t> chosen;
  for (int32_t t : plan->compute[2])
    if (t >= 3 && t < 15)
      chosen.push_back(t - 3);
  EXPECT_EQ(chosen, (std::vector<int32_t>{4, 7, 10}));
}

/// Brute-force reference of a link-plan prefill, in double with plain
/// loops, using the plan's final compute sets: per layer, every token's
/// slot holds fresh K/V (RoPE at its position) from its previous-layer
/// hidden state if it is in S_l, else its cached KV (an image entry's
/// pre-RoPE K rotated to its position); tokens in S_l then attend over
/// every slot, causal by position, and run o_proj and the MLP. Tokens
/// outside S_l have no hidden state to speak of. Fails the test for a
/// non-nested plan (a token would start from a stale hidden state).
struct reference_pass {
  std::vector<float> logits;                // [vocab] of the last token
  std::vector<std::vector<float>> kv;       // [layers][2 * n * kv_dim]  K rows, then V rows
  std::vector<std::vector<double>> k_fresh; // [layers][n * kv_dim]  pre-RoPE K of S_l rows
};

reference_pass reference_prefill(const testing::random_decoder& m, const link_plan& plan,
                                 const std::vector<float>& x) {
  const auto& cfg = m.config();
  const int H = cfg.hidden_size, n = plan.n_tokens(), hd = cfg.head_dim();
  const int nh = cfg.num_heads, nkv = cfg.num_kv_heads, kvd = cfg.kv_dim(), qd = nh * hd;
  const int ff = cfg.intermediate_size;
  auto linear = [](const double* in, int in_dim, const std::vector<float>& w, int out_dim) {
    std::vector<double> out(size_t(out_dim), 0.0);
    for (int o = 0; o < out_dim; ++o)
      for (int i = 0; i < in_dim; ++i)
        out[size_t(o)] += in[i] * w[size_t(o) * in_dim + i];
    return out;
  };
  auto norm = [&](const double* in, const std::vector<float>& w) {
    double ss = 0.0;
    for (int i = 0; i < H; ++i)
      ss += in[i] * in[i];
    const double inv = 1.0 / std::sqrt(ss / H + cfg.rms_norm_eps);
    std::vector<double> out(static_cast<size_t>(H));
    for (int i = 0; i < H; ++i)
      out[size_t(i)] = in[i] * inv * w[size_t(i)];
    return out;
  };
  reference_pass out;
  std::vector<double> h(x.begin(), x.end()); // [n, H]
  for (int l = 0; l < cfg.num_layers; ++l) {
    const auto& s = plan.compute[size_t(l)];
    std::vector<bool> in(size_t(n), false);
    for (int32_t t : s) {
      in[size_t(t)] = true;
      if (l > 0) {
        EXPECT_TRUE(std::binary_search(plan.compute[size_t(l - 1)].begin(),
                                       plan.compute[size_t(l - 1)].end(), t))
            << "token " << t << " joins at layer " << l;
      }
    }
    std::vector<double> k(size_t(n) * kvd), v(size_t(n) * kvd), q(size_t(n) * qd);
    std::vector<double> k_fresh(size_t(n) * kvd, 0.0);
    for (int t = 0; t < n; ++t) {
      const int pos = plan.positions[size_t(t)];
      double* kr = &k[size_t(t) * kvd];
      double* vr = &v[size_t(t) * kvd];
      if (in[size_t(t)]) {
        const auto xn = norm(&h[size_t(t) * H], m.layer(l, "input_layernorm.weight"));
        const auto qt = linear(xn.data(), H, m.layer(l, "self_attn.q_proj.weight"), qd);
        const auto kt = linear(xn.data(), H, m.layer(l, "self_attn.k_proj.weight"), kvd);
        const auto vt = linear(xn.data(), H, m.layer(l, "self_attn.v_proj.weight"), kvd);
        std::copy(qt.begin(), qt.end(), &q[size_t(t) * qd]);
        std::copy(kt.begin(), kt.end(), kr);
        std::copy(kt.begin(), kt.end(), &k_fresh[size_t(t) * kvd]);
        std::copy(vt.begin(), vt.end(), vr);
        m.rope_row(&q[size_t(t) * qd], nh, pos);
      } else {
        const auto& src = plan.kv[size_t(t)];
        if (src.kind != kv_source_kind::image_entry) {
          ADD_FAILURE() << "the reference reads cached KV of image entries only (token " << t
                        << ")";
          return out;
        }
        const auto& e = *plan.images[size_t(src.index)].entry;
        std::copy_n(e.k_layer(l) + size_t(src.row) * kvd, kvd, kr);
        std::copy_n(e.v_layer(l) + size_t(src.row) * kvd, kvd, vr);
      }
      m.rope_row(kr, nkv, pos);
    }
    for (int32_t t : s) {
      std::vector<double> attn(size_t(qd), 0.0);
      for (int hh = 0; hh < nh; ++hh) {
        const int g = hh / (nh / nkv);
        std::vector<double> sc(size_t(n), -1e300);
        double mx = -1e300;
        for (int j = 0; j < n; ++j) {
          if (plan.positions[size_t(j)] > plan.positions[size_t(t)])
            continue;
          double dot = 0.0;
          for (int i = 0; i < hd; ++i)
            dot += q[size_t(t) * qd + hh * hd + i] * k[size_t(j) * kvd + g * hd + i];
          sc[size_t(j)] = dot / std::sqrt(double(hd));
          mx = std::max(mx, sc[size_t(j)]);
        }
        double z = 0.0;
        for (auto& e : sc)
          z += (e = e <= -1e300 ? 0.0 : std::exp(e - mx));
        for (int j = 0; j < n; ++j)
          for (int i = 0; i < hd; ++i)
            attn[size_t(hh * hd + i)] += sc[size_t(j)] / z * v[size_t(j) * kvd + g * hd + i];
      }
      double* ht = &h[size_t(t) * H];
      const auto o = linear(attn.data(), qd, m.layer(l, "self_attn.o_proj.weight"), H);
      for (int i = 0; i < H; ++i)
        ht[i] += o[size_t(i)];
      const auto xm = norm(ht, m.layer(l, "post_attention_layernorm.weight"));
      auto gate = linear(xm.data(), H, m.layer(l, "mlp.gate_proj.weight"), ff);
      const auto up = linear(xm.data(), H, m.layer(l, "mlp.up_proj.weight"), ff);
      for (int i = 0; i < ff; ++i)
        gate[size_t(i)] = gate[size_t(i)] / (1.0 + std::exp(-gate[size_t(i)])) * up[size_t(i)];
      const auto down = linear(gate.data(), ff, m.layer(l, "mlp.down_proj.weight"), H);
      for (int i = 0; i < H; ++i)
        ht[i] += down[size_t(i)];
    }
    std::vector<float> layer(k.begin(), k.end());
    layer.insert(layer.end(), v.begin(), v.end());
    out.kv.push_back(std::move(layer));
    out.k_fresh.push_back(std::move(k_fresh));
  }
  const auto hn = norm(&h[size_t(n - 1) * H], m.at("language_model.model.norm.weight"));
  const auto logits = linear(hn.data(), H, m.at("language_model.lm_head.weight"), cfg.vocab_size);
  out.logits.assign(logits.begin(), logits.end());
  return out;
}

TEST_F(prefill_test, every_policy_equals_a_brute_force_reference_of_its_plan) {
  SCOPED_TRACE(trace());
  // text(3) cached(8) text(2) miss(4) cached(6) text(2)
  auto entry_a = compile(model_->random_embeddings(8));
  auto entry_b = compile(model_->random_embeddings(6));
  auto miss = model_->random_embeddings(4);
  prompt p;
  p.images = {
      {"a", 8, &entry_a, nullptr}, {"miss", 4, nullptr, miss.data()}, {"b", 6, &entry_b, nullptr}};
  p.parts = {{segment_kind::text, model_->random_ids(3), -1},
             {segment_kind::image, {}, 0},
             {segment_kind::text, model_->random_ids(2), -1},
             {segment_kind::image, {}, 1},
             {segment_kind::image, {}, 2},
             {segment_kind::text, model_->random_ids(2), -1}};
  const auto x = inputs(p);
  // A calibrated profile that is not monotone in depth.
  vlcache_profile prof{{1, 4, 2}, false, "test"};
  for (std::string_view policy : {"full", "full_reuse", "mpic:3", "vlcache:0.3", "vlcache:0.6",
                                  "cacheblend:0.3", "cacheblend:0.5@0"}) {
    SCOPED_TRACE(std::string{policy});
    auto spec = parse_policy(policy);
    ASSERT_TRUE(spec);
    auto plan = build_link_plan(p, *spec, cfg_, {}, &prof);
    ASSERT_TRUE(plan) << plan.err().to_string();
    const int check = plan->completion.layer;
    auto r = run_prefill(*be_, weights_, *pool_, *plan);
    ASSERT_TRUE(r) << r.err().to_string();
    ASSERT_TRUE(plan->validate()) << plan->validate().err().to_string();
    const auto ref = reference_prefill(*model_, *plan, x);
    EXPECT_LE(max_rel_error(r->logits, ref.logits), 1e-4);
    for (int l = 0; l < cfg_.num_layers; ++l)
      EXPECT_LE(max_rel_error(layer_rows(*be_, *pool_, r->sequence, l, plan->n_tokens()),
                              ref.kv[size_t(l)]),
                1e-4)
          << "layer " << l;
    // Layer 0 cannot tell tokens apart (a token's K there depends on its
    // own input only): the order of f32 rounding noise is not checked.
    if (check < 1)
      continue;
    // CacheBlend: the tokens kept after the check layer are, per image,
    // the round(r * n) whose reference K deviates most there.
    const int kv = cfg_.kv_dim();
    for (const auto& seg : plan->segments) {
      const auto* e =
          seg.kind == segment_kind::image ? plan->images[size_t(seg.image)].entry : nullptr;
      if (e == nullptr)
        continue;
      std::vector<double> chosen, rest;
      int n_chosen = 0;
      for (int t = seg.begin; t < seg.end; ++t) {
        double d = 0.0;
        for (int i = 0; i < kv; ++i) {
          const double diff = ref.k_fresh[size_t(check)][size_t(t) * kv + i] -
                              e->k_layer(check)[size_t(t - seg.begin) * kv + i];
          d += diff * diff;
        }
        const auto& later = plan->compute[size_t(check + 1)];
        const bool kept = std::binary_search(later.begin(), later.end(), t);
        n_chosen += kept;
        (kept ? chosen : rest).push_back(d);
      }
      EXPECT_EQ(n_chosen, std::lround(spec->ratio * float(seg.end - seg.begin)));
      if (!chosen.empty() && !rest.empty()) {
        EXPECT_GE(*std::min_element(chosen.begin(), chosen.end()),
                  *std::max_element(rest.begin(), rest.end()) * (1.0 - 1e-4));
      }
    }
  }
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
