#pragma once

// Attention kernels of the CPU backend: prefill/link attention over a KV
// view (flash-style tiles: scores and P.V on AVX2 register tiles over keys
// packed once per call, or two sgemms per tile where that path is not
// available) and decode attention over
// the paged KV pool (vectorised loops, one task per sequence and kv head).

#include <vector>

#include "engine/backend.hpp"
#include "engine/cpu/thread_pool.hpp"

namespace mosaic::cpu {

/// Scratch of one pool thread for one (kv head, query block) task.
struct attention_scratch {
  std::vector<float> q_packed; // [rows, head_dim], pre-scaled
  std::vector<float> scores;   // [rows, key_tile]
  std::vector<float> o_acc;    // [rows, head_dim], unnormalised
  std::vector<float> row_max;  // [rows]
  std::vector<float> row_sum;  // [rows]
};

/// Scratch memory reused across attention calls (grows, never shrinks):
/// one entry per pool slot.
struct attention_workspace {
  std::vector<attention_scratch> slots;
  std::vector<float> k_panels; // keys in 16-key panels, per kv head (attention_tile.hpp)
  bool tile_kernels = true;    // false: tiles on sgemm even where the kernels run
};

/// See backend::attention. Tasks (kv head, query block) run on `pool`; each
/// streams key tiles with an online softmax (flash attention) and calls
/// sgemm itself, so OpenBLAS must run single-threaded meanwhile (the caller
/// arranges that).
void attention(thread_pool& pool, attention_workspace& ws, const attention_args& args);

/// See backend::paged_attention.
void paged_attention(thread_pool& pool, const paged_attention_args& args);

} // namespace mosaic::cpu
