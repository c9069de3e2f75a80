#include "engine/kv_pool.hpp"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <thread>

#include "engine/cpu/cpu_backend.hpp"

namespace mosaic {
namespace {

class kv_pool_test : public ::testing::Test {
protected:
  std::unique_ptr<backend> be_ = make_cpu_backend(1);
};

TEST_F(kv_pool_test, accounts_blocks_and_bytes_exactly) {
  auto pool = kv_pool::create(*be_, 2, 8, {10, 4});
  ASSERT_TRUE(pool) << pool.err().to_string();
  auto s = (*pool)->stats();
  EXPECT_EQ(s.blocks_total, 10);
  EXPECT_EQ(s.blocks_free, 10);
  EXPECT_EQ(s.bytes_per_block, 2u * 2 * 4 * 8 * sizeof(float));
  EXPECT_EQ(s.bytes_total, 10 * s.bytes_per_block);
  EXPECT_EQ(s.bytes_used, 0u);

  auto a = (*pool)->new_sequence();
  ASSERT_TRUE(a.reserve(9)); // 3 blocks of 4
  EXPECT_EQ(a.capacity(), 12);
  EXPECT_EQ(a.length(), 0);
  s = (*pool)->stats();
  EXPECT_EQ(s.blocks_used, 3);
  EXPECT_EQ(s.bytes_used, 3 * s.bytes_per_block);
  EXPECT_EQ(s.sequences, 1);
  ASSERT_TRUE(a.reserve(12)); // still fits
  EXPECT_EQ((*pool)->stats().blocks_used, 3);
  ASSERT_TRUE(a.set_length(12));
  EXPECT_FALSE(a.set_length(13));
  for (int t = 0; t < 12; ++t)
    EXPECT_EQ(a.slot(t), a.blocks()[size_t(t / 4)] * 4 + t % 4);

  a.release();
  EXPECT_FALSE(a.valid());
  s = (*pool)->stats();
  EXPECT_EQ(s.blocks_free, 10);
  EXPECT_EQ(s.sequences, 0);
}

TEST_F(kv_pool_test, out_of_blocks_is_an_error_that_allocates_nothing) {
  auto pool = kv_pool::create(*be_, 1, 4, {5, 3});
  ASSERT_TRUE(pool);
  auto a = (*pool)->new_sequence();
  ASSERT_TRUE(a.reserve(9)); // 3 blocks
  auto b = (*pool)->new_sequence();
  auto r = b.reserve(7); // needs 3, 2 free
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::out_of_memory);
  EXPECT_NE(r.err().message.find("free"), std::string::npos);
  EXPECT_EQ(b.capacity(), 0);
  EXPECT_EQ((*pool)->stats().blocks_free, 2);
  ASSERT_TRUE(b.reserve(6));
  EXPECT_EQ((*pool)->stats().blocks_free, 0);
}

TEST_F(kv_pool_test, destroying_or_moving_handles_frees_exactly_once) {
  auto pool = kv_pool::create(*be_, 1, 4, {8, 2});
  ASSERT_TRUE(pool);
  {
    auto a = (*pool)->new_sequence();
    ASSERT_TRUE(a.reserve(5));
    kv_sequence moved = std::move(a);
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(moved.capacity(), 6);
    EXPECT_EQ((*pool)->stats().blocks_used, 3);
    kv_sequence other = (*pool)->new_sequence();
    ASSERT_TRUE(other.reserve(2));
    other = std::move(moved); // frees other's block
    EXPECT_EQ((*pool)->stats().blocks_used, 3);
  }
  EXPECT_EQ((*pool)->stats().blocks_used, 0);
  EXPECT_EQ((*pool)->stats().sequences, 0);
}

TEST_F(kv_pool_test, random_workload_never_shares_a_slot_and_drains_to_empty) {
  const auto seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng{seed};
  auto pool = kv_pool::create(*be_, 1, 2, {40, 5});
  ASSERT_TRUE(pool);
  std::vector<kv_sequence> live;
  for (int step = 0; step < 400; ++step) {
    if (!live.empty() && rng() % 3 == 0) {
      live.erase(live.begin() + static_cast<ptrdiff_t>(rng() % live.size()));
    } else if (!live.empty() && rng() % 2 == 0) {
      auto& s = live[rng() % live.size()];
      const int want = s.capacity() + static_cast<int>(rng() % 12);
      const int free_before = (*pool)->stats().blocks_free;
      auto r = s.reserve(want);
      if (!r) {
        EXPECT_EQ((*pool)->stats().blocks_free, free_before);
      }
    } else {
      live.push_back((*pool)->new_sequence());
      (void)live.back().reserve(static_cast<int>(rng() % 20));
    }
    std::set<int32_t> slots;
    int used = 0;
    for (const auto& s : live) {
      used += static_cast<int>(s.blocks().size());
      for (int t = 0; t < s.capacity(); ++t)
        ASSERT_TRUE(slots.insert(s.slot(t)).second) << "slot shared";
    }
    const auto st = (*pool)->stats();
    ASSERT_EQ(st.blocks_used, used);
    ASSERT_EQ(st.blocks_used + st.blocks_free, st.blocks_total);
  }
  live.clear();
  EXPECT_EQ((*pool)->stats().blocks_free, 40);
}

TEST_F(kv_pool_test, rejects_bad_geometry) {
  auto r = kv_pool::create(*be_, 2, 8, {0, 16});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::invalid_argument);
  EXPECT_FALSE(kv_pool::create(*be_, 0, 8, {4, 4}));
}

