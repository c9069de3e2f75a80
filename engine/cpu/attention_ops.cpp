#include "engine/cpu/attention_ops.hpp"

#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "engine/cpu/attention_tile.hpp"
#include "engine/cpu/key_scores.hpp"
#include "engine/cpu/vec_math.hpp"

namespace mosaic::cpu {

namespace {

/// Rows of a task's packed query block (the query heads of one kv group x
/// its queries): big enough for sgemm to run near peak, small enough to
/// give every thread several tasks.
constexpr int block_rows = 256;

/// Keys per tile: a [block_rows, key_tile] score tile stays in L2 (a
/// multiple of key_panel).
constexpr int key_tile = 256;

/// Queries from which a call packs its keys for the tile kernels.
constexpr int tile_kernel_min_queries = 16;

MOSAIC_CPU_CLONES
float max_of(const float* __restrict s, int n) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int j = 0; j < n; ++j)
    m = s[j] > m ? s[j] : m;
  return m;
}

/// s[j] = exp(s[j] - m); returns the sum.
MOSAIC_CPU_CLONES
float exp_sum(float* __restrict s, int n, float m) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < n; ++j) {
    const float e = exp_f32(s[j] - m);
    s[j] = e;
    sum += e;
  }
  return sum;
}

/// Max over the keys j with k_pos[j] <= q_pos (-inf when none).
MOSAIC_CPU_CLONES
float masked_max_of(const float* __restrict s, const int32_t* __restrict k_pos, int32_t q_pos,
                    int n) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  float m = neg_inf;
#pragma omp simd reduction(max : m)
  for (int j = 0; j < n; ++j) {
    const float v = k_pos[j] <= q_pos ? s[j] : neg_inf;
    m = v > m ? v : m;
  }
  return m;
}

/// s[j] = exp(s[j] - m) where key j is visible, else 0; returns the sum.
MOSAIC_CPU_CLONES
float masked_exp_sum(float* __restrict s, const int32_t* __restrict k_pos, int32_t q_pos, int n,
                     float m) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < n; ++j) {
    const float e = k_pos[j] <= q_pos ? exp_f32(s[j] - m) : 0.0f;
    s[j] = e;
    sum += e;
  }
  return sum;
}

MOSAIC_CPU_CLONES
void scale_row(float* __restrict x, int n, float s) {
  for (int d = 0; d < n; ++d)
    x[d] *= s;
}

/// The resolved geometry of one attention call.
struct attention_plan {
  const attention_args* a;
  const int32_t* q_pos; // [nq]
  const int32_t* k_pos; // [nk]
  int group;            // query heads per kv head
  int q_block;          // queries per task
  int64_t q_stride;
  int kv_stride;
  bool k_sorted; // causal and k_pos non-decreasing
  /// Keys packed in 16-key panels per kv head (attention_tile.hpp), or
  /// null: the tiles then run on sgemm.
  const float* k_panels;
  int64_t k_panels_head; // floats per kv head in k_panels
};

/// Online-softmax update of one score row of a tile: turns the scores into
/// weights (0 for masked keys), rescales the row's running sum and output
/// accumulator to the new maximum.
void update_row(const attention_plan& p, float* s, int n, int k0, int32_t qpos, float& m, float& l,
                float* o) {
  const attention_args& a = *p.a;
  int vis = n;
  float tile_max = 0.0f;
  const bool masked = a.causal && !p.k_sorted;
  if (a.causal && p.k_sorted) {
    vis = static_cast<int>(std::upper_bound(p.k_pos + k0, p.k_pos + k0 + n, qpos) - (p.k_pos + k0));
    tile_max = max_of(s, vis);
  } else if (masked) {
    tile_max = masked_max_of(s, p.k_pos + k0, qpos, n);
  } else {
    tile_max = max_of(s, n);
  }
  if (vis == 0 || tile_max == -std::numeric_limits<float>::infinity()) {
    std::fill(s, s + n, 0.0f);
    return;
  }
  const float m_new = std::max(m, tile_max);
  const float sum =
      masked ? masked_exp_sum(s, p.k_pos + k0, qpos, n, m_new) : exp_sum(s, vis, m_new);
  std::fill(s + vis, s + n, 0.0f);
  const float alpha = exp_f32(m - m_new); // 0 on the first visible tile
  if (alpha != 1.0f)
    scale_row(o, a.head_dim, alpha);
  l = l * alpha + sum;
  m = m_new;
}

