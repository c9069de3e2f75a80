#pragma once

// A small memory model for scheduler tests (engine/stage_scheduler,
// sim/stage_des): 1 KiB of KV per token in blocks of 16 tokens, 100 kB of
// weights, activations a few hundred bytes per token.

#include <cstddef>

#include "engine/stage_scheduler.hpp"

namespace mosaic::testing {

inline memory_model small_memory_model(size_t budget) {
  memory_model m;
  m.budget_bytes = budget;
  m.weight_bytes = 100'000;
  m.kv_bytes_per_token = 1024;
  m.block_size = 16;
  m.prefill_act_bytes_per_token = 512;
  m.compress_act_bytes_per_token = 128;
  m.decode_act_bytes_per_seq = 4096;
  return m;
}

} // namespace mosaic::testing
