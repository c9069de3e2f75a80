#pragma once

// FastCache's KV compression stage (arXiv 2503.08461): between prefill and
// decode, a prompt's KV is shrunk to the tokens that matter, with separate
// keep ratios for image and text tokens. Training-free compressors, no
// extra weights:
//
// | method    | score (higher = kept)                                      |
// |-----------|------------------------------------------------------------|
// | snapkv    | attention mass from the last `window` prompt queries       |
// |           | (recomputed exactly), summed over heads, avg-pooled        |
// | keynorm   | minus the key's L2 norm (low-norm keys are kept, Devoto et |
// |           | al. 2024, "A Simple and Effective L2 Norm-Based Strategy") |
// | streaming | recency (StreamingLLM: `sink` first tokens + recent ones)  |
//
// Selection is PER LAYER for snapkv and keynorm (each layer keeps its own
// tokens; every layer keeps the same number of image and text tokens) and
// the same for all layers for streaming. Always kept: the last prompt
// token, snapkv's observation window, streaming's sinks and recent window.
//
// The result is a NEW sequence in the same pool holding only the kept
// rows (keys keep their original RoPE rotation); the input's blocks are
// freed when compression succeeds. Decode continues with
// decode_input.position = compressed_kv::next_position (+ steps), NOT the
// compressed sequence's length.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/backend.hpp"
#include "engine/compression_spec.hpp"
#include "engine/decoder_weights.hpp"
#include "engine/error.hpp"
#include "engine/kv_pool.hpp"
#include "engine/link_plan.hpp"

namespace mosaic {

/// What compression did.
struct compression_stats {
  int tokens_before = 0;
  int tokens_after = 0; ///< rows per layer in the new sequence
  int image_before = 0;
  int image_after = 0;
  int text_before = 0;
  int text_after = 0;
  size_t bytes_before = 0; ///< pool bytes of the input's blocks
  size_t bytes_after = 0;  ///< pool bytes of the output's blocks
};

/// A compressed prompt KV.
struct compressed_kv {
  kv_sequence sequence; ///< kept rows, in original token order per layer
  /// Pass as decode_input.position for the first decoded token (the
  /// original prompt's last position + 1); add 1 per step.
  int32_t next_position = 0;
  /// kept[l] = original token indices held by layer l's rows (sorted).
  std::vector<std::vector<int32_t>> kept; // [n_layers][tokens_after]
  compression_stats stats;
};

/// Compresses `input` (the KV `run_prefill` left for `plan`) per `spec`.
/// On success `input` is released (its blocks return to the pool) and the
/// result holds the new sequence. On error (bad spec, out_of_memory for
/// the new blocks) `input` is left untouched so the caller may decode it
/// uncompressed. A `none` spec or ratios of 1 copy every row (bit-exact).
/// `weights` is used by snapkv only (to recompute the window's queries).
result<compressed_kv> compress_kv(backend& be, const decoder_weights& weights, kv_pool& pool,
                                  kv_sequence& input, const link_plan& plan,
                                  const compression_spec& spec);

/// Keeps `ratio` of `count` tokens (rounded, at least 1 when count > 0).
int kept_count(int count, float ratio) noexcept;

} // namespace mosaic
