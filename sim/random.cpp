#include "sim/random.hpp"

#include <algorithm>
#include <cmath>

namespace mosaic::sim {

double rng::uniform() {
  // 53 random bits → [0, 1).
  return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
}

int64_t rng::uniform_int(int64_t lo, int64_t hi) {
  const auto span = static_cast<uint64_t>(hi - lo) + 1;
  return lo + static_cast<int64_t>(engine_() % span);
}

double rng::exponential() {
  return -std::log1p(-uniform());
}

double rng::normal() {
  const double u1 = 1.0 - uniform(); // (0, 1]
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

double rng::gamma(double shape, double scale) {
  if (shape < 1.0) {
    // Boost to shape+1 and scale back (Marsaglia-Tsang, section 6).
    const double u = 1.0 - uniform();
    return gamma(shape + 1.0, scale) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x = normal();
    double v = 1.0 + c * x;
    if (v <= 0.0)
      continue;
    v = v * v * v;
    const double u = 1.0 - uniform();
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v))
      return d * v * scale;
  }
}

zipf_sampler::zipf_sampler(int n, double exponent) {
  n = std::max(n, 1);
  cdf_.resize(static_cast<size_t>(n));
  double total = 0.0;
  for (int k = 0; k < n; ++k) {
    total += 1.0 / std::pow(double(k + 1), exponent);
    cdf_[size_t(k)] = total;
  }
  for (auto& c : cdf_)
    c /= total;
  cdf_.back() = 1.0;
}

int zipf_sampler::sample(rng& r) const {
  const double u = r.uniform();
  auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u);
  return static_cast<int>(std::min<ptrdiff_t>(it - cdf_.begin(), ptrdiff_t(cdf_.size()) - 1));
}

double zipf_sampler::probability(int k) const {
  if (k < 0 || k >= size())
    return 0.0;
  return k == 0 ? cdf_[0] : cdf_[size_t(k)] - cdf_[size_t(k - 1)];
}

int length_distribution::sample(rng& r) const {
  double x = mean;
  if (stddev > 0.0 && mean > 0.0) {
    // Log-normal with the requested mean and standard deviation.
    const double sigma2 = std::log1p((stddev * stddev) / (mean * mean));
    const double mu = std::log(mean) - 0.5 * sigma2;
    x = std::exp(mu + std::sqrt(sigma2) * r.normal());
  }
  const auto v = static_cast<int>(std::lround(x));
  return std::clamp(v, min, max);
}

} // namespace mosaic::sim