/// One task: the query heads of kv head `kv_head` for queries
/// [q0, q0 + nb), over every key tile that any of them can see.
void attention_task(const attention_plan& p, attention_scratch& ws, int kv_head, int q0) {
  const attention_args& a = *p.a;
  const int hd = a.head_dim;
  const int group = p.group;
  const int nb = std::min(p.q_block, a.nq - q0);
  const int rows = group * nb;
  int n_keys = a.nk;
  if (p.k_sorted) {
    const int32_t last_q = *std::max_element(p.q_pos + q0, p.q_pos + q0 + nb);
    n_keys = static_cast<int>(std::upper_bound(p.k_pos, p.k_pos + a.nk, last_q) - p.k_pos);
  }
  ws.q_packed.resize(static_cast<size_t>(rows) * hd);
  ws.o_acc.assign(static_cast<size_t>(rows) * hd, 0.0f);
  ws.scores.resize(static_cast<size_t>(rows) * key_tile);
  ws.row_max.assign(static_cast<size_t>(rows), -std::numeric_limits<float>::infinity());
  ws.row_sum.assign(static_cast<size_t>(rows), 0.0f);
  // Packed rows are (head in group, query): row r = h * nb + i, so that one
  // sgemm covers every query head that shares this kv head.
  float* qp = ws.q_packed.data();
  for (int h = 0; h < group; ++h)
    for (int i = 0; i < nb; ++i) {
      const float* src =
          a.q + (q0 + i) * p.q_stride + static_cast<int64_t>(kv_head * group + h) * hd;
      float* dst = qp + (static_cast<int64_t>(h) * nb + i) * hd;
      for (int d = 0; d < hd; ++d)
        dst[d] = src[d] * a.scale;
    }
  const float* k = a.k + static_cast<int64_t>(kv_head) * hd;
  const float* v = a.v + static_cast<int64_t>(kv_head) * hd;
  float* s = ws.scores.data();
  float* o = ws.o_acc.data();
  const float* panels = p.k_panels != nullptr
                            ? p.k_panels + static_cast<int64_t>(kv_head) * p.k_panels_head
                            : nullptr;
  for (int k0 = 0; k0 < n_keys; k0 += key_tile) {
    const int n = std::min(key_tile, n_keys - k0);
    const float* vt = v + static_cast<int64_t>(k0) * p.kv_stride;
    // Score rows are key_tile apart for the tile kernels (they write whole
    // 16-key panels), n apart for sgemm.
    const int64_t lds = panels != nullptr ? key_tile : n;
    if (panels != nullptr) {
      tile_scores(qp, rows, hd, panels + static_cast<int64_t>(k0) * hd, n, s, lds);
    } else {
      const float* kt = k + static_cast<int64_t>(k0) * p.kv_stride;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, hd, 1.0f, qp, hd, kt,
                  p.kv_stride, 0.0f, s, n);
    }
    for (int r = 0; r < rows; ++r) {
      const int32_t qpos = a.causal ? p.q_pos[q0 + r % nb] : 0;
      update_row(p, s + r * lds, n, k0, qpos, ws.row_max[static_cast<size_t>(r)],
                 ws.row_sum[static_cast<size_t>(r)], o + static_cast<int64_t>(r) * hd);
    }
    if (panels != nullptr)
      tile_weighted_values(s, lds, rows, n, vt, p.kv_stride, hd, o);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, n, 1.0f, s, n, vt,
                  p.kv_stride, 1.0f, o, hd);
  }
  const int64_t out_stride = static_cast<int64_t>(a.n_heads) * hd;
  for (int h = 0; h < group; ++h)
    for (int i = 0; i < nb; ++i) {
      const int64_t r = static_cast<int64_t>(h) * nb + i;
      const float l = ws.row_sum[static_cast<size_t>(r)];
      const float inv = l > 0.0f ? 1.0f / l : 0.0f; // no visible key: a zero row
      const float* src = o + r * hd;
      float* dst = a.out + (q0 + i) * out_stride + static_cast<int64_t>(kv_head * group + h) * hd;
      for (int d = 0; d < hd; ++d)
        dst[d] = src[d] * inv;
    }
}

/// Softmax over s[0, vis) in place, zeros in s[vis, n); returns 1 / sum of
/// the exponentials (0 when no key is visible: the output row is then 0).
MOSAIC_CPU_CLONES
float softmax_prefix(float* __restrict s, int vis, int n) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int j = 0; j < vis; ++j)
    m = s[j] > m ? s[j] : m;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < vis; ++j) {
    const float e = exp_f32(s[j] - m);
    s[j] = e;
    sum += e;
  }
  for (int j = vis; j < n; ++j)
    s[j] = 0.0f;
  return vis > 0 ? 1.0f / sum : 0.0f;
}

