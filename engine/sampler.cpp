#include "engine/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace mosaic {

namespace {

/// Below this temperature sampling is argmax (1/T would overflow logits).
constexpr float min_temperature = 1e-4f;

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

} // namespace

status sampling_params::validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0f)
    return make_error(errc::invalid_argument,
                      "temperature must be a finite number >= 0 (0 = greedy)");
  if (!(top_p > 0.0f && top_p <= 1.0f))
    return make_error(errc::invalid_argument, "top_p must be in (0, 1] (1 = off)");
  if (top_k < 0)
    return make_error(errc::invalid_argument, "top_k must be >= 0 (0 = off)");
  if (!(min_p >= 0.0f && min_p <= 1.0f))
    return make_error(errc::invalid_argument, "min_p must be in [0, 1] (0 = off)");
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty))
    return make_error(errc::invalid_argument, "repetition_penalty must be > 0 (1 = off)");
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
    return make_error(errc::invalid_argument, "presence_penalty must be in [-2, 2]");
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    return make_error(errc::invalid_argument, "frequency_penalty must be in [-2, 2]");
  if (min_tokens < 0)
    return make_error(errc::invalid_argument, "min_tokens must be >= 0");
  return {};
}

bool sampling_params::greedy() const {
  return temperature < min_temperature || top_k == 1;
}

sampling_rng::sampling_rng(uint64_t seed) {
  uint64_t x = seed;
  for (uint64_t& s : s_)
    s = splitmix64(x);
}

uint64_t sampling_rng::next_u64() {
  const uint64_t out = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return out;
}

double sampling_rng::next_unit() {
  return static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
}

int32_t argmax(std::span<const float> logits) {
  int32_t best = -1;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i]))
      continue;
    if (best < 0 || logits[i] > logits[static_cast<size_t>(best)])
      best = static_cast<int32_t>(i);
  }
  return best;
}

std::vector<token_logprob> logprobs_of(std::span<const float> logits, int32_t chosen, int top) {
  const auto n = static_cast<int32_t>(logits.size());
  const int32_t best = argmax(logits);
  // log_softmax(v) = (v - max) - log(sum exp(x - max)): exact for large logits.
  double max = 0.0, log_sum = std::numeric_limits<double>::infinity();
  if (best >= 0 && std::isfinite(logits[size_t(best)])) {
    max = logits[size_t(best)];
    double sum = 0.0;
    for (float v : logits)
      if (!std::isnan(v))
        sum += std::exp(double(v) - max);
    log_sum = std::log(sum);
  } // else all NaN, or +inf logits: every finite one gets -inf
  auto logprob = [&](int32_t t) -> float {
    if (t < 0 || t >= n || std::isnan(logits[size_t(t)]) || !std::isfinite(log_sum))
      return -std::numeric_limits<float>::infinity();
    return static_cast<float>((double(logits[size_t(t)]) - max) - log_sum);
  };
  std::vector<token_logprob> out;
  const auto k = static_cast<size_t>(std::clamp(top, 0, n));
  out.reserve(k + 1);
  out.push_back({chosen, logprob(chosen)});
  if (k == 0)
    return out;
  auto key = [&](int32_t t) {
    const float v = logits[size_t(t)];
    return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v;
  };
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i)
    ids[size_t(i)] = i;
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                    [&](int32_t a, int32_t b) {
                      const float ka = key(a), kb = key(b);
                      return ka > kb || (ka == kb && a < b);
                    });
  for (size_t i = 0; i < k; ++i)
    out.push_back({ids[i], logprob(ids[i])});
  return out;
}

std::vector<double> softmax(std::span<const float> logits, double temperature) {
  std::vector<double> p(logits.size(), 0.0);
  const int32_t top = argmax(logits);
  if (top < 0)
    return p;
  const double max = logits[static_cast<size_t>(top)];
  if (std::isinf(max) && max > 0) {
    // +inf logits share all the mass.
    size_t n = 0;
    for (float v : logits)
      n += (std::isinf(v) && v > 0) ? 1 : 0;
    for (size_t i = 0; i < logits.size(); ++i)
      p[i] = (std::isinf(logits[i]) && logits[i] > 0) ? 1.0 / static_cast<double>(n) : 0.0;
    return p;
  }
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double v = logits[i];
    p[i] = std::isnan(v) ? 0.0 : std::exp((v - max) / temperature);
    sum += p[i];
  }
  for (double& v : p)
    v /= sum;
  return p;
}

double kl_divergence(std::span<const float> p_logits, std::span<const float> q_logits) {
  if (p_logits.size() != q_logits.size() || p_logits.empty())
    return std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> p = softmax(p_logits);
  const std::vector<double> q = softmax(q_logits);
  double kl = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0.0)
      continue;
    if (q[i] <= 0.0)
      return std::numeric_limits<double>::infinity();
    kl += p[i] * (std::log(p[i]) - std::log(q[i]));
  }
  return std::max(kl, 0.0);
}

