#pragma once

// Backend-ops checks of attention and paged attention (see
// backend_ops_check.hpp).

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "tests/engine/backend_ops_check_util.hpp"

namespace mosaic::testing {

// -- attention ------------------------------------------------------------------------

/// How the query rows of an attention case are placed.
enum class query_rows : uint8_t {
  all,             ///< one query per key, in order (plain prefill)
  sorted_subset,   ///< a random subset of the key positions, ascending (link plan)
  shuffled_subset, ///< the same in random order
};

struct attention_case {
  int nk, nq, n_heads, n_kv_heads, head_dim;
  query_rows rows = query_rows::all;
  int q_extra = 0;  ///< floats past the heads in each query row
  int kv_extra = 0; ///< floats past the heads in each key/value row
  bool causal = true;
  bool shuffle_keys = false; ///< key positions in random order
};

inline std::string describe(const attention_case& c) {
  return "attention nk=" + std::to_string(c.nk) + " nq=" + std::to_string(c.nq) +
         " heads=" + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) +
         " head_dim=" + std::to_string(c.head_dim) +
         " rows=" + std::to_string(static_cast<int>(c.rows)) +
         " causal=" + std::to_string(c.causal) + " shuffled_keys=" + std::to_string(c.shuffle_keys);
}

/// Runs one attention case; `q_pos`/`k_pos` override the generated ones.
inline void run_attention_case(backend& be, std::mt19937& rng, const attention_case& c,
                               ivec q_pos = {}, ivec k_pos = {}) {
  const int q_stride = c.n_heads * c.head_dim + c.q_extra;
  const int kv_stride = c.n_kv_heads * c.head_dim + c.kv_extra;
  if (k_pos.empty()) {
    k_pos.resize(static_cast<size_t>(c.nk));
    std::iota(k_pos.begin(), k_pos.end(), 0);
    if (c.shuffle_keys)
      std::shuffle(k_pos.begin(), k_pos.end(), rng);
  }
  if (q_pos.empty()) {
    q_pos = k_pos;
    std::sort(q_pos.begin(), q_pos.end());
    if (c.rows != query_rows::all) {
      std::shuffle(q_pos.begin(), q_pos.end(), rng);
      q_pos.resize(static_cast<size_t>(c.nq));
      if (c.rows == query_rows::sorted_subset)
        std::sort(q_pos.begin(), q_pos.end());
    }
  }
  auto q = random_vec(rng, static_cast<size_t>(c.nq) * q_stride, -2.0f, 2.0f);
  auto k = random_vec(rng, static_cast<size_t>(c.nk) * kv_stride, -2.0f, 2.0f);
  auto v = random_vec(rng, static_cast<size_t>(c.nk) * kv_stride);
  attention_args args;
  args.nq = c.nq;
  args.nk = c.nk;
  args.n_heads = c.n_heads;
  args.n_kv_heads = c.n_kv_heads;
  args.head_dim = c.head_dim;
  args.q_stride = c.q_extra > 0 ? q_stride : 0;
  args.kv_stride = c.kv_extra > 0 ? kv_stride : 0;
  args.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  args.causal = c.causal;
  auto dq = to_device(be, q);
  auto dk = to_device(be, k);
  auto dv = to_device(be, v);
  auto dqp = to_device(be, q_pos);
  auto dkp = to_device(be, k_pos);
  const size_t n_out = static_cast<size_t>(c.nq) * c.n_heads * c.head_dim;
  auto dout = to_device(be, vec(n_out, std::nanf("")));
  args.q = dq.f32();
  args.k = dk.f32();
  args.v = dv.f32();
  args.out = dout.f32();
  args.q_pos = c.causal ? dqp.i32() : nullptr;
  args.k_pos = c.causal ? dkp.i32() : nullptr;
  be.attention(args);
  auto got = to_host(be, dout, n_out);
  args.q = q.data();
  args.k = k.data();
  args.v = v.data();
  args.q_pos = q_pos.data();
  args.k_pos = k_pos.data();
  expect_close(got, ref::attention(args), gemm_tolerance, describe(c));
}

