#include "engine/link_plan.hpp"

#include <gtest/gtest.h>

#include "engine/prefill.hpp"
#include "forward_test_model.hpp"

namespace mosaic {
namespace {

using testing::tiny_text_config;

/// text(3) image(4) text(2), image cached; every layer computes text+last.
struct plan_fixture {
  text_config cfg = tiny_text_config(2);
  std::vector<float> emb = std::vector<float>(4 * 32, 0.5f);
  compiled_image entry;
  link_plan plan;

  plan_fixture() {
    entry.resize(4, cfg.num_layers, cfg.hidden_size, cfg.kv_dim());
    plan.n_layers = cfg.num_layers;
    plan.hidden = cfg.hidden_size;
    plan.kv_dim = cfg.kv_dim();
    plan.token_ids = {1, 2, 3, -1, -1, -1, -1, 4, 5};
    plan.positions = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    plan.segments = {{segment_kind::text, 0, 3, -1},
                     {segment_kind::image, 3, 7, 0},
                     {segment_kind::text, 7, 9, -1}};
    plan.images = {{"img", 4, emb.data(), &entry}};
    plan.kv.assign(9, kv_source{});
    for (int t = 3; t < 7; ++t)
      plan.kv[size_t(t)] = {kv_source_kind::image_entry, 0, t - 3};
    plan.compute.assign(2, {0, 1, 2, 7, 8});
  }
};

void expect_invalid(const link_plan& p, std::string_view needle) {
  auto r = p.validate();
  ASSERT_FALSE(r) << "expected an error mentioning '" << needle << "'";
  EXPECT_EQ(r.err().code, errc::invalid_argument);
  EXPECT_NE(r.err().message.find(needle), std::string::npos) << r.err().message;
}

TEST(link_plan, a_well_formed_plan_validates) {
  plan_fixture f;
  EXPECT_TRUE(f.plan.validate()) << f.plan.validate().err().to_string();
  EXPECT_EQ(f.plan.source(4, 0).kind, kv_source_kind::image_entry);
  EXPECT_EQ(f.plan.source(1, 0).kind, kv_source_kind::compute);
  EXPECT_NEAR(f.plan.recomputed_fraction(), 5.0 / 9.0, 1e-12);
  EXPECT_TRUE(plain_text_plan(f.cfg, {3, 1, 4}).validate());
}

TEST(link_plan, last_token_must_be_in_every_set) {
  plan_fixture f;
  f.plan.compute[1] = {0, 1, 2, 7};
  expect_invalid(f.plan, "last token");
}

TEST(link_plan, tokens_without_cache_must_be_computed) {
  plan_fixture f;
  f.plan.compute[0] = {0, 2, 7, 8};
  expect_invalid(f.plan, "token 1 has no cached KV");
}

TEST(link_plan, sets_must_be_sorted_and_in_range) {
  plan_fixture f;
  f.plan.compute[0] = {0, 2, 1, 7, 8};
  expect_invalid(f.plan, "sorted");
  f.plan.compute[0] = {0, 1, 2, 7, 8, 9};
  expect_invalid(f.plan, "outside");
}

TEST(link_plan, sets_must_be_nested) {
  // Token 5 would join at layer 1 with no layer-0 output to start from.
  plan_fixture f;
  f.plan.compute[1] = {0, 1, 2, 5, 7, 8};
  expect_invalid(f.plan, "token 5 is computed at layer 1 but not at layer 0");
  // Shrinking with depth is fine.
  plan_fixture g;
  g.plan.compute[0] = {0, 1, 2, 3, 4, 5, 7, 8};
  g.plan.compute[1] = {0, 1, 2, 3, 7, 8};
  EXPECT_TRUE(g.plan.validate()) << g.plan.validate().err().to_string();
  // The rule holds for every layer, not only the first pair.
  plan_fixture h;
  h.cfg = tiny_text_config(3);
  h.entry.resize(4, 3, h.cfg.hidden_size, h.cfg.kv_dim());
  h.plan.n_layers = 3;
  h.plan.compute = {{0, 1, 2, 3, 4, 7, 8}, {0, 1, 2, 3, 7, 8}, {0, 1, 2, 4, 7, 8}};
  expect_invalid(h.plan, "token 4 is computed at layer 2 but not at layer 1");
}

TEST(link_plan, segments_must_tile_the_tokens) {
  plan_fixture f;
  f.plan.segments[1].begin = 4;
  expect_invalid(f.plan, "does not continue");
  plan_fixture g;
  g.plan.segments.pop_back();
  expect_invalid(g.plan, "cover 7 of 9");
}

TEST(link_plan, cached_entry_geometry_must_match) {
  plan_fixture f;
  f.entry.resize(4, 3, 32, f.cfg.kv_dim());
  expect_invalid(f.plan, "recompile");
}

TEST(link_plan, kv_source_rows_must_be_their_own) {
  plan_fixture f;
  f.plan.kv[4].row = 0;
  expect_invalid(f.plan, "token 4 reads a cached image row");
  plan_fixture g;
  g.plan.kv[1] = {kv_source_kind::prefix, -1, 1};
  expect_invalid(g.plan, "prefix");
}

TEST(link_plan, positions_must_increase) {
  plan_fixture f;
  f.plan.positions[5] = 4;
  expect_invalid(f.plan, "strictly increasing");
}

TEST(link_plan, pending_completion_defers_later_layers) {
  plan_fixture f;
  f.plan.compute[1].clear();
  f.plan.completion.layer = 0;
  f.plan.completion.complete = [](link_plan&, std::span<const float>) { return status{}; };
  EXPECT_TRUE(f.plan.validate());
  f.plan.completion.complete = nullptr;
  expect_invalid(f.plan, "complete function");
}

TEST(link_plan, prefill_rejects_an_invalid_plan_without_leaking_blocks) {
  plan_fixture f;
  auto be = make_cpu_backend(1);
  testing::random_decoder model{f.cfg, 7};
  auto w = upload_decoder_weights(*be, f.cfg, model.lookup());
  ASSERT_TRUE(w);
  auto pool = kv_pool::create(*be, f.cfg.num_layers, f.cfg.kv_dim(), {8, 4});
  ASSERT_TRUE(pool);
  f.plan.compute[0] = {0, 1, 2, 7};
  auto r = run_prefill(*be, *w, **pool, f.plan);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::invalid_argument);
  EXPECT_EQ((*pool)->stats().blocks_used, 0);
}

} // namespace
} // namespace mosaic