/// One (sequence, kv head) of paged decode attention: the group's query
/// heads share each key and value row as it streams by once, block by
/// block (a block's slots are consecutive rows of the pool).
MOSAIC_CPU_CLONES
void paged_task(const paged_attention_args& a, int seq, int kv_head, std::vector<float>& scores,
                std::vector<float>& acc) {
  const int hd = a.head_dim;
  const int bs = a.block_size;
  const int group = a.n_heads / a.n_kv_heads;
  const int64_t pool_row = static_cast<int64_t>(a.n_kv_heads) * hd;
  const int len = a.seq_lens[seq];
  const float* q = a.q + (static_cast<int64_t>(seq) * a.n_heads + kv_head * group) * hd;
  float* out = a.out + (static_cast<int64_t>(seq) * a.n_heads + kv_head * group) * hd;
  if (len <= 0) {
    std::fill(out, out + static_cast<int64_t>(group) * hd, 0.0f);
    return;
  }
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const int n_blocks = (len + bs - 1) / bs;
  auto block_offset = [&](int b) {
    return static_cast<int64_t>(table[b]) * bs * pool_row + static_cast<int64_t>(kv_head) * hd;
  };
  scores.resize(static_cast<size_t>(group) * len);
  acc.assign(static_cast<size_t>(group) * hd, 0.0f);
  // Blocks sit anywhere in the pool: fetch the next one while this one is
  // used, the hardware prefetcher cannot guess the jump.
  auto prefetch_block = [&](const float* pool, int b) {
    if (b >= n_blocks)
      return;
    const float* base = pool + block_offset(b);
    const int n = std::min(bs, len - b * bs);
    for (int j = 0; j < n; ++j)
      for (int d = 0; d < hd; d += 16)
        __builtin_prefetch(base + j * pool_row + d);
  };
  float* __restrict sc = scores.data();
  for (int b = 0; b < n_blocks; ++b) {
    const float* kb = a.k_pool + block_offset(b);
    const int n = std::min(bs, len - b * bs);
    prefetch_block(a.k_pool, b + 1);
    key_scores(q, group, hd, kb, pool_row, n, a.scale, sc + b * bs, len);
  }
  for (int h = 0; h < group; ++h) {
    float* s = sc + static_cast<int64_t>(h) * len;
    const float inv = softmax_prefix(s, len, len);
    // Fold the normalisation into the weights: one pass fewer over V.
    for (int t = 0; t < len; ++t)
      s[t] *= inv;
  }
  // Four value rows per pass over the accumulator: a row at a time would
  // chain every update through a store and a load of the same floats.
  float* __restrict o = acc.data();
  for (int b = 0; b < n_blocks; ++b) {
    const float* vb = a.v_pool + block_offset(b);
    const int n = std::min(bs, len - b * bs);
    const float* p = sc + b * bs;
    prefetch_block(a.v_pool, b + 1);
    int j = 0;
    for (; j + 4 <= n; j += 4) {
      const float* __restrict v0 = vb + j * pool_row;
      const float* __restrict v1 = v0 + pool_row;
      const float* __restrict v2 = v1 + pool_row;
      const float* __restrict v3 = v2 + pool_row;
      for (int h = 0; h < group; ++h) {
        const float* ph = p + static_cast<int64_t>(h) * len + j;
        const float p0 = ph[0], p1 = ph[1], p2 = ph[2], p3 = ph[3];
        float* __restrict oh = o + static_cast<int64_t>(h) * hd;
        for (int d = 0; d < hd; ++d)
          oh[d] += p0 * v0[d] + p1 * v1[d] + p2 * v2[d] + p3 * v3[d];
      }
    }
    for (; j < n; ++j) {
      const float* __restrict v = vb + j * pool_row;
      for (int h = 0; h < group; ++h) {
        const float pj = p[static_cast<int64_t>(h) * len + j];
        float* __restrict oh = o + static_cast<int64_t>(h) * hd;
        for (int d = 0; d < hd; ++d)
          oh[d] += pj * v[d];
      }
    }
  }
  std::memcpy(out, o, static_cast<size_t>(group) * hd * sizeof(float));
}

} // namespace

