#pragma once

// Naive scalar references for every op of mosaic::backend, in double,
// written straight from the doc comments of engine/backend.hpp. They are
// the oracle of backend_ops_check.hpp; clarity over speed.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "engine/backend.hpp"

namespace mosaic::testing::ref {

using vec = std::vector<float>;
using ivec = std::vector<int32_t>;

/// c = alpha * a . op(b) + beta * c with explicit leading dimensions.
inline void matmul(const vec& a, const vec& b, vec& c, int m, int n, int k, bool trans_b,
                   float alpha, float beta, int lda, int ldb, int ldc) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0.0;
      for (int p = 0; p < k; ++p) {
        const double bv =
            trans_b ? b[static_cast<size_t>(j) * ldb + p] : b[static_cast<size_t>(p) * ldb + j];
        s += static_cast<double>(a[static_cast<size_t>(i) * lda + p]) * bv;
      }
      float& out = c[static_cast<size_t>(i) * ldc + j];
      out = static_cast<float>(alpha * s + (beta == 0.0f ? 0.0 : beta * static_cast<double>(out)));
    }
}

inline double gelu(double x) {
  return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
}
inline double quick_gelu(double x) {
  return x / (1.0 + std::exp(-1.702 * x));
}
inline double silu(double x) {
  return x / (1.0 + std::exp(-x));
}

inline vec rms_norm(const vec& x, const vec& w, int rows, int dim, float eps) {
  vec y(x.size());
  for (int r = 0; r < rows; ++r) {
    double ss = 0.0;
    for (int i = 0; i < dim; ++i)
      ss += static_cast<double>(x[static_cast<size_t>(r) * dim + i]) *
            x[static_cast<size_t>(r) * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int i = 0; i < dim; ++i)
      y[static_cast<size_t>(r) * dim + i] =
          static_cast<float>(x[static_cast<size_t>(r) * dim + i] * inv * w[static_cast<size_t>(i)]);
  }
  return y;
}

inline vec layer_norm(const vec& x, const vec& w, const vec& b, int rows, int dim, float eps) {
  vec y(x.size());
  for (int r = 0; r < rows; ++r) {
    const float* xr = x.data() + static_cast<size_t>(r) * dim;
    double mean = 0.0;
    for (int i = 0; i < dim; ++i)
      mean += xr[i];
    mean /= dim;
    double var = 0.0;
    for (int i = 0; i < dim; ++i)
      var += (xr[i] - mean) * (xr[i] - mean);
    const double inv = 1.0 / std::sqrt(var / dim + eps);
    for (int i = 0; i < dim; ++i)
      y[static_cast<size_t>(r) * dim + i] = static_cast<float>((xr[i] - mean) * inv * w[i] + b[i]);
  }
  return y;
}

/// HF rotate_half RoPE; rows of `stride` floats, heads packed at the start.
inline void rope(vec& x, const ivec& pos, int rows, int n_heads, int head_dim, float theta,
                 int stride) {
  const int half = head_dim / 2;
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < n_heads; ++h) {
      float* xh = x.data() + static_cast<size_t>(r) * stride + static_cast<size_t>(h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const double angle =
            pos[static_cast<size_t>(r)] * std::pow(static_cast<double>(theta), -2.0 * i / head_dim);
        const double a = xh[i];
        const double b = xh[i + half];
        xh[i] = static_cast<float>(a * std::cos(angle) - b * std::sin(angle));
        xh[i + half] = static_cast<float>(b * std::cos(angle) + a * std::sin(angle));
      }
    }
}

/// Sectioned rotary embedding, written from the definition: pair i of
/// section s (its j-th) turns by component s at theta^(-2i/head_dim), or
/// theta^(-j/size[s]) when sections restart. pos: [components, rows].
inline void rope_sectioned(vec& x, const ivec& pos, int rows, int n_heads, int head_dim,
                           float theta, const rope_sections& sec, int stride) {
  const int half = head_dim / 2;
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < n_heads; ++h) {
      float* xh = x.data() + static_cast<size_t>(r) * stride + static_cast<size_t>(h) * head_dim;
      int i = 0;
      int comp = 0;
      for (int s = 0; s < 3; ++s) {
        const int n = sec.size[static_cast<size_t>(s)];
        if (n == 0)
          continue;
        const double p = pos[static_cast<size_t>(comp) * rows + r];
        for (int j = 0; j < n; ++j, ++i) {
          const double freq = sec.restart
                                  ? std::pow(static_cast<double>(theta), -1.0 * j / n)
                                  : std::pow(static_cast<double>(theta), -2.0 * i / head_dim);
          const double a = xh[i];
          const double b = xh[i + half];
          xh[i] = static_cast<float>(a * std::cos(p * freq) - b * std::sin(p * freq));
          xh[i + half] = static_cast<float>(b * std::cos(p * freq) + a * std::sin(p * freq));
        }
        ++comp;
      }
    }
}

