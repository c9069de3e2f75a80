#pragma once

// Per-stage costs of the engine on one device, measured by
// `mosaic bench --profile` (cli/bench_command.cpp) and read by the
// discrete-event simulator (sim/des.hpp). Linear models fitted by least
// squares to the measurements:
//
//   prefill pass  = prefill_base_s + prefill_per_computed_token_s * C
//                   + prefill_per_attended_token_s * A
//                   + prefill_per_reused_token_s * R
//     R = prompt tokens linked from the cache instead of computed
//     C = tokens computed (summed over layers / n_layers), A = sum over
//     computed tokens of the tokens each attends to (its position + 1)
//   decode step   = decode_step_base_s + decode_step_per_seq_s * batch
//                   + decode_step_per_context_token_s * (sum of the batch's
//                   sequence lengths)
//   image encode  = encode_per_image_s; compile = compile_per_image_s
//   library load  = bytes / load_{ram,disk}_bytes_per_s, overlapped with
//                   the prefill layer by layer
//   KV transfer   = bytes / transfer_bytes_per_s between nodes
//   pipeline      = pipeline_base_s + pipeline_per_image_s * images, off
//                   the device, between arrival and the prefill queue
//                   (front end, tokenizer, linker, library lookup, message
//                   hops); decode_step_overhead_s more per decode step
//                   (sampling, token events), measured on the real actor
//                   pipeline (`mosaic bench --profile`), 0 in older profiles;
//                   prefill passes in the node take prefill_pipeline_factor
//                   times the engine-level model (1 in older profiles),
//                   plus prefill_node_per_reused_token_s per linked token
//                   (the loaded entry handed over and linked; 0 in older
//                   profiles)
//
// `provenance` says for every field whether it was measured or assumed.

#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "engine/error.hpp"

namespace mosaic::sim {

struct cost_profile {
  std::string model;
  std::string device;
  int n_layers = 1;
  int image_tokens = 576;       ///< tokens per image
  double tokens_per_word = 1.3; ///< tokenizer tokens per workload word
  double prefill_base_s = 0.0;
  double prefill_per_computed_token_s = 0.0;
  double prefill_per_attended_token_s = 0.0;
  double prefill_per_reused_token_s = 0.0;
  double encode_per_image_s = 0.0;
  double compile_per_image_s = 0.0;
  double decode_step_base_s = 0.0;
  double decode_step_per_seq_s = 0.0;
  double decode_step_per_context_token_s = 0.0;
  double kv_bytes_per_token = 0.0; ///< K+V of every layer, as stored (library entries)
  double load_ram_bytes_per_s = 1e10;
  double load_disk_bytes_per_s = 2e9;
  double transfer_bytes_per_s = 1.25e9; ///< 10 GbE
  double pipeline_base_s = 0.0;
  double pipeline_per_image_s = 0.0;
  double decode_step_overhead_s = 0.0;
  /// Prefill passes in the node over the engine-level model (1: none).
  double prefill_pipeline_factor = 1.0;
  /// More per linked (reused) token in the node than in the engine alone.
  double prefill_node_per_reused_token_s = 0.0;
  std::map<std::string, std::string> provenance; ///< field → "measured: ..." / "assumed: ..."

  double prefill_seconds(double computed, double attended, double reused = 0.0) const {
    return prefill_base_s + prefill_per_computed_token_s * computed +
           prefill_per_attended_token_s * attended + prefill_per_reused_token_s * reused;
  }
  /// The pass as the node runs it (prefill_seconds scaled, plus the
  /// node's cost of the linked tokens).
  double node_prefill_seconds(double computed, double attended, double reused) const {
    return prefill_pipeline_factor * prefill_seconds(computed, attended, reused) +
           prefill_node_per_reused_token_s * reused;
  }
  double pipeline_seconds(int images) const {
    return pipeline_base_s + pipeline_per_image_s * images;
  }
  /// One step of `batch` sequences holding `context` tokens together.
  double decode_step_seconds(int batch, double context = 0.0) const {
    return decode_step_base_s + decode_step_per_seq_s * batch +
           decode_step_per_context_token_s * context + decode_step_overhead_s;
  }
};

/// Writes the profile as JSON.
status save_profile(const cost_profile& p, const std::filesystem::path& path);
/// Reads a profile written by save_profile; errors name the missing field.
result<cost_profile> load_profile(const std::filesystem::path& path);

/// Least squares: coefficients c minimising |X c - y|² for rows X (each
/// of the same width); invalid_argument when the system is singular.
result<std::vector<double>> fit_linear(const std::vector<std::vector<double>>& x,
                                       std::span<const double> y);

/// Costs from timings: coefficients c >= 0 minimising the squared
/// *relative* error sum(((X c)_r - y_r) / y_r)² (every y_r > 0). A cost
/// cannot be negative, and a few slow runs of the largest shapes (another
/// job took the cores) must not decide the small ones, which an absolute
/// least-squares fit lets them do. Exact over every subset of the columns
/// (the active set), so meant for a handful of coefficients (at most 10).
result<std::vector<double>> fit_costs(const std::vector<std::vector<double>>& x,
                                      std::span<const double> y);

} // namespace mosaic::sim