inline void check_attention(backend& be, std::mt19937& rng) {
  using enum query_rows;
  const attention_case cases[] = {
      {37, 37, 4, 4, 16},                          // prefill, MHA
      {50, 50, 4, 2, 8},                           // GQA 2
      {300, 300, 8, 2, 8},                         // GQA 4, several query blocks
      {80, 20, 4, 1, 16, sorted_subset, 96, 32},   // link plan rows in a fused QKV buffer
      {80, 25, 6, 3, 12, shuffled_subset, 5, 3},   // rows in any order, odd strides
      {64, 64, 2, 1, 32, all, 0, 0, true, true},   // keys in random position order
      {17, 17, 3, 3, 20, all, 0, 0, false},        // bidirectional (vision tower)
      {1, 1, 1, 1, 4},                             // n = 1
      {129, 1, 8, 2, 64, sorted_subset, 0, 0},     // one query over a long cache
      {2000, 7, 8, 2, 64, shuffled_subset, 0, 64}, // few rows over 2,000 keys
      // 16+ queries with head_dim a multiple of 16: the CPU backend's
      // register-tile kernels (keys packed in 16-key panels), with row
      // groups of 6 and their tails, partial panels and several key tiles.
      {601, 601, 8, 2, 64},                        // prefill, 3 key tiles
      {530, 97, 8, 2, 64, sorted_subset, 128, 16}, // link plan in a fused QKV buffer
      {300, 41, 6, 3, 32, shuffled_subset, 0, 0},  // rows in any order
      {577, 577, 4, 4, 64, all, 0, 0, false},      // bidirectional (vision tower)
      {270, 270, 2, 1, 16, all, 0, 0, true, true}, // keys in random position order
      {19, 19, 5, 5, 48},                          // one partial panel, odd row groups
  };
  for (const auto& c : cases)
    run_attention_case(be, rng, c);
  // A query placed before every key sees none: its output is zero; one past
  // every key sees them all.
  run_attention_case(be, rng, attention_case{20, 3, 2, 2, 8}, ivec{5, 15, 40}, [] {
    ivec k(20);
    std::iota(k.begin(), k.end(), 10);
    return k;
  }());
}

inline void check_paged_attention(backend& be, std::mt19937& rng) {
  struct paged_case {
    int n_seqs, block_size, n_heads, n_kv_heads, head_dim, max_len;
  };
  for (auto c : {paged_case{1, 16, 4, 4, 16, 1}, paged_case{5, 4, 8, 2, 64, 37},
                 paged_case{16, 16, 8, 4, 32, 100}, paged_case{3, 1, 2, 1, 8, 9},
                 paged_case{4, 8, 6, 3, 12, 29}}) {
    ivec lens(static_cast<size_t>(c.n_seqs));
    for (auto& len : lens)
      len = random_int(rng, 1, c.max_len);
    if (c.n_seqs >= 3) {
      lens[0] = 0;            // an empty sequence gives zeros
      lens[1] = c.block_size; // exactly one full block
      lens.back() = c.max_len;
    }
    int max_blocks = 1;
    int total_blocks = 3; // spare blocks no table points to
    for (int len : lens) {
      max_blocks = std::max(max_blocks, (len + c.block_size - 1) / c.block_size + 1);
      total_blocks += (len + c.block_size - 1) / c.block_size;
    }
    ivec ids(static_cast<size_t>(total_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    // Unused table entries hold -1: a backend must never follow them.
    ivec tables(static_cast<size_t>(c.n_seqs) * max_blocks, -1);
    size_t next = 0;
    for (int s = 0; s < c.n_seqs; ++s)
      for (int b = 0; b < (lens[static_cast<size_t>(s)] + c.block_size - 1) / c.block_size; ++b)
        tables[static_cast<size_t>(s) * max_blocks + b] = ids[next++];
    const size_t row = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
    auto k_pool = random_vec(rng, static_cast<size_t>(total_blocks) * c.block_size * row, -2, 2);
    auto v_pool = random_vec(rng, k_pool.size());
    auto q = random_vec(rng, static_cast<size_t>(c.n_seqs) * c.n_heads * c.head_dim, -2, 2);
    auto dq = to_device(be, q);
    auto dk = to_device(be, k_pool);
    auto dv = to_device(be, v_pool);
    auto dt = to_device(be, tables);
    auto dl = to_device(be, lens);
    auto dout = to_device(be, vec(q.size(), std::nanf("")));
    paged_attention_args args;
    args.q = dq.f32();
    args.k_pool = dk.f32();
    args.v_pool = dv.f32();
    args.block_tables = dt.i32();
    args.seq_lens = dl.i32();
    args.out = dout.f32();
    args.n_seqs = c.n_seqs;
    args.max_blocks_per_seq = max_blocks;
    args.block_size = c.block_size;
    args.n_heads = c.n_heads;
    args.n_kv_heads = c.n_kv_heads;
    args.head_dim = c.head_dim;
    args.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    be.paged_attention(args);
    auto got = to_host(be, dout, q.size());
    args.q = q.data();
    args.k_pool = k_pool.data();
    args.v_pool = v_pool.data();
    args.block_tables = tables.data();
    args.seq_lens = lens.data();
    expect_close(got, ref::paged_attention(args), gemm_tolerance,
                 "paged_attention seqs=" + std::to_string(c.n_seqs) +
                     " block=" + std::to_string(c.block_size) +
                     " heads=" + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads));
  }
}

} // namespace mosaic::testing
