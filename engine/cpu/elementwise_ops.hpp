#pragma once

// Element-wise and row-wise kernels of the CPU backend (everything but the
// GEMMs and attention). Each runs on the pool; shapes as in
// engine/backend.hpp, whose doc comments define the semantics.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/backend.hpp"
#include "engine/cpu/thread_pool.hpp"

namespace mosaic::cpu {

// -- element-wise ---------------------------------------------------------------

void add(thread_pool& pool, const float* a, const float* b, float* out, size_t n);
void add_bias(thread_pool& pool, float* x, const float* bias, int rows, int cols);
void scale(thread_pool& pool, float* x, float s, size_t n);
void gelu(thread_pool& pool, float* x, size_t n);
void quick_gelu(thread_pool& pool, float* x, size_t n);
void silu_mul(thread_pool& pool, const float* gate, const float* up, float* out, size_t n);

// -- row-wise ---------------------------------------------------------------------

void rms_norm(thread_pool& pool, const float* x, const float* w, float* y, int rows, int dim,
              float eps);
void layer_norm(thread_pool& pool, const float* x, const float* w, const float* b, float* y,
                int rows, int dim, float eps);
/// cos and sin of every (row, frequency) of the last rope call, reused by
/// the next calls with the same positions (q and k of every layer of a
/// forward pass share them): the sines, in double, cost more than the
/// rotation itself.
struct rope_table {
  float theta = 0.0f;
  int head_dim = 0;
  rope_sections sections;         ///< {} for plain rope
  int components = 1;             ///< position arrays in `positions`
  std::vector<int32_t> positions; // [components, rows]
  std::vector<int32_t> staging;   // positions given with a pos_stride, compacted
  std::vector<float> cos;         // [rows, head_dim / 2]
  std::vector<float> sin;         // [rows, head_dim / 2]
};

void rope(thread_pool& pool, rope_table& table, float* x, const int32_t* pos, int rows, int n_heads,
          int head_dim, float theta, int stride);
void rope_sectioned(thread_pool& pool, rope_table& table, float* x, const int32_t* pos, int rows,
                    int n_heads, int head_dim, float theta, const rope_sections& sections,
                    int stride, int pos_stride);
void gather_rows(thread_pool& pool, const float* src, const int32_t* idx, float* dst, int n,
                 int row_len);
void scatter_rows(thread_pool& pool, const float* src, const int32_t* idx, float* dst, int n,
                  int row_len);
void row_sq_diff(thread_pool& pool, const float* a, const float* b, float* out, int rows, int cols);
void im2col_patches(thread_pool& pool, const float* img, float* out, int channels, int height,
                    int width, int patch);

} // namespace mosaic::cpu
