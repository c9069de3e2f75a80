#include "engine/cpu/attention_tile.hpp"

#include <algorithm>

#include "engine/cpu/vec_math.hpp"

namespace mosaic::cpu {

bool attention_tile_kernels(int head_dim) {
  return head_dim > 0 && head_dim % 16 == 0 && have_avx2_fma();
}

void pack_key_panels(const float* k, int64_t stride, int nk, int head_dim, float* out) {
  const int panels = (nk + key_panel - 1) / key_panel;
  for (int pn = 0; pn < panels; ++pn) {
    float* dst = out + static_cast<int64_t>(pn) * head_dim * key_panel;
    const int j0 = pn * key_panel;
    const int n = std::min(key_panel, nk - j0);
    for (int j = 0; j < n; ++j) {
      const float* src = k + static_cast<int64_t>(j0 + j) * stride;
      for (int d = 0; d < head_dim; ++d)
        dst[d * key_panel + j] = src[d];
    }
    for (int j = n; j < key_panel; ++j)
      for (int d = 0; d < head_dim; ++d)
        dst[d * key_panel + j] = 0.0f;
  }
}

#ifdef MOSAIC_HAVE_AVX2_PATH

namespace {

/// R query rows x one 16-key panel: 2R accumulators, the panel's two
/// vectors per dimension, the query element broadcast from L1.
template <int R>
__attribute__((target("avx2,fma"), always_inline)) inline void
scores_block(const float* q, int hd, const float* panel, float* s, int64_t lds) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r)
    acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int d = 0; d < hd; ++d) {
    const __m256 k0 = _mm256_loadu_ps(panel + d * key_panel);
    const __m256 k1 = _mm256_loadu_ps(panel + d * key_panel + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 qv = _mm256_broadcast_ss(q + static_cast<int64_t>(r) * hd + d);
      acc[r][0] = _mm256_fmadd_ps(qv, k0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(qv, k1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(s + r * lds, acc[r][0]);
    _mm256_storeu_ps(s + r * lds + 8, acc[r][1]);
  }
}

/// R rows of P x 16 dimensions of V: 2R accumulators held over every key
/// of the tile, V's 16 floats of key j loaded once for the R rows.
template <int R>
__attribute__((target("avx2,fma"), always_inline)) inline void
values_block(const float* p, int64_t ldp, int n, const float* v, int64_t ldv, int hd, float* o) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) {
    acc[r][0] = _mm256_loadu_ps(o + static_cast<int64_t>(r) * hd);
    acc[r][1] = _mm256_loadu_ps(o + static_cast<int64_t>(r) * hd + 8);
  }
  for (int j = 0; j < n; ++j) {
    const __m256 v0 = _mm256_loadu_ps(v + j * ldv);
    const __m256 v1 = _mm256_loadu_ps(v + j * ldv + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 pv = _mm256_broadcast_ss(p + r * ldp + j);
      acc[r][0] = _mm256_fmadd_ps(pv, v0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(pv, v1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(o + static_cast<int64_t>(r) * hd, acc[r][0]);
    _mm256_storeu_ps(o + static_cast<int64_t>(r) * hd + 8, acc[r][1]);
  }
}

/// Calls block<R>(r) for row groups of 6, then the remaining 1-5 rows.
template <template <int> class Block, class... Args>
__attribute__((target("avx2,fma"), always_inline)) inline void by_row_groups(int rows,
                                                                             Args&&... args) {
  int r = 0;
  for (; r + 6 <= rows; r += 6)
    Block<6>::run(r, args...);
  switch (rows - r) {
  case 5:
    Block<5>::run(r, args...);
    break;
  case 4:
    Block<4>::run(r, args...);
    break;
  case 3:
    Block<3>::run(r, args...);
    break;
  case 2:
    Block<2>::run(r, args...);
    break;
  case 1:
    Block<1>::run(r, args...);
    break;
  default:
    break;
  }
}

template <int R>
struct scores_rows {
  __attribute__((target("avx2,fma"), always_inline)) static void
  run(int r, const float* q, int hd, const float* panel, float* s, int64_t lds) {
    scores_block<R>(q + static_cast<int64_t>(r) * hd, hd, panel, s + r * lds, lds);
  }
};

template <int R>
struct values_rows {
  __attribute__((target("avx2,fma"), always_inline)) static void
  run(int r, const float* p, int64_t ldp, int n, const float* v, int64_t ldv, int hd, float* o) {
    values_block<R>(p + r * ldp, ldp, n, v, ldv, hd, o + static_cast<int64_t>(r) * hd);
  }
};

} // namespace

/// Panel by panel: each 16-key panel (hd x 16 floats, 4 KiB at hd 64)
/// stays in L1 while every row group passes over it.
__attribute__((target("avx2,fma"))) void tile_scores(const float* q, int rows, int head_dim,
                                                     const float* panels, int n, float* s,
                                                     int64_t lds) {
  for (int j0 = 0; j0 < n; j0 += key_panel)
    by_row_groups<scores_rows>(rows, q, head_dim, panels + static_cast<int64_t>(j0) * head_dim,
                               s + j0, lds);
}

/// Sixteen dimensions at a time: V's column strip over the tile's keys
/// (n x 64 bytes, 16 KiB at 256 keys) stays in L1 while every row group
/// passes over it.
__attribute__((target("avx2,fma"))) void tile_weighted_values(const float* p, int64_t ldp, int rows,
                                                              int n, const float* v, int64_t ldv,
                                                              int head_dim, float* o) {
  for (int d0 = 0; d0 < head_dim; d0 += 16)
    by_row_groups<values_rows>(rows, p, ldp, n, v + d0, ldv, head_dim, o + d0);
}

#else

// No AVX2 path in this build: attention_tile_kernels() is false and the
// attention runs on sgemm; these are never called.
void tile_scores(const float*, int, int, const float*, int, float*, int64_t) {}
void tile_weighted_values(const float*, int64_t, int, int, const float*, int64_t, int, float*) {}

#endif

} // namespace mosaic::cpu
