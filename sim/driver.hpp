#pragma once

// The open-loop driver: sends each request of a workload at its arrival
// time, whatever the state of earlier ones (as `vllm bench serve` does),
// and records when every token arrived.

#include <chrono>
#include <string>

#include "sim/metrics.hpp"
#include "sim/report.hpp"
#include "sim/target.hpp"
#include "sim/workload.hpp"

namespace mosaic::sim {

struct drive_options {
  std::string label; ///< run label (the policy)
  double rate = 0.0; ///< offered rate, for the report
  slo objectives;
  /// After the last arrival, how long to wait for the stragglers.
  std::chrono::milliseconds drain_timeout{std::chrono::minutes{5}};
  bool progress = false; ///< one line per finished request on stderr
};

/// Drives `t` with `w` and summarises the run.
run_result drive(target& t, const workload& w, const drive_options& options);

} // namespace mosaic::sim
