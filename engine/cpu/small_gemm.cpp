#include "engine/cpu/small_gemm.hpp"

#include <algorithm>
#include <cstdint>

#include "engine/cpu/vec_math.hpp"

namespace mosaic::cpu {

namespace {

/// The arguments of one call, shared by its column ranges.
struct gemm_args {
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  float* c;
  int64_t ldc;
  int m, k;
  float alpha, beta;
};

inline void store(const gemm_args& g, int i, int j, float sum) {
  float& out = g.c[i * g.ldc + j];
  out = g.beta == 0.0f ? g.alpha * sum : g.alpha * sum + g.beta * out;
}

MOSAIC_CPU_CLONES
void columns_generic(const gemm_args& g, int j0, int j1) {
  for (int j = j0; j < j1; ++j) {
    const float* __restrict bj = g.b + j * g.ldb;
    for (int i = 0; i < g.m; ++i) {
      const float* __restrict ai = g.a + i * g.lda;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int d = 0; d < g.k; ++d)
        dot += ai[d] * bj[d];
      store(g, i, j, dot);
    }
  }
}

#ifdef MOSAIC_HAVE_AVX2_PATH

__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

/// R rows of A x C rows of B (R * C accumulators, C B vectors in registers:
/// at most 16 YMM registers), rows i.. and columns j.. of C.
template <int R, int C>
__attribute__((target("avx2,fma"), always_inline)) inline void tile(const gemm_args& g, int i,
                                                                    int j) {
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c)
      acc[r][c] = _mm256_setzero_ps();
  const float* a = g.a + i * g.lda;
  const float* b = g.b + j * g.ldb;
  int d = 0;
  for (; d + 8 <= g.k; d += 8) {
    __m256 bv[C];
    for (int c = 0; c < C; ++c)
      bv[c] = _mm256_loadu_ps(b + c * g.ldb + d);
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_loadu_ps(a + r * g.lda + d);
      for (int c = 0; c < C; ++c)
        acc[r][c] = _mm256_fmadd_ps(av, bv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float sum = hsum(acc[r][c]);
      for (int e = d; e < g.k; ++e)
        sum += a[r * g.lda + e] * b[c * g.ldb + e];
      store(g, i + r, j + c, sum);
    }
}

template <int C>
__attribute__((target("avx2,fma"), always_inline)) inline void column_group(const gemm_args& g,
                                                                            int j) {
  int i = 0;
  for (; i + 4 <= g.m; i += 4)
    tile<4, C>(g, i, j);
  switch (g.m - i) {
  case 3:
    tile<3, C>(g, i, j);
    break;
  case 2:
    tile<2, C>(g, i, j);
    break;
  case 1:
    tile<1, C>(g, i, j);
    break;
  default:
    break;
  }
}

/// Columns three at a time: 12 accumulators + 3 B vectors; the rows of A
/// come from L1 as memory operands. The three B rows stay in L1 while every
/// row group of A passes over them.
__attribute__((target("avx2,fma"))) void columns_avx2(const gemm_args& g, int j0, int j1) {
  int j = j0;
  for (; j + 3 <= j1; j += 3)
    column_group<3>(g, j);
  for (; j < j1; ++j)
    column_group<1>(g, j);
}

#endif

} // namespace

void small_gemm_nt(thread_pool& pool, const float* a, int lda, const float* b, int ldb, float* c,
                   int ldc, int m, int n, int k, float alpha, float beta) {
  const gemm_args g{a, lda, b, ldb, c, ldc, m, k, alpha, beta};
  auto* columns = &columns_generic;
#ifdef MOSAIC_HAVE_AVX2_PATH
  if (have_avx2_fma())
    columns = &columns_avx2;
#endif
  // ~64 KiB of B per piece: enough work to pay for waking a thread.
  const int64_t grain = std::max<int64_t>(8, (int64_t{16} << 10) / std::max(1, k));
  pool.parallel_for(0, n, grain, [&](int64_t lo, int64_t hi) {
    columns(g, static_cast<int>(lo), static_cast<int>(hi));
  });
}

} // namespace mosaic::cpu