void attention(thread_pool& pool, attention_workspace& ws, const attention_args& a) {
  const int hd = a.head_dim;
  if (a.nq <= 0 || hd <= 0 || a.n_heads <= 0 || a.n_kv_heads <= 0)
    return;
  attention_plan p{};
  p.a = &a;
  p.group = a.n_heads / a.n_kv_heads;
  p.q_stride = a.q_stride > 0 ? a.q_stride : static_cast<int64_t>(a.n_heads) * hd;
  p.kv_stride = a.kv_stride > 0 ? a.kv_stride : a.n_kv_heads * hd;
  if (a.nk <= 0) {
    std::fill(a.out, a.out + static_cast<int64_t>(a.nq) * a.n_heads * hd, 0.0f);
    return;
  }
  // Without positions, causal means the usual "queries are the last nq of
  // the nk keys".
  std::vector<int32_t> own_q_pos;
  std::vector<int32_t> own_k_pos;
  p.q_pos = a.q_pos;
  p.k_pos = a.k_pos;
  if (a.causal && (p.q_pos == nullptr || p.k_pos == nullptr)) {
    own_q_pos.resize(static_cast<size_t>(a.nq));
    own_k_pos.resize(static_cast<size_t>(a.nk));
    std::iota(own_q_pos.begin(), own_q_pos.end(), a.nk - a.nq);
    std::iota(own_k_pos.begin(), own_k_pos.end(), 0);
    p.q_pos = own_q_pos.data();
    p.k_pos = own_k_pos.data();
  }
  // Keys sorted by position (every plain prefill and every link plan): a
  // query sees a prefix of them, found by binary search, and a task never
  // touches the key tiles past its last query.
  p.k_sorted = a.causal && std::is_sorted(p.k_pos, p.k_pos + a.nk);
  p.q_block = std::max(1, std::min(a.nq, block_rows / std::max(1, p.group)));
  const int n_blocks = (a.nq + p.q_block - 1) / p.q_block;
  if (ws.slots.size() < static_cast<size_t>(pool.size()))
    ws.slots.resize(static_cast<size_t>(pool.size()));
  // The tile kernels pack every key once per call (nk x head_dim floats
  // per kv head): worth it once a task has rows enough to reuse the
  // panels; a few query rows (decode-like links) stay on sgemm.
  p.k_panels = nullptr;
  if (ws.tile_kernels && attention_tile_kernels(hd) && a.nq >= tile_kernel_min_queries) {
    const int nk_pad = (a.nk + key_panel - 1) / key_panel * key_panel;
    p.k_panels_head = static_cast<int64_t>(nk_pad) * hd;
    ws.k_panels.resize(static_cast<size_t>(p.k_panels_head) * a.n_kv_heads);
    // Chunks of 256 keys of one kv head each (a multiple of the panel).
    const int chunks = (a.nk + key_tile - 1) / key_tile;
    pool.parallel_for(
        0, static_cast<int64_t>(chunks) * a.n_kv_heads, 1, [&](int64_t lo, int64_t hi) {
          for (int64_t t = lo; t < hi; ++t) {
            const int head = static_cast<int>(t / chunks);
            const int j0 = static_cast<int>(t % chunks) * key_tile;
            pack_key_panels(
                a.k + static_cast<int64_t>(j0) * p.kv_stride + static_cast<int64_t>(head) * hd,
                p.kv_stride, std::min(key_tile, a.nk - j0), hd,
                ws.k_panels.data() + head * p.k_panels_head + static_cast<int64_t>(j0) * hd);
          }
        });
    p.k_panels = ws.k_panels.data();
  }
  // Tasks in order of decreasing cost (late query blocks see more keys) so
  // that the last ones to be claimed are the short ones.
  pool.parallel_for_slots(0, static_cast<int64_t>(n_blocks) * a.n_kv_heads, 1,
                          [&](int slot, int64_t lo, int64_t hi) {
                            for (int64_t t = lo; t < hi; ++t) {
                              const int block = n_blocks - 1 - static_cast<int>(t / a.n_kv_heads);
                              attention_task(p, ws.slots[static_cast<size_t>(slot)],
                                             static_cast<int>(t % a.n_kv_heads), block * p.q_block);
                            }
                          });
}

void paged_attention(thread_pool& pool, const paged_attention_args& a) {
  if (a.n_seqs <= 0 || a.head_dim <= 0 || a.n_heads <= 0 || a.n_kv_heads <= 0)
    return;
  const int64_t tasks = static_cast<int64_t>(a.n_seqs) * a.n_kv_heads;
  pool.parallel_for(0, tasks, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> scores;
    std::vector<float> acc;
    for (int64_t t = lo; t < hi; ++t)
      paged_task(a, static_cast<int>(t / a.n_kv_heads), static_cast<int>(t % a.n_kv_heads), scores,
                 acc);
  });
}

} // namespace mosaic::cpu
