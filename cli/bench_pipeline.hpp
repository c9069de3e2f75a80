#pragma once

// The part of `mosaic bench --profile` that runs the real actor pipeline
// (actors/local_cluster): what a request costs beyond the engine's own
// prefill and decode, for the discrete-event model (sim/des.hpp).

#include <string>

#include "engine/error.hpp"
#include "sim/cost_profile.hpp"

namespace mosaic::cli {

struct pipeline_bench_options {
  std::string model;
  std::string device;
  int threads = 0;
  int repeats = 3; ///< requests per shape (the first of all warms up)
};

/// Starts a single-node cluster on a temporary library with three
/// compiled images and measures, one request at a time:
///   - load_disk_bytes_per_s: the node's kv_loader loading an entry from
///     the disk tier (read as the actors read, checksum, f16 → f32);
///   - pipeline_base_s + pipeline_per_image_s: time to first token minus
///     the prefill actor's own pass time, fitted over 0-3 images (library
///     RAM hits, policy full_reuse);
///   - prefill_pipeline_factor, prefill_node_per_reused_token_s: prefill
///     passes in the node (workload-shaped prompts, full and mpic:32)
///     fitted as factor x the engine model's time + extra x linked tokens
///     (other actors and the loader share the cores);
///   - decode_step_overhead_s: mean inter-token gap minus the engine's
///     decode step at batch 1 and the request's context (the decode fit
///     of `p`, measured before this call).
/// Fills those fields of `p` and their provenance.
status profile_pipeline(const pipeline_bench_options& o, sim::cost_profile& p);

} // namespace mosaic::cli
