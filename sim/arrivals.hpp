#pragma once

// Request arrival times: a Poisson process or a gamma renewal process
// (burstiness, as `vllm bench serve --burstiness`: gamma inter-arrival
// times with shape = burstiness, so 1 is Poisson, < 1 burstier, > 1 more
// regular), with a rate that may ramp piecewise-linearly over time. A
// ramp is realised by time change: unit-rate event times E_k are mapped
// through the inverse of the cumulative rate, t_k = Λ⁻¹(E_k).

#include <cstdint>
#include <string>
#include <vector>

#include "engine/error.hpp"
#include "sim/random.hpp"

namespace mosaic::sim {

enum class arrival_process : uint8_t { poisson, gamma };

/// One point of a rate ramp: the rate at time `at_s` (linear in between,
/// constant after the last point).
struct rate_point {
  double at_s = 0.0;
  double rate = 0.0; ///< requests per second
};

struct arrival_spec {
  arrival_process process = arrival_process::poisson;
  double rate = 1.0;       ///< requests per second (when `ramp` is empty)
  double burstiness = 1.0; ///< gamma shape; 1 = Poisson
  std::vector<rate_point> ramp;
  double duration_s = 60.0; ///< no arrival after this
  int64_t max_requests = 0; ///< 0: no cap

  /// Checks rates, burstiness and ramp order; errors name the field.
  status validate() const;
  /// The instantaneous rate at time t.
  double rate_at(double t) const;
};

/// "poisson" / "gamma".
result<arrival_process> parse_arrival_process(const std::string& name);

/// Arrival times in seconds from the start, increasing.
result<std::vector<double>> arrival_times(const arrival_spec& spec, uint64_t seed);

} // namespace mosaic::sim
