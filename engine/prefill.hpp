#pragma once

// The prefill executor: runs a link plan (engine/link_plan.hpp) in ONE
// pass over the decoder, writing the sequence's KV into the paged pool
// and returning the last token's logits. Also "compiling" an image: the
// standalone prefill of its tokens at positions 0..n-1 whose per-layer K
// (before RoPE) and V a KV library stores.
//
// Working layout: per layer the pass assembles the sequence's K and V in a
// contiguous working buffer (cached rows placed first, fresh rows of S_l
// written over them), attends directly over it, and then writes the
// finished layer into the sequence's pool slots with one scatter.

#include <functional>
#include <string>
#include <vector>

#include "engine/backend.hpp"
#include "engine/compiled_image.hpp"
#include "engine/decoder_weights.hpp"
#include "engine/error.hpp"
#include "engine/kv_pool.hpp"
#include "engine/link_plan.hpp"

namespace mosaic {

struct prefill_options {
  /// Called before layer l's cached KV is placed, for every layer; a KV
  /// loader blocks here until layer l of every cache hit is in host
  /// memory, so that loads overlap the compute of earlier layers. An
  /// error aborts the prefill (the caller may re-plan the image as a miss).
  std::function<status(int layer)> wait_layer;
  /// Called once with the validated plan before the pass: e.g. so that
  /// `wait_layer` waits only for images the plan reads from their entry
  /// (an image inside an adopted prefix needs no load).
  std::function<void(const link_plan& plan)> on_plan;
  /// When set, receives every layer's K (BEFORE RoPE) and V of every
  /// token; requires every token in every S_l (used by compile_image).
  compiled_image* capture = nullptr;
  /// When set, called once per layer, in order 0..L-1, on the pass's
  /// thread, right after layer l's K (after RoPE) and V of every token
  /// were scattered into `seq`'s pool slots and the backend synchronized:
  /// layer l of slots [0, plan.n_tokens()) of `seq` is final then (later
  /// layers are not written yet; `seq.length()` is 0 until the pass ends,
  /// so read `seq.slots(0, n_tokens)`). The hook may read the pool (it
  /// runs inside the pass, so it must not take a lock the caller of
  /// run_prefill holds) but must not write it. Used to stream a request's
  /// KV to another node while the next layers compute (actors/kv_relay).
  /// An error aborts the pass (the sequence is released). Unset: no cost
  /// but one test per layer. Backends: the pass synchronizes after every
  /// layer, so this holds for any backend; only the CPU backend's pool is
  /// host memory today, where reading it costs no device copy.
  /// With chunked prefill, the hook runs during the last chunk only, when
  /// each layer of every token is final.
  std::function<status(int layer, const kv_sequence& seq)> layer_done;
  /// When set, the pass writes into this sequence instead of a new one:
  /// its first plan.prefix.n_tokens rows already hold the prefix's KV
  /// (blocks adopted from the prefix cache, shared by reference, never
  /// written) and plan.prefix.sequence must point to it. The sequence is
  /// moved into the result (left empty here), also on error.
  kv_sequence* extend = nullptr;
  /// Chunked prefill: compute at most this many tokens per chunk (0: all
  /// in one). Each chunk runs every layer for its tokens against the KV of
  /// all earlier ones, so the result equals one pass; a linked image may
  /// fall inside one chunk or across two.
  int chunk_tokens = 0;
  /// Called between chunks (with the tokens done so far) on the pass's
  /// thread: the caller may let other work use the device here (the
  /// prefill actor releases the compute lock so that decode steps run).
  /// An error aborts the pass.
  std::function<status(int done_tokens)> between_chunks;
};

struct prefill_stats {
  int n_tokens = 0;
  std::vector<int> computed_per_layer; ///< |S_l|
  double recomputed_fraction = 0.0;    ///< sum |S_l| / (L * n)
  int reused_image_tokens = 0;         ///< tokens with a cached image source
  int reused_prefix_tokens = 0;        ///< tokens with a prefix source
  int recomputed_image_tokens = 0;     ///< image-entry tokens computed at one layer or more
  /// Prompt tokens whose KV was not computed at every layer: prefix rows
  /// plus linked image tokens the policy left cached somewhere (OpenAI's
  /// usage.prompt_tokens_details.cached_tokens).
  int cached_tokens = 0;
  int chunks = 0;   ///< chunks the pass ran in
  std::string note; ///< the policy's note (profile used, ...)
};

struct prefill_result {
  std::vector<float> logits; // [vocab]  of the last token
  /// M-RoPE: decode positions are index + rope_delta (link_plan::rope_delta).
  int32_t rope_delta = 0;
  kv_sequence sequence; ///< the prompt's KV, left in the pool for decode
  prefill_stats stats;
};

/// Runs `plan` (validated first; a pending completion is completed during
/// the pass, which is why the plan is mutable). The sequence's blocks come
/// from `pool`; out_of_memory if it has too few free blocks.
result<prefill_result> run_prefill(backend& be, const decoder_weights& weights, kv_pool& pool,
                                   link_plan& plan, const prefill_options& options = {});

/// A plan that computes every token at every layer: `ids` as one text
/// segment at positions 0..n-1 (the reference prefill).
link_plan plain_text_plan(const text_config& cfg, const std::vector<int32_t>& ids);

/// Compiles an image: the standalone prefill of its `n_tokens` input
/// embeddings at positions 0..n-1 (no BOS, nothing before it). Returns
/// the embeddings plus every layer's pre-RoPE K and V. Uses `pool` for
/// the duration of the call only. `between_steps` (optional) runs on the
/// calling thread before each layer of each chunk, with the backend idle:
/// a background compile may let a decode step use the device there.
/// `chunk_tokens` > 0 computes the image in chunks of that many tokens
/// (the same result; each step is shorter, so a decode step waits less).
/// M-RoPE models (Qwen2-VL) need the image's token `grid`: its tokens
/// turn by their M-RoPE positions from the origin.
result<compiled_image> compile_image(backend& be, const decoder_weights& weights, kv_pool& pool,
                                     const float* embeddings, int n_tokens,
                                     const std::function<status(int layer)>& between_steps = {},
                                     int chunk_tokens = 0, token_grid grid = {});

} // namespace mosaic
