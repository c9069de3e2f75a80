#pragma once

// Batched decode over the paged KV pool: one new token per sequence, its
// K and V appended to the sequence's blocks (a block is allocated when the
// last one is full), paged attention over each sequence's slots. Sequences
// may join or leave between steps; continuous batching is the caller's
// loop around `decode_step`.

#include <cstdint>
#include <span>
#include <vector>

#include "engine/backend.hpp"
#include "engine/decoder_weights.hpp"
#include "engine/error.hpp"
#include "engine/kv_pool.hpp"

namespace mosaic {

/// One sequence's input to a decode step.
struct decode_input {
  kv_sequence* sequence = nullptr; ///< in the pool given to decode_step
  int32_t token = 0;               ///< the token to append
  int32_t position = 0;            ///< its absolute position (usually sequence->length())
};

/// Runs one decode step for every input and returns logits
/// [inputs.size(), vocab] (row s for inputs[s]). Each sequence's length
/// grows by one. out_of_memory when the pool cannot supply a new block;
/// no sequence's length changes then (blocks already reserved stay with
/// their sequence and are used by the next step).
result<std::vector<float>> decode_step(backend& be, const decoder_weights& weights, kv_pool& pool,
                                       std::span<const decode_input> inputs);

} // namespace mosaic
