#pragma once

// `mosaic sim compare --des-profile P [--des-topology T]`: after the live
// runs, replays the same workload (same seed, same requests) in the
// discrete-event model and prints, per policy, mean TTFT, mean TPOT and
// output throughput live and simulated with their ratio next to the 20%
// limit of DESIGN.md §9.

#include <vector>

#include <nlohmann/json.hpp>

#include "cli/sim_options.hpp"
#include "sim/report.hpp"

namespace mosaic::cli {

/// The DES-vs-live table for `runs` (one per policy, live, of `w`); also
/// printed on stdout. JSON: one object per policy with both figures and
/// their ratio. The simulated runs, request by request, go to `des_runs`.
result<nlohmann::json> validate_against_des(const sim_options& o, const sim::workload& w,
                                            const std::vector<sim::run_result>& runs,
                                            std::vector<sim::run_result>& des_runs);

} // namespace mosaic::cli
