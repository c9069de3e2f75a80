#pragma once

// Reproducible random numbers for the simulator. std::mt19937_64 is fully
// specified by the standard, but the std:: distributions are not (their
// output differs between standard libraries), so the samplers a workload
// depends on are written out here: the same seed gives the same workload
// on every platform.

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace mosaic::sim {

/// A seeded source of uniform, exponential, normal and gamma variates.
class rng {
public:
  explicit rng(uint64_t seed) : engine_(seed) {}

  /// Uniform in [0, 1).
  double uniform();
  /// Uniform integer in [lo, hi].
  int64_t uniform_int(int64_t lo, int64_t hi);
  /// Exponential with mean 1.
  double exponential();
  /// Standard normal (Box-Muller).
  double normal();
  /// Gamma with the given shape and scale (Marsaglia-Tsang), shape > 0.
  double gamma(double shape, double scale);

private:
  std::mt19937_64 engine_;
};

/// Zipf over ranks 0..n-1: P(k) proportional to 1 / (k+1)^exponent
/// (exponent 0 is uniform).
class zipf_sampler {
public:
  zipf_sampler(int n, double exponent);
  int sample(rng& r) const;
  /// The probability of rank k.
  double probability(int k) const;
  int size() const { return static_cast<int>(cdf_.size()); }

private:
  std::vector<double> cdf_; // [n] cumulative, last = 1
};

/// Integer lengths drawn from a log-normal with the given mean and
/// standard deviation, rounded and clipped to [min, max] (std 0 gives the
/// mean every time).
struct length_distribution {
  double mean = 1.0;
  double stddev = 0.0;
  int min = 0;
  int max = 1 << 20;

  int sample(rng& r) const;
};

} // namespace mosaic::sim
