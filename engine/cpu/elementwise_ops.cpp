#include "engine/cpu/elementwise_ops.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cpu/vec_math.hpp"

namespace mosaic::cpu {

namespace {

/// Elements per task: below ~32k floats a loop is faster than a wake-up.
constexpr int64_t elem_grain = 1 << 15;

/// Rows per task so that a task covers about `elem_grain` elements.
int64_t row_grain(int64_t row_len) {
  return std::max<int64_t>(1, elem_grain / std::max<int64_t>(1, row_len));
}

MOSAIC_CPU_CLONES
void add_span(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = a[i] + b[i];
}

MOSAIC_CPU_CLONES
void scale_span(float* __restrict x, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    x[i] *= s;
}

/// 0.5 x (1 + erf(x / sqrt 2)) written as 0.5 x erfc(-x / sqrt 2): the
/// same function, without the cancellation of 1 + erf for x << 0.
void gelu_span(float* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    x[i] = 0.5f * x[i] * std::erfc(x[i] * -0.70710678118654752f);
}

MOSAIC_CPU_CLONES
void quick_gelu_span(float* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    x[i] = x[i] / (1.0f + exp_f32(-1.702f * x[i]));
}

MOSAIC_CPU_CLONES
void silu_mul_span(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + exp_f32(-g)) * up[i];
  }
}

MOSAIC_CPU_CLONES
void rms_norm_row(const float* x, const float* __restrict w, float* y, int dim, float eps) {
  float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
  for (int i = 0; i < dim; ++i)
    ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
  for (int i = 0; i < dim; ++i)
    y[i] = x[i] * inv * w[i];
}

MOSAIC_CPU_CLONES
void layer_norm_row(const float* x, const float* __restrict w, const float* __restrict b, float* y,
                    int dim, float eps) {
  // Sums in double: the same (reference) precision on every clone; with
  // float lanes the baseline (SSE) clone missed 1e-5 at dim 4096.
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < dim; ++i)
    sum += x[i];
  const float mean = static_cast<float>(sum / dim);
  double var = 0.0;
#pragma omp simd reduction(+ : var)
  for (int i = 0; i < dim; ++i) {
    const double d = x[i] - mean;
    var += d * d;
  }
  const float inv = 1.0f / std::sqrt(static_cast<float>(var / dim) + eps);
  for (int i = 0; i < dim; ++i)
    y[i] = (x[i] - mean) * inv * w[i] + b[i];
}

MOSAIC_CPU_CLONES
void rope_row(float* __restrict x, const float* __restrict cs, const float* __restrict sn,
              int n_heads, int head_dim) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* __restrict x0 = x + static_cast<ptrdiff_t>(h) * head_dim;
    float* __restrict x1 = x0 + half;
    for (int i = 0; i < half; ++i) {
      const float a = x0[i];
      const float b = x1[i];
      x0[i] = a * cs[i] - b * sn[i];
      x1[i] = b * cs[i] + a * sn[i];
    }
  }
}

MOSAIC_CPU_CLONES
float sq_diff_row(const float* __restrict a, const float* __restrict b, int cols) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int c = 0; c < cols; ++c)
    s += (a[c] - b[c]) * (a[c] - b[c]);
  return s;
}

} // namespace

void add(thread_pool& pool, const float* a, const float* b, float* out, size_t n) {
  pool.parallel_for(0, static_cast<int64_t>(n), elem_grain,
                    [=](int64_t lo, int64_t hi) { add_span(a + lo, b + lo, out + lo, hi - lo); });
}

void add_bias(thread_pool& pool, float* x, const float* bias, int rows, int cols) {
  pool.parallel_for(0, rows, row_grain(cols), [=](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      add_span(x + r * cols, bias, x + r * cols, cols);
  });
}

void scale(thread_pool& pool, float* x, float s, size_t n) {
  pool.parallel_for(0, static_cast<int64_t>(n), elem_grain,
                    [=](int64_t lo, int64_t hi) { scale_span(x + lo, s, hi - lo); });
}