sampler::sampler(sampling_params params) : params_(std::move(params)), rng_(params_.seed) {}

bool sampler::is_stop(int32_t token) const {
  return std::find(params_.stop_token_ids.begin(), params_.stop_token_ids.end(), token) !=
         params_.stop_token_ids.end();
}

void sampler::observe(int32_t token) {
  ++generated_;
  if (token >= 0)
    ++output_counts_[token];
}

void sampler::set_prompt(std::span<const int32_t> ids) {
  prompt_ids_.assign(ids.begin(), ids.end());
  std::sort(prompt_ids_.begin(), prompt_ids_.end());
  prompt_ids_.erase(std::unique(prompt_ids_.begin(), prompt_ids_.end()), prompt_ids_.end());
}

bool sampler::adjusts() const {
  return params_.min_p > 0.0f || params_.repetition_penalty != 1.0f ||
         params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f ||
         (generated_ < params_.min_tokens &&
          (params_.eos_id >= 0 || !params_.stop_token_ids.empty()));
}

std::span<const float> sampler::adjust(std::span<const float> logits) {
  adjusted_.assign(logits.begin(), logits.end());
  const auto n = static_cast<int32_t>(adjusted_.size());
  auto in_range = [n](int32_t t) { return t >= 0 && t < n; };
  if (params_.repetition_penalty != 1.0f) {
    const float rp = params_.repetition_penalty;
    auto penalise = [&](int32_t t) {
      float& x = adjusted_[static_cast<size_t>(t)];
      x = x > 0.0f ? x / rp : x * rp;
    };
    for (int32_t t : prompt_ids_)
      if (in_range(t))
        penalise(t);
    for (const auto& [t, count] : output_counts_)
      if (in_range(t) && !std::binary_search(prompt_ids_.begin(), prompt_ids_.end(), t))
        penalise(t);
  }
  for (const auto& [t, count] : output_counts_)
    if (in_range(t))
      adjusted_[static_cast<size_t>(t)] -=
          params_.frequency_penalty * static_cast<float>(count) + params_.presence_penalty;
  if (generated_ < params_.min_tokens) {
    auto ban = [&](int32_t t) {
      if (in_range(t))
        adjusted_[static_cast<size_t>(t)] = -std::numeric_limits<float>::infinity();
    };
    ban(params_.eos_id);
    for (int32_t t : params_.stop_token_ids)
      ban(t);
  }
  if (params_.min_p > 0.0f) {
    // min_p on the distribution at the sampling temperature (1 for greedy).
    const double temp = params_.greedy() ? 1.0 : params_.temperature;
    const int32_t top = argmax(adjusted_);
    if (top >= 0) {
      const double cut = std::log(static_cast<double>(params_.min_p)) * temp;
      const double best = adjusted_[static_cast<size_t>(top)];
      for (auto& x : adjusted_)
        if (static_cast<double>(x) - best < cut)
          x = -std::numeric_limits<float>::infinity();
    }
  }
  return adjusted_;
}

int32_t sampler::sample(std::span<const float> logits) {
  const int32_t token = adjusts() ? pick(adjust(logits)) : pick(logits);
  observe(token);
  return token;
}

int32_t sampler::pick(std::span<const float> logits) {
  const int32_t top = argmax(logits);
  if (params_.greedy() || top < 0 || logits.size() <= 1)
    return top;
  const std::vector<double> p = softmax(logits, params_.temperature);

  // Candidates by descending probability (ties by id, so the order and
  // hence the draw are deterministic).
  order_.resize(p.size());
  std::iota(order_.begin(), order_.end(), 0);
  size_t keep = p.size();
  if (params_.top_k > 0)
    keep = std::min(keep, static_cast<size_t>(params_.top_k));
  auto by_prob = [&p](int32_t a, int32_t b) {
    const double pa = p[static_cast<size_t>(a)];
    const double pb = p[static_cast<size_t>(b)];
    return pa > pb || (pa == pb && a < b);
  };
  if (keep < p.size() || params_.top_p < 1.0f) {
    std::partial_sort(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(keep),
                      order_.end(), by_prob);
  }
  double mass = 0.0;
  for (size_t i = 0; i < keep; ++i)
    mass += p[static_cast<size_t>(order_[i])];
  if (params_.top_p < 1.0f) {
    // Smallest prefix whose share of the kept mass reaches top_p.
    const double target = static_cast<double>(params_.top_p) * mass;
    double cum = 0.0;
    size_t n = 0;
    while (n < keep) {
      cum += p[static_cast<size_t>(order_[n])];
      ++n;
      if (cum >= target)
        break;
    }
    keep = n;
    mass = cum;
  }
  const double u = rng_.next_unit() * mass;
  double cum = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    cum += p[static_cast<size_t>(order_[i])];
    if (u < cum)
      return order_[i];
  }
  return order_[keep - 1];
}

} // namespace mosaic
