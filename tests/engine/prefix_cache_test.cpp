// Automatic prefix caching (engine/prefix_cache.hpp) and chunked prefill
// (engine/prefill.hpp): what a user notices — a repeated prompt computes
// at most one block and answers the same, tenants never share a block,
// eviction never touches a running sequence, approximate KV is reused only
// by its own policy, and chunking changes nothing but the schedule.

#include "engine/prefix_cache.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "decoder_fixture.hpp"
#include "engine/prefill.hpp"
#include "forward_test_model.hpp"

namespace mosaic {
namespace {

using testing::max_rel_error;

class prefix_cache_test : public testing::decoder_fixture {
protected:
  prefix_cache_test() : decoder_fixture(3) {}

  void SetUp() override {
    decoder_fixture::SetUp();
    pool_ = make_pool(512, 4);
    ASSERT_NE(pool_, nullptr);
  }

  prompt_prefill run(const prompt& p, std::string_view policy, const prefix_scope* scope,
                     int chunk = 0) {
    auto spec = parse_policy(policy);
    EXPECT_TRUE(spec);
    prefill_options o;
    o.chunk_tokens = chunk;
    auto r = prefill_with_prefix_cache(*be_, weights_, *pool_, p, *spec, nullptr, scope, o);
    EXPECT_TRUE(r) << r.err().to_string();
    if (!r)
      return {};
    return std::move(*r);
  }

  compiled_image compile(const std::vector<float>& emb) { return compile_in(*pool_, emb); }

  /// text(a) image text(b); the image is a miss (embeddings) or a hit.
  prompt text_image_text(const std::vector<int32_t>& a, const prompt_image& img,
                         const std::vector<int32_t>& b) {
    prompt p;
    p.images.push_back(img);
    p.parts.push_back({segment_kind::text, a, -1});
    p.parts.push_back({segment_kind::image, {}, 0});
    p.parts.push_back({segment_kind::text, b, -1});
    return p;
  }

  prompt text_only(const std::vector<int32_t>& ids) {
    prompt p;
    p.parts.push_back({segment_kind::text, ids, -1});
    return p;
  }

  /// Layer `l`'s K and V of tokens [0, n) of `s`, downloaded.
  std::vector<float> kv_rows(const kv_sequence& s, int l, int n) {
    const int kv = cfg_.kv_dim();
    std::vector<float> out(size_t(2 * n) * kv);
    for (int t = 0; t < n; ++t) {
      EXPECT_TRUE(be_->download(out.data() + size_t(t) * kv,
                                pool_->k_layer(l) + size_t(s.slot(t)) * kv, kv * sizeof(float)));
      EXPECT_TRUE(be_->download(out.data() + size_t(n + t) * kv,
                                pool_->v_layer(l) + size_t(s.slot(t)) * kv, kv * sizeof(float)));
    }
    return out;
  }

