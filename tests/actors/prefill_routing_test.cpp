// The prefill router's choice (actors/prefill_routing.hpp) as a pure
// function, and its bounded affinity index.

#include <vector>

#include <gtest/gtest.h>

#include "actors/prefill_routing.hpp"

namespace mosaic::actors {
namespace {

constexpr uint32_t image_tokens = 576;

route_candidate worker_with(uint32_t requests, uint64_t tokens, uint32_t held, bool up = true) {
  return route_candidate{up, requests, tokens, held};
}

TEST(pick_prefill, cache_aware_prefers_the_worker_that_holds_the_images) {
  std::vector<route_candidate> w = {worker_with(0, 0, 0), worker_with(0, 0, 2)};
  auto c = pick_prefill(w, router_strategy::cache_aware, {}, 2, image_tokens, 0);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->worker, 1u);
  EXPECT_EQ(c->held_images, 2u);
  EXPECT_EQ(c->cost, 0.0);
}

TEST(pick_prefill, load_outweighs_affinity_once_the_holder_is_busy_enough) {
  // Worker 1 holds the one image but has two requests' worth of tokens in
  // flight; worker 0 is idle: recomputing 576 tokens costs less.
  std::vector<route_candidate> w = {worker_with(0, 0, 0),
                                    worker_with(2, 2 * (image_tokens + 10), 1)};
  auto c = pick_prefill(w, router_strategy::cache_aware, {}, 1, image_tokens, 0);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->worker, 0u);
  EXPECT_EQ(c->cost, double(image_tokens));
  // With load weighed lightly, affinity wins again.
  auto light = pick_prefill(w, router_strategy::cache_aware, {1.0, 0.1}, 1, image_tokens, 0);
  ASSERT_TRUE(light);
  EXPECT_EQ(light->worker, 1u);
}

TEST(pick_prefill, equal_costs_go_to_fewer_requests_then_round_robin) {
  std::vector<route_candidate> w = {worker_with(3, 100, 0), worker_with(1, 100, 0),
                                    worker_with(1, 100, 0)};
  auto c = pick_prefill(w, router_strategy::cache_aware, {}, 0, image_tokens, 0);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->worker, 1u);
  auto next = pick_prefill(w, router_strategy::cache_aware, {}, 0, image_tokens, 2);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->worker, 2u); // the tie is broken by the round-robin start
}

TEST(pick_prefill, least_loaded_ignores_affinity) {
  std::vector<route_candidate> w = {worker_with(0, 10, 0), worker_with(0, 20, 3)};
  auto c = pick_prefill(w, router_strategy::least_loaded, {}, 3, image_tokens, 1);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->worker, 0u);
  EXPECT_EQ(c->held_images, 0u);
}

TEST(pick_prefill, round_robin_takes_the_next_up_worker) {
  std::vector<route_candidate> w = {worker_with(0, 0, 0), worker_with(9, 9000, 0, false),
                                    worker_with(9, 9000, 0)};
  auto c = pick_prefill(w, router_strategy::round_robin, {}, 0, image_tokens, 1);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->worker, 2u);
}

TEST(pick_prefill, a_down_worker_is_skipped_even_when_it_holds_everything) {
  std::vector<route_candidate> w = {worker_with(5, 5000, 0), worker_with(0, 0, 4, false)};
  for (auto s : {router_strategy::cache_aware, router_strategy::least_loaded,
                 router_strategy::round_robin}) {
    auto c = pick_prefill(w, s, {}, 4, image_tokens, 1);
    ASSERT_TRUE(c) << to_string(s);
    EXPECT_EQ(c->worker, 0u) << to_string(s);
  }
}

TEST(pick_prefill, none_up_or_none_at_all_is_nullopt) {
  std::vector<route_candidate> w = {worker_with(0, 0, 0, false), worker_with(0, 0, 0, false)};
  EXPECT_FALSE(pick_prefill(w, router_strategy::cache_aware, {}, 1, image_tokens, 0));
  EXPECT_FALSE(pick_prefill({}, router_strategy::cache_aware, {}, 1, image_tokens, 0));
}

TEST(pick_prefill, held_beyond_the_request_images_is_capped) {
  std::vector<route_candidate> w = {worker_with(0, 0, 5)};
  auto c = pick_prefill(w, router_strategy::cache_aware, {}, 2, image_tokens, 0);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->held_images, 2u);
  EXPECT_EQ(c->cost, 0.0);
}

TEST(route_keys, are_tenant_scoped_and_name_the_same_image_the_same_way) {
  std::vector<uint8_t> png = {1, 2, 3, 4};
  EXPECT_EQ(route_key_of_bytes("a", png), route_key_of_bytes("a", png));
  EXPECT_NE(route_key_of_bytes("a", png), route_key_of_bytes("b", png));
  // Length-prefixed: ("ab", x) and ("a", "b"+x) do not collide.
  digest k{};
  k[0] = 7;
  EXPECT_NE(route_key_of_image_key("ab", k), route_key_of_image_key("a", k));
  EXPECT_NE(route_key_of_image_key("a", k), route_key_of_bytes("a", png));

  wire::generate_request req;
  req.tenant = "a";
  req.segments = {wire::text_segment{"look: "}, wire::image_data_segment{png, "image/png"},
                  wire::image_key_segment{k}};
  auto keys = route_keys(req);
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0], route_key_of_bytes("a", png));
  EXPECT_EQ(keys[1], route_key_of_image_key("a", k));
}

digest key_n(int n) {
  digest d{};
  d[0] = uint8_t(n);
  d[1] = uint8_t(n >> 8);
  return d;
}

TEST(affinity_index, records_per_worker_and_counts_what_a_request_would_find) {
  affinity_index idx{2, 8};
  idx.record(0, key_n(1));
  idx.record(1, key_n(2));
  EXPECT_TRUE(idx.holds(0, key_n(1)));
  EXPECT_FALSE(idx.holds(1, key_n(1)));
  std::vector<digest> want = {key_n(1), key_n(2), key_n(3)};
  EXPECT_EQ(idx.count_held(0, want), 1u);
  EXPECT_EQ(idx.count_held(1, want), 1u);
  EXPECT_EQ(idx.count_held(7, want), 0u); // no such worker
  idx.forget(0);
  EXPECT_EQ(idx.size(0), 0u);
  EXPECT_TRUE(idx.holds(1, key_n(2)));
}

TEST(affinity_index, is_bounded_and_evicts_the_least_recently_touched) {
  affinity_index idx{1, 3};
  idx.record(0, key_n(1));
  idx.record(0, key_n(2));
  idx.record(0, key_n(3));
  idx.record(0, key_n(1)); // touched again: 2 is now the oldest
  idx.record(0, key_n(4));
  EXPECT_EQ(idx.size(0), 3u);
  EXPECT_FALSE(idx.holds(0, key_n(2)));
  for (int k : {1, 3, 4})
    EXPECT_TRUE(idx.holds(0, key_n(k))) << k;
  for (int k = 0; k < 1000; ++k)
    idx.record(0, key_n(100 + k));
  EXPECT_EQ(idx.size(0), 3u);
}

} // namespace
} // namespace mosaic::actors
