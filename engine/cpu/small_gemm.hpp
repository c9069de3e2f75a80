#pragma once

// C = alpha * A * B^T + beta * C for a few rows of A: the linear layers of
// a decode step (one row per sequence of the batch). OpenBLAS 0.3.21 packs
// all of B, the weight matrix, on every call, which for a handful of rows
// costs more than the product itself; this kernel reads each row of B once
// and keeps the rows of A in cache. Internal to the CPU backend.

#include "engine/cpu/thread_pool.hpp"

namespace mosaic::cpu {

/// Rows of A up to which small_gemm_nt beats OpenBLAS here (decode_bench).
constexpr int small_gemm_max_rows = 24;

/// Row-major A [m, k] (row stride lda), B [n, k] (ldb), C [m, n] (ldc);
/// beta = 0 does not read C. Columns of C are split over the pool.
void small_gemm_nt(thread_pool& pool, const float* a, int lda, const float* b, int ldb, float* c,
                   int ldc, int m, int n, int k, float alpha, float beta);

} // namespace mosaic::cpu
