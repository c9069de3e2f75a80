#pragma once

// Next-token sampling (greedy, temperature, top-k, top-p) with a seeded,
// platform-independent PRNG, plus the distribution helpers that quality
// comparisons use (softmax, KL divergence, argmax).

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/error.hpp"

namespace mosaic {

/// How to pick the next token. Defaults are greedy decoding.
struct sampling_params {
  float temperature = 0.0f;            ///< 0 = greedy (argmax); > 0 scales logits by 1/T
  float top_p = 1.0f;                  ///< nucleus: keep the smallest set with mass >= top_p
  int top_k = 0;                       ///< keep the k most likely tokens; 0 = off
  uint64_t seed = 0;                   ///< same seed + same logits → same tokens, everywhere
  std::vector<int32_t> stop_token_ids; ///< generation ends after emitting one
  // -- vLLM's extra sampling parameters, with vLLM's meaning -------------------
  float min_p = 0.0f; ///< drop tokens less likely than min_p x the most likely; 0 = off
  /// > 1 discourages tokens already in the prompt or the output (positive
  /// logits divided by it, negative multiplied); 1 = off.
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;  ///< subtracted once from tokens already in the output
  float frequency_penalty = 0.0f; ///< subtracted per earlier occurrence in the output
  /// Before `min_tokens` tokens were sampled, neither the stop tokens nor
  /// `eos_id` (-1: none, e.g. with vLLM's ignore_eos) can be.
  int min_tokens = 0;
  int32_t eos_id = -1;

  /// invalid_argument naming the field unless 0 <= temperature (finite),
  /// 0 < top_p <= 1, top_k >= 0, 0 <= min_p <= 1, repetition_penalty > 0,
  /// presence/frequency penalties in [-2, 2], min_tokens >= 0.
  status validate() const;
  /// True when sampling reduces to argmax.
  bool greedy() const;
};

/// xoshiro256** seeded through splitmix64: fast, well tested, and defined
/// bit for bit here (std distributions are implementation-defined).
class sampling_rng {
public:
  explicit sampling_rng(uint64_t seed);
  uint64_t next_u64();
  /// Uniform in [0, 1) with 53 random bits.
  double next_unit();

private:
  uint64_t s_[4];
};

/// Index of the largest finite-or-infinite value (NaN skipped; first of
/// ties); -1 for an empty or all-NaN input.
int32_t argmax(std::span<const float> logits);

/// softmax(logits / temperature) in double precision; NaN counts as -inf.
/// temperature must be > 0.
std::vector<double> softmax(std::span<const float> logits, double temperature = 1.0);

/// A token and its log-probability.
struct token_logprob {
  int32_t token = 0;
  float logprob = 0.0f;
  bool operator==(const token_logprob&) const = default;
};

/// Log-probabilities from the model's own distribution, log_softmax(logits)
/// in double precision before temperature, penalties or bans (vLLM's raw
/// logprobs): `chosen`'s first, then the `top` most likely tokens (ties: the
/// lower id first). NaN counts as -inf; logits without a finite maximum
/// (all NaN, or a +inf) give -inf for every entry. `top` is clamped to [0, logits.size()].
std::vector<token_logprob> logprobs_of(std::span<const float> logits, int32_t chosen, int top);

/// KL(P || Q) in nats, P = softmax(p_logits), Q = softmax(q_logits), the
/// reference distribution first. Sizes must match (else NaN).
double kl_divergence(std::span<const float> p_logits, std::span<const float> q_logits);

/// Stateful sampler for one sequence.
class sampler {
public:
  /// `params` must have passed validate().
  explicit sampler(sampling_params params);

  /// Picks the next token from the last position's logits [vocab]; -1 when
  /// no logit is a number. The token counts as output from then on (for
  /// penalties and min_tokens).
  int32_t sample(std::span<const float> logits);
  /// Counts `token` as output that another sampler picked (the prefill
  /// worker samples the first token, the decode worker the rest).
  void observe(int32_t token);
  /// The prompt's token ids, for repetition_penalty.
  void set_prompt(std::span<const int32_t> ids);
  /// True if `token` ends generation.
  bool is_stop(int32_t token) const;
  const sampling_params& params() const { return params_; }

private:
  /// Whether any penalty, min_p or min_tokens ban changes the logits.
  bool adjusts() const;
  /// `logits` with the penalties and bans applied, into adjusted_.
  std::span<const float> adjust(std::span<const float> logits);
  int32_t pick(std::span<const float> logits);

  sampling_params params_;
  sampling_rng rng_;
  std::vector<int32_t> order_;                     // [vocab] scratch: candidate ids by probability
  std::vector<float> adjusted_;                    // [vocab] scratch: penalised logits
  std::unordered_map<int32_t, int> output_counts_; ///< output token -> occurrences
  std::vector<int32_t> prompt_ids_;                ///< distinct, for repetition_penalty
  int generated_ = 0;
};

} // namespace mosaic
