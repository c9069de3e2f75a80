#pragma once

// The open-loop driver: sends each request of a workload at its arrival
// time, whatever the state of earlier ones (as `vllm bench serve` does),
// and records when every token arrived.

#include <chrono>
#include <cstddef>
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
  /// A progress bar on stderr: redrawn in place 4 times a second when
  /// stderr is a terminal; otherwise (CI logs) one line per 10% of the
  /// requests finished.
  bool progress_bar = true;
};

/// The progress line: "[mpic:32] 12/40 sent, 9 done, 1 failed, 340 tokens, 12/60 s".
std::string progress_line(const std::string& label, size_t sent, size_t total, size_t done,
                          size_t failed, size_t tokens, double elapsed_s, double duration_s);

/// Drives `t` with `w` and summarises the run.
run_result drive(target& t, const workload& w, const drive_options& options);

} // namespace mosaic::sim
