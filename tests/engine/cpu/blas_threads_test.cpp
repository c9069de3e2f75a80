#include "engine/cpu/blas_threads.hpp"

#include <cblas.h>
#include <gtest/gtest.h>

#include <optional>
#include <thread>

namespace mosaic::cpu {
namespace {

// Two backends' attention calls overlap: the second to finish must not
// hand OpenBLAS its threads back while the first still runs its tiles, and
// a backend created meanwhile must not either (issue #20, item 6).
TEST(blas_threads, single_threaded_sections_nest_across_threads) {
  blas_register_pool(2);
  const int width = blas_process_width();
  ASSERT_GE(width, 2);
  EXPECT_EQ(openblas_get_num_threads(), width);
  {
    std::optional<blas_single_threaded> first{std::in_place};
    EXPECT_EQ(openblas_get_num_threads(), 1);
    std::thread other{[] {
      blas_single_threaded second;
      EXPECT_EQ(openblas_get_num_threads(), 1);
    }};
    other.join();
    EXPECT_EQ(openblas_get_num_threads(), 1) << "the other section's end restored the width";
    blas_register_pool(width + 1);
    EXPECT_EQ(openblas_get_num_threads(), 1) << "a new pool raised the width inside a section";
    first.reset();
  }
  EXPECT_EQ(blas_process_width(), width + 1);
  EXPECT_EQ(openblas_get_num_threads(), width + 1);
}

TEST(blas_threads, many_threads_open_and_close_sections) {
  blas_register_pool(2);
  const int width = blas_process_width();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([] {
      for (int i = 0; i < 2000; ++i) {
        blas_single_threaded s;
        ASSERT_EQ(openblas_get_num_threads(), 1);
      }
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(openblas_get_num_threads(), width);
}

} // namespace
} // namespace mosaic::cpu