/// Softmax attention of one query row of one head over `nk` keys; keys
/// with visible[j] == false are skipped; no visible key gives zeros.
inline void attend_row(const float* q, const std::vector<const float*>& keys,
                       const std::vector<const float*>& values, const std::vector<bool>& visible,
                       int head_dim, float scale, float* out) {
  const size_t nk = keys.size();
  std::vector<double> s(nk, -std::numeric_limits<double>::infinity());
  double m = -std::numeric_limits<double>::infinity();
  for (size_t j = 0; j < nk; ++j) {
    if (!visible[j])
      continue;
    double dot = 0.0;
    for (int d = 0; d < head_dim; ++d)
      dot += static_cast<double>(q[d]) * keys[j][d];
    s[j] = dot * scale;
    m = std::max(m, s[j]);
  }
  std::vector<double> acc(static_cast<size_t>(head_dim), 0.0);
  double sum = 0.0;
  for (size_t j = 0; j < nk; ++j) {
    if (!visible[j])
      continue;
    const double p = std::exp(s[j] - m);
    sum += p;
    for (int d = 0; d < head_dim; ++d)
      acc[static_cast<size_t>(d)] += p * values[j][d];
  }
  for (int d = 0; d < head_dim; ++d)
    out[d] = sum > 0.0 ? static_cast<float>(acc[static_cast<size_t>(d)] / sum) : 0.0f;
}

/// backend::attention, straight from attention_args' contract.
inline vec attention(const attention_args& a) {
  const int hd = a.head_dim;
  const int group = a.n_heads / a.n_kv_heads;
  const int qs = a.q_stride > 0 ? a.q_stride : a.n_heads * hd;
  const int ks = a.kv_stride > 0 ? a.kv_stride : a.n_kv_heads * hd;
  vec out(static_cast<size_t>(a.nq) * a.n_heads * hd);
  for (int h = 0; h < a.n_heads; ++h) {
    const int kvh = h / group;
    std::vector<const float*> keys;
    std::vector<const float*> values;
    for (int j = 0; j < a.nk; ++j) {
      keys.push_back(a.k + static_cast<size_t>(j) * ks + static_cast<size_t>(kvh) * hd);
      values.push_back(a.v + static_cast<size_t>(j) * ks + static_cast<size_t>(kvh) * hd);
    }
    for (int i = 0; i < a.nq; ++i) {
      std::vector<bool> visible(static_cast<size_t>(a.nk));
      for (int j = 0; j < a.nk; ++j)
        visible[static_cast<size_t>(j)] = !a.causal || a.k_pos[j] <= a.q_pos[i];
      attend_row(a.q + static_cast<size_t>(i) * qs + static_cast<size_t>(h) * hd, keys, values,
                 visible, hd, a.scale, out.data() + (static_cast<size_t>(i) * a.n_heads + h) * hd);
    }
  }
  return out;
}

/// backend::paged_attention: gather each sequence's slots, then attend.
inline vec paged_attention(const paged_attention_args& a) {
  const int hd = a.head_dim;
  const int group = a.n_heads / a.n_kv_heads;
  const size_t row = static_cast<size_t>(a.n_kv_heads) * hd;
  vec out(static_cast<size_t>(a.n_seqs) * a.n_heads * hd);
  for (int s = 0; s < a.n_seqs; ++s)
    for (int h = 0; h < a.n_heads; ++h) {
      const int kvh = h / group;
      std::vector<const float*> keys;
      std::vector<const float*> values;
      for (int t = 0; t < a.seq_lens[s]; ++t) {
        const int block = a.block_tables[s * a.max_blocks_per_seq + t / a.block_size];
        const size_t slot = static_cast<size_t>(block) * a.block_size + t % a.block_size;
        keys.push_back(a.k_pool + slot * row + static_cast<size_t>(kvh) * hd);
        values.push_back(a.v_pool + slot * row + static_cast<size_t>(kvh) * hd);
      }
      attend_row(a.q + (static_cast<size_t>(s) * a.n_heads + h) * hd, keys, values,
                 std::vector<bool>(keys.size(), true), hd, a.scale,
                 out.data() + (static_cast<size_t>(s) * a.n_heads + h) * hd);
    }
  return out;
}

inline vec im2col_patches(const vec& img, int channels, int height, int width, int patch) {
  const int n_py = height / patch;
  const int n_px = width / patch;
  const int row_len = channels * patch * patch;
  vec out(static_cast<size_t>(n_py) * n_px * row_len);
  for (int py = 0; py < n_py; ++py)
    for (int px = 0; px < n_px; ++px)
      for (int c = 0; c < channels; ++c)
        for (int dy = 0; dy < patch; ++dy)
          for (int dx = 0; dx < patch; ++dx)
            out[static_cast<size_t>(py * n_px + px) * row_len + (c * patch + dy) * patch + dx] =
                img[(static_cast<size_t>(c) * height + py * patch + dy) * width + px * patch + dx];
  return out;
}

} // namespace mosaic::testing::ref