void gelu(thread_pool& pool, float* x, size_t n) {
  // erf is a libm call: fewer elements per task pay off.
  pool.parallel_for(0, static_cast<int64_t>(n), elem_grain / 8,
                    [=](int64_t lo, int64_t hi) { gelu_span(x + lo, hi - lo); });
}

void quick_gelu(thread_pool& pool, float* x, size_t n) {
  pool.parallel_for(0, static_cast<int64_t>(n), elem_grain,
                    [=](int64_t lo, int64_t hi) { quick_gelu_span(x + lo, hi - lo); });
}

void silu_mul(thread_pool& pool, const float* gate, const float* up, float* out, size_t n) {
  pool.parallel_for(0, static_cast<int64_t>(n), elem_grain, [=](int64_t lo, int64_t hi) {
    silu_mul_span(gate + lo, up + lo, out + lo, hi - lo);
  });
}

void rms_norm(thread_pool& pool, const float* x, const float* w, float* y, int rows, int dim,
              float eps) {
  pool.parallel_for(0, rows, row_grain(dim), [=](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      rms_norm_row(x + r * dim, w, y + r * dim, dim, eps);
  });
}

void layer_norm(thread_pool& pool, const float* x, const float* w, const float* b, float* y,
                int rows, int dim, float eps) {
  pool.parallel_for(0, rows, row_grain(dim), [=](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      layer_norm_row(x + r * dim, w, b, y + r * dim, dim, eps);
  });
}

namespace {

/// Fills `table` with the cos and sin of every (row, pair) for `rows` rows
/// of positions (component c of row r at pos_in[c * pos_stride + r]),
/// unless it holds them already (q and k of every layer share them).
void fill_rope_table(thread_pool& pool, rope_table& table, const int32_t* pos_in, int rows,
                     int pos_stride, int head_dim, float theta, const rope_sections& sections) {
  const int components = sections.components();
  const size_t n_pos = static_cast<size_t>(rows) * static_cast<size_t>(components);
  // Compact [components, rows] copy of the positions: the cache's key.
  std::vector<int32_t>& compact = table.staging;
  const int32_t* pos = pos_in;
  if (components > 1 && pos_stride != rows) {
    compact.resize(n_pos);
    for (int c = 0; c < components; ++c)
      std::copy_n(pos_in + static_cast<ptrdiff_t>(c) * pos_stride, rows,
                  compact.begin() + static_cast<ptrdiff_t>(c) * rows);
    pos = compact.data();
  }
  const bool hit = table.theta == theta && table.head_dim == head_dim &&
                   table.sections == sections && table.components == components &&
                   table.positions.size() == n_pos &&
                   std::equal(pos, pos + n_pos, table.positions.begin());
  if (hit)
    return;
  // Pair i's component and frequency. The angle pos * freq is formed in
  // double: in f32 a position of 32k would lose ~3 decimal digits of the
  // angle before the sine.
  const int half = head_dim / 2;
  std::vector<int> comp(static_cast<size_t>(half));
  std::vector<double> freq(static_cast<size_t>(half));
  for (int s = 0, i = 0, c = 0; s < 3; ++s) {
    const int n = sections.size[static_cast<size_t>(s)];
    if (n <= 0)
      continue;
    for (int j = 0; j < n; ++j, ++i) {
      comp[static_cast<size_t>(i)] = c;
      freq[static_cast<size_t>(i)] =
          sections.restart
              ? std::pow(static_cast<double>(theta), -static_cast<double>(j) / n)
              : std::pow(static_cast<double>(theta), -2.0 * i / static_cast<double>(head_dim));
    }
    ++c;
  }
  table.theta = theta;
  table.head_dim = head_dim;
  table.sections = sections;
  table.components = components;
  table.positions.assign(pos, pos + n_pos);
  table.cos.resize(static_cast<size_t>(rows) * half);
  table.sin.resize(static_cast<size_t>(rows) * half);
  pos = table.positions.data();
  const double* f = freq.data();
  const int* cp = comp.data();
  float* cs = table.cos.data();
  float* sn = table.sin.data();
  pool.parallel_for(0, rows, row_grain(static_cast<int64_t>(half) * 64),
                    [=](int64_t lo, int64_t hi) {
                      for (int64_t r = lo; r < hi; ++r)
                        for (int i = 0; i < half; ++i) {
                          const double p = static_cast<double>(pos[cp[i] * int64_t{rows} + r]);
                          const double angle = p * f[i];
                          cs[r * half + i] = static_cast<float>(std::cos(angle));
                          sn[r * half + i] = static_cast<float>(std::sin(angle));
                        }
                    });
}

void apply_rope_table(thread_pool& pool, const rope_table& table, float* x, int rows, int n_heads,
                      int head_dim, int stride) {
  const int half = head_dim / 2;
  const int64_t row_stride = stride > 0 ? stride : static_cast<int64_t>(n_heads) * head_dim;
  const float* cs = table.cos.data();
  const float* sn = table.sin.data();
  pool.parallel_for(
      0, rows, row_grain(static_cast<int64_t>(n_heads) * head_dim), [=](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r)
          rope_row(x + r * row_stride, cs + r * half, sn + r * half, n_heads, head_dim);
      });
}

} // namespace

