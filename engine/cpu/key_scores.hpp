#pragma once

// Scores of a few query heads against a run of key rows: the inner loop of
// decode attention, where one query row meets thousands of keys and the
// horizontal sums of plain dot products would dominate.

#include <cstdint>

namespace mosaic::cpu {

/// out[h * out_stride + j] = scale * dot(q[h, :], k[j, :]) for h < group,
/// j < n_keys. q: [group, head_dim] contiguous; k: [n_keys, head_dim] with
/// row stride k_stride. Uses AVX2+FMA (eight keys per horizontal sum) where
/// the CPU has it and head_dim % 8 == 0, plain loops elsewhere.
void key_scores(const float* q, int group, int head_dim, const float* k, int64_t k_stride,
                int n_keys, float scale, float* out, int64_t out_stride);

} // namespace mosaic::cpu
