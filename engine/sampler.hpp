#pragma once

// Next-token sampling (greedy, temperature, top-k, top-p) with a seeded,
// platform-independent PRNG, plus the distribution helpers that quality
// comparisons use (softmax, KL divergence, argmax).

#include <cstdint>
#include <span>
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

  /// invalid_argument naming the field unless 0 <= temperature (finite),
  /// 0 < top_p <= 1, top_k >= 0.
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

/// KL(P || Q) in nats, P = softmax(p_logits), Q = softmax(q_logits), the
/// reference distribution first. Sizes must match (else NaN).
double kl_divergence(std::span<const float> p_logits, std::span<const float> q_logits);

/// Stateful sampler for one sequence.
class sampler {
public:
  /// `params` must have passed validate().
  explicit sampler(sampling_params params);

  /// Picks the next token from the last position's logits [vocab]; -1 when
  /// no logit is a number.
  int32_t sample(std::span<const float> logits);
  /// True if `token` ends generation.
  bool is_stop(int32_t token) const;
  const sampling_params& params() const { return params_; }

private:
  sampling_params params_;
  sampling_rng rng_;
  std::vector<int32_t> order_; // [vocab] scratch: candidate ids by probability
};

} // namespace mosaic
