#pragma once

// Compare mode's table: the same workload against several policies (and
// servers), each run's mean and p90 TTFT and output throughput as ratios
// to a baseline run (prefix, or a peer server such as vLLM), and how often
// its output matches a reference policy (full) token for token (greedy
// decoding, same requests).

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "engine/error.hpp"
#include "sim/report.hpp"

namespace mosaic::sim {

/// Parses "prefix,mpic:32,..." (each checked with parse_policy), adding
/// `full` first when missing (the agreement reference). Duplicates rejected.
result<std::vector<std::string>> parse_policy_list(const std::string& list);

struct compare_row {
  std::string policy; ///< the run's label
  double ttft_mean_s = 0.0;
  double ttft_ratio = 0.0; ///< to the baseline; 0 when there is none
  double ttft_p90_s = 0.0;
  double ttft_p90_ratio = 0.0;
  double output_throughput = 0.0;
  double throughput_ratio = 0.0;
  int64_t completed = 0;
  int64_t failed = 0;
  /// Requests whose generated tokens equal the reference's exactly, over
  /// requests that both completed; -1 without a reference.
  double agreement_exact = -1.0;
  /// Mean over those requests of (length of the common prefix of tokens) /
  /// (reference length).
  double agreement_tokens = -1.0;
};

std::vector<compare_row> compare_runs(const std::vector<run_result>& runs,
                                      const std::string& baseline, const std::string& reference);
/// A fixed-width table, one line per run; ratio columns name `baseline`.
std::string format_compare_table(const std::vector<compare_row>& rows, const std::string& baseline);
nlohmann::json compare_json(const std::vector<compare_row>& rows);
/// One run's main metrics, a few lines on stdout.
void print_run(const run_result& run);

} // namespace mosaic::sim