TEST_F(kv_pool_test, published_blocks_are_shared_by_reference_and_evicted_lru_when_needed) {
  auto created = kv_pool::create(*be_, 1, 4, {6, 2});
  ASSERT_TRUE(created);
  auto& pool = **created;
  auto a = pool.new_sequence();
  ASSERT_TRUE(a.reserve(6)); // 3 blocks
  const auto blocks = a.blocks();
  digest h0{}, h1{}, h2{};
  h0[0] = 1;
  h1[0] = 2;
  h2[0] = 3;
  EXPECT_TRUE(pool.publish(blocks[0], h0));
  EXPECT_TRUE(pool.publish(blocks[1], h1));
  EXPECT_FALSE(pool.publish(blocks[2], h0)); // the hash is taken
  EXPECT_FALSE(pool.publish(blocks[0], h2)); // the block is published already
  EXPECT_EQ(pool.stats().blocks_cached, 2);

  // A second sequence adopts the published blocks: no new memory.
  const int32_t b0 = pool.acquire_cached(h0);
  const int32_t b1 = pool.acquire_cached(h1);
  EXPECT_EQ(b0, blocks[0]);
  EXPECT_EQ(b1, blocks[1]);
  EXPECT_EQ(pool.acquire_cached(h2), -1);
  auto b = pool.adopt({b0, b1}, 4);
  EXPECT_EQ(b.length(), 4);
  EXPECT_EQ(pool.stats().blocks_used, 3);
  a.release();
  EXPECT_EQ(pool.stats().blocks_used, 2); // the unpublished block is free again
  b.release();
  auto s = pool.stats();
  EXPECT_EQ(s.blocks_used, 0);
  EXPECT_EQ(s.blocks_free, 6);
  EXPECT_EQ(s.blocks_evictable, 2);

  // Allocation takes never-used blocks first, then the least recently
  // released cached block (a sequence's tail before its head).
  auto c = pool.new_sequence();
  ASSERT_TRUE(c.reserve(8)); // 4 free blocks
  EXPECT_EQ(pool.stats().evictions, 0u);
  ASSERT_TRUE(c.reserve(10));
  EXPECT_EQ(pool.stats().evictions, 1u);
  EXPECT_EQ(pool.acquire_cached(h1), -1); // the tail went first
  const int32_t still = pool.acquire_cached(h0);
  EXPECT_EQ(still, blocks[0]);
  // A referenced block is never evicted: the pool is full now.
  auto d = pool.new_sequence();
  auto r = d.reserve(1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::out_of_memory);
  pool.release_blocks(std::span<const int32_t>{&still, 1});
  EXPECT_TRUE(d.reserve(1)); // now it is
  EXPECT_EQ(pool.acquire_cached(h0), -1);
}

TEST_F(kv_pool_test, clear_cache_frees_unreferenced_published_blocks) {
  auto created = kv_pool::create(*be_, 1, 4, {4, 2});
  ASSERT_TRUE(created);
  auto& pool = **created;
  auto a = pool.new_sequence();
  ASSERT_TRUE(a.reserve(4));
  digest h0{}, h1{};
  h1[0] = 1;
  ASSERT_TRUE(pool.publish(a.blocks()[0], h0));
  ASSERT_TRUE(pool.publish(a.blocks()[1], h1));
  const int32_t kept = pool.acquire_cached(h0);
  a.release();
  pool.clear_cache();
  EXPECT_EQ(pool.acquire_cached(h1), -1);
  EXPECT_EQ(pool.stats().blocks_cached, 1); // h0 is referenced
  pool.release_blocks(std::span<const int32_t>{&kept, 1});
  pool.clear_cache();
  auto s = pool.stats();
  EXPECT_EQ(s.blocks_cached, 0);
  EXPECT_EQ(s.blocks_free, 4);
}

TEST_F(kv_pool_test, sharing_and_eviction_from_many_threads_keep_the_books_balanced) {
  auto created = kv_pool::create(*be_, 1, 4, {64, 4});
  ASSERT_TRUE(created);
  auto& pool = **created;
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w)
    threads.emplace_back([&pool, seed, w] {
      std::mt19937 rng(seed + static_cast<uint32_t>(w));
      for (int i = 0; i < 2000; ++i) {
        // Take up to 3 cached blocks of 8 hashes, then new blocks; publish
        // some; release everything.
        std::vector<int32_t> adopted;
        for (int b = 0; b < 3; ++b) {
          digest h{};
          h[0] = static_cast<uint8_t>(rng() % 8);
          const int32_t got = pool.acquire_cached(h);
          if (got < 0)
            break;
          adopted.push_back(got);
        }
        auto seq = pool.adopt(adopted, static_cast<int>(adopted.size()) * 4);
        if (!seq.reserve(seq.capacity() + 4 * static_cast<int>(1 + rng() % 3)))
          continue; // the pool is full right now
        digest h{};
        h[0] = static_cast<uint8_t>(rng() % 8);
        pool.publish(seq.blocks().back(), h);
      }
    });
  for (auto& t : threads)
    t.join();
  const auto s = pool.stats();
  EXPECT_EQ(s.blocks_used, 0);
  EXPECT_EQ(s.blocks_free, 64);
  EXPECT_EQ(s.sequences, 0);
  EXPECT_LE(s.blocks_cached, 8);
  EXPECT_EQ(s.blocks_evictable, s.blocks_cached);
}

} // namespace
} // namespace mosaic
