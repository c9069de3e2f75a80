#pragma once

// Discrete-event model of FastCache's multi-stage serving on ONE device
// (arXiv 2503.08461; docs/fastcache.md): requests pass prefill → compress
// → decode, batches are chosen by the engine's own resource manager
// (engine/stage_scheduler.hpp, the object a server would drive), and the
// device runs one batch (or one decode step) at a time:
//
//   device idle → alternately a decode step of the running decode batch
//   and the next compress or prefill batch the scheduler hands out
//
// Costs come from a measured profile (sim/cost_profile.hpp):
//   prefill batch  = prefill_base_s + Σ (per_computed · P + per_attended · P(P+1)/2)
//                    (every token computed: no library reuse in this model)
//   compress batch = prefill_base_s + Σ (per_computed · W + per_attended · W·P
//                    + pool bytes of P tokens / load_ram_bytes_per_s)
//                    (snapkv re-runs its W-query window against the P keys;
//                    keynorm and streaming only copy rows: W = 0)
//   decode step    = decode_step_base_s + decode_step_per_seq_s · batch
// The first token leaves when the request's compress batch ends (prefill
// batch without compression), as in the actor pipeline; TTFT without
// compression subtracts the request's compress batch time.
//
// KV memory is reported twice: what the resource manager reserved (each
// request's peak from admission) and what actually exists at each instant
// (the prompt KV, plus the compressed copy while compressing, then the
// kept KV growing by one token per step).

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "engine/compression_spec.hpp"
#include "engine/error.hpp"
#include "engine/stage_scheduler.hpp"
#include "sim/cost_profile.hpp"
#include "sim/report.hpp"
#include "sim/workload.hpp"

namespace mosaic::sim {

struct stage_des_options {
  std::string label;
  schedule_policy schedule;
  compression_spec compression; ///< none: no compress stage
  memory_model memory;          ///< the resource manager's budget and sizes
  slo objectives;
  double rate = 0.0;      ///< offered rate, for the report
  learned_groups learned; ///< a learned compression's group sizes (unknown: keeps all)
};

/// How one stage's batches looked.
struct stage_stats {
  int64_t batches = 0;
  int64_t requests = 0;
  int max_batch = 0;
  double busy_s = 0.0; ///< device time spent on this stage
  double mean_batch() const { return batches > 0 ? double(requests) / double(batches) : 0.0; }
};

struct stage_des_result {
  run_result run;
  size_t peak_kv_reserved = 0; ///< resource manager's reservation, max over time (bytes)
  size_t peak_kv_actual = 0;   ///< KV that exists, max over time (bytes)
  size_t peak_used = 0;        ///< weights + reserved KV + activations, max over time
  double ttft_without_compression_mean = 0.0; ///< seconds
  double compress_mean = 0.0;                 ///< compress batch time per request (s)
  std::array<stage_stats, n_stage_kinds> stages{};
  int64_t events = 0;
  double wall_seconds = 0.0;
};

/// The memory model of the profile's model (a built-in preset or an HF
/// directory's config.json) with float32 KV in blocks of `block_size` and
/// a budget of weights + `kv_budget_bytes` (KV and activations).
result<memory_model> profile_memory_model(const cost_profile& profile, size_t kv_budget_bytes,
                                          int block_size = 16);

/// Prompt tokens of `r` as the model counts them: words · tokens_per_word
/// per text piece (at least 1), image_tokens per image. {total, image}.
std::pair<int, int> prompt_tokens(const sim_request& r, const cost_profile& profile);

/// Runs the model. Requests that cannot fit even alone fail (recorded,
/// not dropped); invalid_argument for a bad memory model or policy.
result<stage_des_result> simulate_stages(const cost_profile& profile, const workload& w,
                                         const stage_des_options& options);

} // namespace mosaic::sim
