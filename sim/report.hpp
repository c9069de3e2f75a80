#pragma once

// Results of a simulator run in an output directory:
//   summary.json   every metric of every run, the unit in each key
//                  (ttft_mean_s, output_token_throughput_tok_per_s, ...)
//   requests.csv   one line per request of every run
//   plot.svg       mean TTFT and output throughput against offered rate,
//                  one line per label (policy)

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "engine/error.hpp"
#include "sim/metrics.hpp"

namespace mosaic::sim {

/// One run with the requests it measured.
struct run_result {
  run_summary summary;
  std::vector<request_record> records;
};

/// What the whole report says about itself.
struct report_header {
  std::string mode; ///< live, compare, des
  std::string workload;
  uint64_t seed = 0;
  std::string target; ///< what was driven (in-process cluster, DES topology)
  std::string model;
  slo objectives;
};

/// One run's metrics as a JSON object (keys carry units).
nlohmann::json summary_json(const run_summary& s);
/// Writes `text` to `path` (replacing it).
status write_text(const std::filesystem::path& path, const std::string& text);
/// requests.csv text for `runs`.
std::string requests_csv(const std::vector<run_result>& runs);
/// plot.svg text: TTFT (mean, s) and output throughput (tok/s) vs rate.
std::string rate_plot_svg(const std::vector<run_summary>& runs, const std::string& title);
/// The runs of a requests.csv that requests_csv wrote (one per label and
/// rate, in order of appearance), summarized with `objectives`; the
/// token ids and per-token times are not in the file (no agreement, no
/// ITL). Errors name the line.
result<std::vector<run_result>> read_requests_csv(const std::filesystem::path& path,
                                                  const slo& objectives);
/// Writes summary.json, requests.csv and plot.svg into `dir` (created).
/// `extra` is merged into summary.json's top level (e.g. the compare table).
status write_report(const std::filesystem::path& dir, const report_header& header,
                    const std::vector<run_result>& runs, const nlohmann::json* extra = nullptr);

} // namespace mosaic::sim