void rope(thread_pool& pool, rope_table& table, float* x, const int32_t* pos, int rows, int n_heads,
          int head_dim, float theta, int stride) {
  const int half = head_dim / 2;
  if (half == 0 || rows <= 0)
    return;
  rope_sections one;
  one.size[0] = half;
  rope_sectioned(pool, table, x, pos, rows, n_heads, head_dim, theta, one, stride, rows);
}

void rope_sectioned(thread_pool& pool, rope_table& table, float* x, const int32_t* pos, int rows,
                    int n_heads, int head_dim, float theta, const rope_sections& sections,
                    int stride, int pos_stride) {
  const int half = head_dim / 2;
  if (half == 0 || rows <= 0 || sections.pairs() != half)
    return;
  fill_rope_table(pool, table, pos, rows, pos_stride > 0 ? pos_stride : rows, head_dim, theta,
                  sections);
  apply_rope_table(pool, table, x, rows, n_heads, head_dim, stride);
}

void gather_rows(thread_pool& pool, const float* src, const int32_t* idx, float* dst, int n,
                 int row_len) {
  const size_t bytes = static_cast<size_t>(row_len) * sizeof(float);
  pool.parallel_for(0, n, row_grain(row_len), [=](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      std::memcpy(dst + i * row_len, src + static_cast<int64_t>(idx[i]) * row_len, bytes);
  });
}

void scatter_rows(thread_pool& pool, const float* src, const int32_t* idx, float* dst, int n,
                  int row_len) {
  const size_t bytes = static_cast<size_t>(row_len) * sizeof(float);
  pool.parallel_for(0, n, row_grain(row_len), [=](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      std::memcpy(dst + static_cast<int64_t>(idx[i]) * row_len, src + i * row_len, bytes);
  });
}

void row_sq_diff(thread_pool& pool, const float* a, const float* b, float* out, int rows,
                 int cols) {
  pool.parallel_for(0, rows, row_grain(cols), [=](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      out[r] = sq_diff_row(a + r * cols, b + r * cols, cols);
  });
}

void im2col_patches(thread_pool& pool, const float* img, float* out, int channels, int height,
                    int width, int patch) {
  if (patch <= 0)
    return;
  const int n_py = height / patch;
  const int n_px = width / patch;
  const int64_t row_len = static_cast<int64_t>(channels) * patch * patch;
  const size_t bytes = static_cast<size_t>(patch) * sizeof(float);
  pool.parallel_for(
      0, static_cast<int64_t>(n_py) * n_px, row_grain(row_len), [=](int64_t lo, int64_t hi) {
        for (int64_t p = lo; p < hi; ++p) {
          const int64_t py = p / n_px;
          const int64_t px = p % n_px;
          float* dst = out + p * row_len;
          for (int64_t c = 0; c < channels; ++c)
            for (int64_t dy = 0; dy < patch; ++dy) {
              const float* src = img + (c * height + py * patch + dy) * width + px * patch;
              std::memcpy(dst + (c * patch + dy) * patch, src, bytes);
            }
        }
      });
}

} // namespace mosaic::cpu
