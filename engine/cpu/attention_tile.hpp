#pragma once

// The two products of one flash-attention tile on AVX2+FMA, in place of two
// sgemm calls: OpenBLAS packs both operands on every call, and with
// K = head_dim (64) the packing and the call cost a large share of the
// product (the kernel ran at 0.55-0.62 of the sgemm peak). Keys are packed
// once per attention call into 16-key panels; scores and P.V run on
// register tiles of up to 6 rows. Internal to the CPU backend.

#include <cstdint>

namespace mosaic::cpu {

/// Keys per panel of packed keys.
constexpr int key_panel = 16;

/// Whether the tile kernels run here for heads of `head_dim`: an AVX2+FMA
/// CPU and head_dim a multiple of 16.
bool attention_tile_kernels(int head_dim);

/// Packs keys [0, nk) of one kv head (row j at k + j * stride, head_dim
/// floats) into panels: panel p holds keys 16p..16p+15 as [head_dim][16],
/// keys past nk as zeros. `out` has room for round_up(nk, 16) * head_dim.
void pack_key_panels(const float* k, int64_t stride, int nk, int head_dim, float* out);

/// s[r * lds + j] = q[r * head_dim ..] . key (k0 + j) for r < rows and
/// j < round_up(n, 16), from the panels of keys k0.. (k0 a multiple of 16;
/// `panels` points at panel k0 / 16). lds >= round_up(n, 16).
void tile_scores(const float* q, int rows, int head_dim, const float* panels, int n, float* s,
                 int64_t lds);

/// o[r * head_dim ..] += sum over j < n of p[r * ldp + j] * v[j * ldv ..],
/// for r < rows.
void tile_weighted_values(const float* p, int64_t ldp, int rows, int n, const float* v, int64_t ldv,
                          int head_dim, float* o);

} // namespace mosaic::cpu
