#include "engine/cpu/key_scores.hpp"

#include "engine/cpu/vec_math.hpp"

namespace mosaic::cpu {

namespace {

MOSAIC_CPU_CLONES
void key_scores_generic(const float* q, int group, int head_dim, const float* k, int64_t k_stride,
                        int n_keys, float scale, float* out, int64_t out_stride) {
  for (int j = 0; j < n_keys; ++j) {
    const float* __restrict kj = k + j * k_stride;
    for (int h = 0; h < group; ++h) {
      const float* __restrict qh = q + static_cast<int64_t>(h) * head_dim;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int d = 0; d < head_dim; ++d)
        dot += qh[d] * kj[d];
      out[h * out_stride + j] = dot * scale;
    }
  }
}

#ifdef MOSAIC_HAVE_AVX2_PATH

/// Eight dot products at once: eight accumulators, then one transposing
/// reduction (hadd tree) instead of eight horizontal sums.
__attribute__((target("avx2,fma"))) void key_scores_avx2(const float* q, int group, int head_dim,
                                                         const float* k, int64_t k_stride,
                                                         int n_keys, float scale, float* out,
                                                         int64_t out_stride) {
  const __m256 vscale = _mm256_set1_ps(scale);
  int j = 0;
  for (; j + 8 <= n_keys; j += 8) {
    const float* kj = k + j * k_stride;
    for (int h = 0; h < group; ++h) {
      const float* qh = q + static_cast<int64_t>(h) * head_dim;
      __m256 acc[8];
      for (auto& a : acc)
        a = _mm256_setzero_ps();
      for (int d = 0; d < head_dim; d += 8) {
        const __m256 qv = _mm256_loadu_ps(qh + d);
        for (int r = 0; r < 8; ++r)
          acc[r] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + r * k_stride + d), acc[r]);
      }
      const __m256 t0 = _mm256_hadd_ps(acc[0], acc[1]);
      const __m256 t1 = _mm256_hadd_ps(acc[2], acc[3]);
      const __m256 t2 = _mm256_hadd_ps(acc[4], acc[5]);
      const __m256 t3 = _mm256_hadd_ps(acc[6], acc[7]);
      const __m256 u0 = _mm256_hadd_ps(t0, t1); // keys 0-3, low and high halves
      const __m256 u1 = _mm256_hadd_ps(t2, t3); // keys 4-7
      const __m256 sum =
          _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
      _mm256_storeu_ps(out + h * out_stride + j, _mm256_mul_ps(sum, vscale));
    }
  }
  if (j < n_keys)
    key_scores_generic(q, group, head_dim, k + j * k_stride, k_stride, n_keys - j, scale, out + j,
                       out_stride);
}

#endif

} // namespace

void key_scores(const float* q, int group, int head_dim, const float* k, int64_t k_stride,
                int n_keys, float scale, float* out, int64_t out_stride) {
#ifdef MOSAIC_HAVE_AVX2_PATH
  if (head_dim % 8 == 0 && have_avx2_fma()) {
    key_scores_avx2(q, group, head_dim, k, k_stride, n_keys, scale, out, out_stride);
    return;
  }
#endif
  key_scores_generic(q, group, head_dim, k, k_stride, n_keys, scale, out, out_stride);
}

} // namespace mosaic::cpu
