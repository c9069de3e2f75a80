#pragma once

// Serving metrics as `vllm bench serve` defines them:
//   TTFT  first token time - send time
//   TPOT  per request (e2e - ttft) / (output_tokens - 1), requests with
//         more than one output token
//   ITL   every gap between consecutive output tokens, pooled over requests
//   E2E   last token time - send time
// each as mean, median, p90 and p99 (percentiles interpolate linearly, as
// numpy.percentile does); request and token throughput over the run's
// duration (image tokens counted separately); goodput = requests per
// second that met every SLO given.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mosaic::sim {

/// What happened to one request. Times are seconds from the start of the run.
struct request_record {
  uint64_t id = 0;
  int dialogue = 0;
  int turn = 0;
  double arrival_s = 0.0;      ///< scheduled
  double sent_s = 0.0;         ///< actually sent
  double first_token_s = -1.0; ///< -1: none
  double end_s = -1.0;
  std::vector<double> token_times_s; ///< every output token (live mode; empty in DES)
  int prompt_tokens = 0;             ///< text + image tokens
  int image_tokens = 0;
  int output_tokens = 0;
  int n_images = 0;
  bool ok = false;
  std::string error;
  std::vector<int32_t> tokens; ///< generated ids (for agreement between policies)

  double ttft() const { return first_token_s - sent_s; }
  double e2e() const { return end_s - sent_s; }
  /// (e2e - ttft) / (output_tokens - 1); 0 for one or no output token.
  double tpot() const;
};

/// Service-level objectives; 0 = not set. A request is "good" when it
/// succeeded and met every objective that is set.
struct slo {
  double ttft_s = 0.0;
  double tpot_s = 0.0;
  double e2e_s = 0.0;
  bool any() const { return ttft_s > 0 || tpot_s > 0 || e2e_s > 0; }
};

struct latency_stats {
  double mean = 0.0;
  double median = 0.0;
  double p90 = 0.0;
  double p99 = 0.0;
};

/// One run (one policy at one rate).
struct run_summary {
  std::string label; ///< e.g. the policy
  double rate = 0.0; ///< offered request rate (requests/s)
  int64_t completed = 0;
  int64_t failed = 0;
  double duration_s = 0.0;
  int64_t total_input_tokens = 0;
  int64_t total_output_tokens = 0;
  int64_t total_image_tokens = 0;
  latency_stats ttft, tpot, itl, e2e;   // seconds
  double request_throughput = 0.0;      ///< completed requests / s
  double output_token_throughput = 0.0; ///< output tokens / s
  double total_token_throughput = 0.0;  ///< (input + output) tokens / s
  double image_token_throughput = 0.0;  ///< image tokens of completed prompts / s
  double goodput = 0.0;                 ///< good requests / s (0 without SLOs)
  int64_t good = 0;
};

/// numpy.percentile(values, p) with linear interpolation; 0 when empty.
double percentile(std::vector<double> values, double p);
/// Mean, median, p90, p99 of `values`.
latency_stats describe(const std::vector<double>& values);
/// Percentile of (value, weight) samples (weights are repeat counts).
double weighted_percentile(std::vector<std::pair<double, double>> samples, double p);

/// Summarises a run. `duration_s` <= 0 uses first send → last end.
/// `weighted_itl` (value, count) replaces the per-token gaps when the
/// records carry no token times (the discrete-event simulator).
run_summary summarize(const std::vector<request_record>& records, const slo& objectives,
                      double duration_s = 0.0,
                      const std::vector<std::pair<double, double>>* weighted_itl = nullptr);

} // namespace mosaic::sim
