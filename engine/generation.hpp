#pragma once

// Offline multimodal generation on a llava_engine: a prompt with "<image>"
// markers becomes a `prompt` (text runs + images), one policy prefill
// links cached image KV in place, then the sampler and decode steps
// produce the answer. Also the agreement measures that compare a reuse
// policy's output with the full recompute.

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "engine/compression_spec.hpp"
#include "engine/error.hpp"
#include "engine/kv_compression.hpp"
#include "engine/kv_learned_compressor.hpp"
#include "engine/llava_engine.hpp"
#include "engine/policies.hpp"
#include "engine/policy_spec.hpp"
#include "engine/sampler.hpp"

namespace mosaic {

/// Tokenises `text` (already chat-templated; each "<image>" marks one image,
/// BOS prepended) into prompt parts. images[i] fills the i-th marker; the
/// marker count must equal images.size().
result<prompt> build_prompt(const tokenizer& tok, std::string_view text,
                            std::span<const prompt_image> images);

/// The user turn for `question` with `n_images` images in the model's chat
/// template. Without any "<image>" in `question`, the images go first, one
/// marker per line (as LLaVA does); otherwise the markers must number
/// `n_images`.
result<std::string> chat_prompt(const tokenizer& tok, std::string_view question, int n_images);

/// What one generation produced.
struct generation_result {
  std::vector<int32_t> tokens;     ///< sampled tokens, the stop token excluded
  bool stopped = false;            ///< ended on a stop token (else max_tokens)
  std::vector<float> first_logits; // [vocab]  logits that chose the first token
  prefill_stats stats;             ///< of the policy prefill
  double ttft_seconds = 0.0;       ///< link plan + prefill + first token
  double decode_seconds = 0.0;     ///< every later token
  /// With compression: what it kept, and how long it took (between the
  /// first token and the first decode step, as the compress stage runs).
  std::optional<compression_stats> compression;
  double compress_seconds = 0.0;
};

/// FastCache's compression stage between prefill and decode, for generate.
struct generation_compression {
  compression_spec spec;                       ///< method none: no compression
  const learned_compressor* learned = nullptr; ///< required for method learned
  /// The prompt's last N text tokens are not prefilled but decoded one by
  /// one over the compressed KV, and the first token comes from the last
  /// one's logits: a new question meeting a compressed context (a later
  /// turn), so that a one-token answer depends on what compression kept.
  /// 0: the first token comes from the prefill, as the compress stage runs.
  int question_tokens = 0;
};

/// Plans `p` under `policy`, prefills, then samples up to `max_tokens`
/// tokens (stopping after a stop token). With `compression` enabled, the
/// prompt's KV is compressed after the first token (which the prefill's
/// logits choose, as in the actor pipeline) and the rest decode from the
/// compressed sequence. The sequence's KV is released before returning.
/// With `cache`, the prefill starts from the longest prefix the engine
/// pool's prefix cache holds for that scope and publishes the prompt's
/// blocks (so a later prompt of the same process reuses them).
result<generation_result> generate(llava_engine& engine, const prompt& p, const policy_spec& policy,
                                   const sampling_params& sampling, int max_tokens,
                                   const generation_compression& compression = {},
                                   const prefix_scope* cache = nullptr);

/// How closely a policy's output follows the full recompute.
struct agreement {
  bool first_token_match = false;
  double first_token_kl = 0.0; ///< KL(full || policy) of the first-token distributions
  double token_match = 0.0;    ///< fraction of positions with identical tokens
};

/// Compares two greedy generations of the same prompt: `reference` (full
/// recompute) and `candidate`. token_match counts positions up to the
/// longer of the two (a missing token is a mismatch).
agreement compare_generations(const generation_result& reference,
                              const generation_result& candidate);

} // namespace mosaic