  prefix_scope tenant_a_{"tenant-a", {}, ""};
  prefix_scope tenant_b_{"tenant-b", {}, ""};
  std::unique_ptr<kv_pool> pool_;
};

TEST_F(prefix_cache_test, a_repeated_prompt_computes_at_most_one_block_and_answers_the_same) {
  SCOPED_TRACE(trace());
  auto emb = model_->random_embeddings(7);
  const auto p = text_image_text(model_->random_ids(5), {"img-x", 7, nullptr, emb.data()},
                                 model_->random_ids(40));
  const int n = 52;
  auto first = run(p, "prefix", &tenant_a_);
  EXPECT_EQ(first.cache_hit_tokens, 0);
  EXPECT_EQ(first.published_blocks, n / 4);
  first.result.sequence.release();

  auto again = run(p, "prefix", &tenant_a_);
  EXPECT_EQ(again.cache_hit_tokens, 48); // every full block but the one holding the last token
  EXPECT_GE(again.cache_hit_tokens, n - pool_->block_size());
  EXPECT_EQ(again.result.stats.cached_tokens, 48);
  for (int c : again.result.stats.computed_per_layer)
    EXPECT_EQ(c, n - 48);
  EXPECT_LE(max_rel_error(again.result.logits, first.result.logits), 1e-5);
  // Exact blocks serve every policy that uses the cache.
  auto linked = run(p, "mpic:2", &tenant_a_);
  EXPECT_EQ(linked.cache_hit_tokens, 48);
  EXPECT_LE(max_rel_error(linked.result.logits, first.result.logits), 1e-5);
  // `full` uses no cache at all.
  auto full = run(p, "full", &tenant_a_);
  EXPECT_EQ(full.cache_hit_tokens, 0);
  EXPECT_EQ(full.published_blocks, 0);
  EXPECT_EQ(full.result.stats.cached_tokens, 0);
  const auto s = pool_->stats();
  EXPECT_EQ(s.prefix_hits, 96u);
  EXPECT_EQ(s.prefix_queries, 3u * n);
}

TEST_F(prefix_cache_test, the_look_ahead_sees_what_a_match_would_take_and_takes_nothing) {
  SCOPED_TRACE(trace());
  auto emb = model_->random_embeddings(7);
  const auto p = text_image_text(model_->random_ids(5), {"img-x", 7, nullptr, emb.data()},
                                 model_->random_ids(40));
  const prompt_blocks blocks{p, tenant_a_, pool_->block_size()};
  EXPECT_EQ(cached_prefix_tokens(*pool_, blocks, {}), 0);
  run(p, "prefix", &tenant_a_).result.sequence.release();
  const auto before = pool_->stats();
  // 13 full blocks of 52 tokens, all published; match_prefix keeps the
  // last token out, the look-ahead reports what is cached.
  EXPECT_EQ(cached_prefix_tokens(*pool_, blocks, {}), 52);
  EXPECT_EQ(cached_prefix_tokens(*pool_, prompt_blocks{p, tenant_b_, pool_->block_size()}, {}), 0);
  const auto after = pool_->stats();
  EXPECT_EQ(after.prefix_queries, before.prefix_queries); // not counted
  EXPECT_EQ(after.blocks_used, before.blocks_used);       // no reference taken
  // Another image at the same place: only the blocks before it.
  auto other = p;
  other.images[0].key = "img-y";
  EXPECT_EQ(cached_prefix_tokens(*pool_, prompt_blocks{other, tenant_a_, pool_->block_size()}, {}),
            4);
}

TEST_F(prefix_cache_test, two_tenants_with_the_same_prompt_never_share_a_block) {
  SCOPED_TRACE(trace());
  const auto p = text_only(model_->random_ids(33));
  auto a = run(p, "prefix", &tenant_a_);
  auto a2 = run(p, "prefix", &tenant_a_);
  EXPECT_EQ(a2.cache_hit_tokens, 32);
  auto b = run(p, "prefix", &tenant_b_);
  EXPECT_EQ(b.cache_hit_tokens, 0);
  std::set<int32_t> held_by_a(a.result.sequence.blocks().begin(), a.result.sequence.blocks().end());
  held_by_a.insert(a2.result.sequence.blocks().begin(), a2.result.sequence.blocks().end());
  for (int32_t blk : b.result.sequence.blocks())
    EXPECT_EQ(held_by_a.count(blk), 0u) << "block " << blk << " shared across tenants";
  // Another model is another namespace too.
  prefix_scope other_model = tenant_a_;
  other_model.model[0] ^= 1;
  EXPECT_EQ(run(p, "prefix", &other_model).cache_hit_tokens, 0);
}

TEST_F(prefix_cache_test, a_cache_salt_shares_blocks_only_with_the_same_salt) {
  SCOPED_TRACE(trace());
  const auto p = text_only(model_->random_ids(33));
  EXPECT_EQ(run(p, "prefix", &tenant_a_).cache_hit_tokens, 0);
  prefix_scope salted = tenant_a_;
  salted.salt = "run-1";
  auto s1 = run(p, "prefix", &salted);
  EXPECT_EQ(s1.cache_hit_tokens, 0); // the unsalted prompt's blocks are not its
  auto s2 = run(p, "prefix", &salted);
  EXPECT_EQ(s2.cache_hit_tokens, 32);
  EXPECT_EQ(s2.result.sequence.blocks()[0], s1.result.sequence.blocks()[0]);
  prefix_scope other = salted;
  other.salt = "run-2";
  EXPECT_EQ(run(p, "prefix", &other).cache_hit_tokens, 0);
  // The salt is its own field: tenant "a" + salt "bc" is not tenant "ab" + salt "c".
  const prompt_blocks x{p, prefix_scope{"a", {}, "bc"}, 16};
  const prompt_blocks y{p, prefix_scope{"ab", {}, "c"}, 16};
  EXPECT_NE(x.root(), y.root());
  EXPECT_EQ(run(p, "prefix", &tenant_a_).cache_hit_tokens, 32);
}

TEST_F(prefix_cache_test, eviction_reclaims_only_unreferenced_blocks_tail_first) {
  SCOPED_TRACE(trace());
  pool_ = make_pool(24, 4);
  const auto p1 = text_only(model_->random_ids(40));
  const auto p2 = text_only(model_->random_ids(40));
  const auto p3 = text_only(model_->random_ids(40));
  auto running = run(p1, "prefix", &tenant_a_); // held, as by a decoding request
  std::vector<std::vector<float>> before;
  for (int l = 0; l < cfg_.num_layers; ++l)
    before.push_back(kv_rows(running.result.sequence, l, 40));
  run(p2, "prefix", &tenant_a_).result.sequence.release(); // cached, unreferenced
  EXPECT_EQ(pool_->stats().blocks_evictable, 10);
  auto third = run(p3, "prefix", &tenant_a_); // needs 10: 4 free + 6 evicted
  ASSERT_TRUE(third.result.sequence.valid());
  EXPECT_EQ(pool_->stats().evictions, 6u);
  for (int l = 0; l < cfg_.num_layers; ++l)
    EXPECT_EQ(kv_rows(running.result.sequence, l, 40), before[size_t(l)]) << "layer " << l;
  // p2 lost its tail, not its head; the running prompt is still cached whole.
  third.result.sequence.release();
  EXPECT_EQ(run(p2, "prefix", &tenant_a_).cache_hit_tokens, 16);
  auto again = run(p1, "prefix", &tenant_a_);
  EXPECT_EQ(again.cache_hit_tokens, 36);
  EXPECT_LE(max_rel_error(again.result.logits, running.result.logits), 1e-5);
}

TEST_F(prefix_cache_test, approximate_blocks_serve_only_their_policy_and_keep_straddled_rows) {
  SCOPED_TRACE(trace());
  auto emb = model_->random_embeddings(29);
  const auto entry = compile(emb);
  const prompt_image img{"img-y", 29, &entry, nullptr};
  const auto head = model_->random_ids(6);
  const auto tail1 = model_->random_ids(5);
  const auto p1 = text_image_text(head, img, tail1);
  // Tokens 0..7 are exact (6 text + 2 recomputed image tokens): two
  // blocks; the rest went through the link and carry the policy's tag.
  run(p1, "mpic:2", &tenant_a_);
  EXPECT_EQ(run(p1, "prefix", &tenant_a_).cache_hit_tokens, 8);
  run(p1, "mpic:2", &tenant_b_);
  EXPECT_EQ(run(p1, "mpic:4", &tenant_b_).cache_hit_tokens, 8);

  // Another question about the same image: the cached blocks end inside
  // the image (rows 6..31 adopted, 32..34 linked from the entry).
  const prefix_scope tenant_c{"tenant-c", {}, ""};
  run(p1, "mpic:2", &tenant_c);
  auto tail2 = model_->random_ids(7);
  if (tail2[0] == tail1[0]) // else block 8 (image rows 32..34 + this token) is a hit too
    tail2[0] = tail1[0] == 3 ? 4 : 3;
  const auto p2 = text_image_text(head, img, tail2);
  auto cached = run(p2, "mpic:2", &tenant_c);
  EXPECT_EQ(cached.cache_hit_tokens, 32);
  auto fresh = run(p2, "mpic:2", nullptr);
  EXPECT_LE(max_rel_error(cached.result.logits, fresh.result.logits), 1e-4);
  for (int l = 0; l < cfg_.num_layers; ++l)
    EXPECT_LE(max_rel_error(kv_rows(cached.result.sequence, l, 42),
                            kv_rows(fresh.result.sequence, l, 42)),
              1e-4)
        << "layer " << l;
}

TEST_F(prefix_cache_test, chunked_prefill_of_a_long_prompt_equals_one_pass) {
  SCOPED_TRACE(trace());
  const int n = 12000;
  pool_ = make_pool(4 * n / 16 + 64, 16);
  const auto ids = model_->random_ids(n);
  const auto p = text_only(ids);
  auto whole = run(p, "full", nullptr);
  auto chunked = run(p, "full", nullptr, 1000);
  EXPECT_EQ(chunked.result.stats.chunks, 12);
  EXPECT_LE(max_rel_error(chunked.result.logits, whole.result.logits), 1e-4);
  EXPECT_LE(
      max_rel_error(kv_rows(chunked.result.sequence, 2, n), kv_rows(whole.result.sequence, 2, n)),
      1e-4);
  whole.result.sequence.release();
  chunked.result.sequence.release();
  // `prefix`: an earlier prompt of 11,008 tokens (688 blocks), then the
  // whole one in chunks.
  auto head = run(text_only(std::vector<int32_t>(ids.begin(), ids.begin() + 11008)), "prefix",
                  &tenant_a_, 4096);
  head.result.sequence.release();
  auto tail = run(p, "prefix", &tenant_a_, 256);
  EXPECT_EQ(tail.cache_hit_tokens, 11008);
  EXPECT_EQ(tail.result.stats.chunks, 4);
  EXPECT_LE(max_rel_error(tail.result.logits, chunked.result.logits), 1e-4);
}

TEST_F(prefix_cache_test, chunked_linking_equals_one_pass_with_images_across_chunks) {
  SCOPED_TRACE(trace());
  std::vector<std::vector<float>> embs;
  std::vector<compiled_image> entries;
  for (int i = 0; i < 3; ++i) {
    embs.push_back(model_->random_embeddings(100));
    entries.push_back(compile(embs.back()));
  }
  prompt p;
  for (int i = 0; i < 3; ++i) {
    p.images.push_back({"img-" + std::to_string(i), 100, &entries[size_t(i)], nullptr});
    p.parts.push_back({segment_kind::text, model_->random_ids(37), -1});
    p.parts.push_back({segment_kind::image, {}, i});
  }
  p.parts.push_back({segment_kind::text, model_->random_ids(11), -1});
  for (const char* policy : {"mpic:32", "full_reuse", "vlcache:0.2"}) {
    SCOPED_TRACE(policy);
    auto one = run(p, policy, nullptr);
    auto chunked = run(p, policy, nullptr, 64); // every image spans two or three chunks
    EXPECT_EQ(chunked.result.stats.computed_per_layer, one.result.stats.computed_per_layer);
    EXPECT_LE(max_rel_error(chunked.result.logits, one.result.logits), 1e-4);
    for (int l = 0; l < cfg_.num_layers; ++l)
      EXPECT_LE(max_rel_error(kv_rows(chunked.result.sequence, l, 422),
                              kv_rows(one.result.sequence, l, 422)),
                1e-4);
  }
}

TEST_F(prefix_cache_test, hashes_chain_over_parent_tag_and_tokens) {
  const auto a = text_only({1, 2, 3, 4, 5, 6, 7, 8});
  const auto b = text_only({1, 2, 3, 4, 5, 6, 7, 9});
  const prompt_blocks pa{a, tenant_a_, 4}, pb{b, tenant_a_, 4}, pa_b{a, tenant_b_, 4};
  EXPECT_EQ(pa.hash(0, pa.root(), {}), pb.hash(0, pb.root(), {}));
  EXPECT_NE(pa.hash(1, pa.root(), {}), pb.hash(1, pb.root(), {}));
  EXPECT_NE(pa.hash(0, pa.root(), {}), pa_b.hash(0, pa_b.root(), {}));
  EXPECT_NE(pa.hash(0, pa.root(), {}), pa.hash(0, pa.root(), "mpic:32"));
  const auto h0 = pa.hash(0, pa.root(), {});
  EXPECT_NE(pa.hash(1, h0, {}), pa.hash(1, pa.root(), {}));
  // An image token is not the text token with the same number.
  std::vector<float> emb(size_t(4) * 32);
  prompt img;
  img.images.push_back({"k", 4, nullptr, emb.data()});
  img.parts.push_back({segment_kind::image, {}, 0});
  const prompt_blocks pi{img, tenant_a_, 4};
  EXPECT_NE(pi.hash(0, pi.root(), {}),
            prompt_blocks(text_only({0, 1, 2, 3}), tenant_a_, 4).hash(0, pi.root(), {}));
}

} // namespace
} // namespace mosaic
