#include "engine/cpu/thread_pool.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

namespace mosaic::cpu {
namespace {

/// Runs one loop and checks that every index ran exactly once and that
/// no sub-range but the last is shorter than the grain.
void expect_covers_once(thread_pool& pool, int64_t begin, int64_t end, int64_t grain) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(std::max<int64_t>(0, end - begin)));
  std::atomic<int> short_ranges{0};
  pool.parallel_for(begin, end, grain, [&](int64_t lo, int64_t hi) {
    if (hi - lo < grain && hi != end)
      ++short_ranges;
    for (int64_t i = lo; i < hi; ++i)
      ++hits[static_cast<size_t>(i - begin)];
  });
  for (size_t i = 0; i < hits.size(); ++i)
    ASSERT_EQ(hits[i].load(), 1) << "index " << begin + static_cast<int64_t>(i) << " of [" << begin
                                 << ", " << end << ") grain " << grain;
  EXPECT_EQ(short_ranges.load(), 0);
}

TEST(thread_pool, sizes_to_the_machine_by_default) {
  thread_pool pool{0};
  EXPECT_EQ(pool.size(), static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  thread_pool three{3};
  EXPECT_EQ(three.size(), 3);
}

TEST(thread_pool, covers_random_ranges_exactly_once) {
  std::mt19937 rng{std::random_device{}()};
  for (int threads : {1, 2, 4}) {
    thread_pool pool{threads};
    for (int trial = 0; trial < 50; ++trial) {
      const int64_t begin = std::uniform_int_distribution<int64_t>{-100, 100}(rng);
      const int64_t len = std::uniform_int_distribution<int64_t>{0, 5000}(rng);
      const int64_t grain = std::uniform_int_distribution<int64_t>{1, 700}(rng);
      expect_covers_once(pool, begin, begin + len, grain);
    }
    expect_covers_once(pool, 0, 1, 1);
    expect_covers_once(pool, 5, 5, 1); // empty: fn never runs
  }
}

TEST(thread_pool, spreads_work_over_its_threads) {
  thread_pool pool{2};
  std::mutex mtx;
  std::vector<std::thread::id> seen;
  // Each chunk waits a little, so a single thread cannot drain them all
  // before the worker wakes up.
  pool.parallel_for(0, 64, 1, [&](int64_t, int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::lock_guard guard{mtx};
    if (std::find(seen.begin(), seen.end(), std::this_thread::get_id()) == seen.end())
      seen.push_back(std::this_thread::get_id());
  });
  EXPECT_EQ(seen.size(), 2u);
}

TEST(thread_pool, nested_loops_run_inline_instead_of_deadlocking) {
  thread_pool pool{2};
  std::atomic<int64_t> sum{0};
  pool.parallel_for(0, 8, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      pool.parallel_for(0, 100, 1, [&](int64_t a, int64_t b) { sum += b - a; });
  });
  EXPECT_EQ(sum.load(), 800);
}

TEST(thread_pool, loops_from_several_threads_all_complete) {
  thread_pool pool{2};
  std::atomic<int64_t> sum{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep)
        pool.parallel_for(0, 1000, 10, [&](int64_t lo, int64_t hi) { sum += hi - lo; });
    });
  for (auto& c : callers)
    c.join();
  EXPECT_EQ(sum.load(), 4 * 50 * 1000);
}

} // namespace
} // namespace mosaic::cpu
