#pragma once

// Discrete-event model of a cluster (DESIGN.md §9): replays a workload on
// a topology (any number of nodes and devices, from topology/'s
// load_topology) with per-stage costs from a measured profile
// (sim/cost_profile.hpp). What it models:
//   - the pipeline before prefill (front end, linker, library lookup,
//     message hops): a fixed delay per request and per image, off the
//     devices;
//   - devices: every (node, device) pair that workers are placed on runs
//     one thing at a time. Workers placed on the same device share it, as
//     the actors of one node share its CPU (one compute lock): a prefill
//     pass waits for the decode step in progress, and a waiting prefill
//     goes before the next decode step;
//   - prefill workers (one per `prefill` actor): FCFS over all workers
//     (the first idle one takes the oldest request); the pass computes
//     what the policy recomputes (below);
//   - library loads of cached images, from RAM when the image was loaded
//     on that node recently (an LRU of `ram_gb`), else from disk: on a
//     GPU overlapped layer by layer with the pass (full and prefix load
//     none); on a CPU added to the pass for every policy (the loader
//     converts on the same cores while the pass waits for it);
//   - KV transfer to the decode worker when it is on another node;
//   - decode workers (one per `decode` actor): continuous batching up to
//     max_batch; a step costs base + per_seq * batch + per_context_token
//     * (tokens the batch holds) (+ the pipeline's per-step overhead); a sequence joins at the next
//     step boundary and generates max_tokens tokens (no early stop).
// The first token comes out of the prefill pass. Every policy but
// `full` starts from the node's prefix cache (as the live pool's,
// engine/prefix_cache.hpp): the longest run of the request's pieces that
// an earlier prompt on that node started with, in whole blocks, never the
// last token, least recently used dropped beyond the decode pool's size
// (piece-granular: the live cache also matches inside a piece). Tokens
// computed past it per policy: full and prefix every token; full_reuse
// text only; mpic:k text + k per image (counted from the image's first
// token); cacheblend:r text + all image tokens at layer 0 + r of them at
// the other layers; vlcache:r text + r of each image. Images inside the
// cached prefix are not loaded. Every image of the workload is in the
// library (prebuilt, as in the live demo).
//
// Event driven (arrivals, device ops, joins); decode runs many steps as
// one event until a sequence ends or a join or prefill cuts it short, so
// an hour of traffic on 64 nodes takes seconds.

#include <string>

#include "engine/error.hpp"
#include "engine/policy_spec.hpp"
#include "sim/cost_profile.hpp"
#include "sim/report.hpp"
#include "sim/workload.hpp"
#include "topology/topology.hpp"

namespace mosaic::sim {

struct des_options {
  policy_spec policy{policy_kind::mpic, 32, 0.0f};
  slo objectives;
  double rate = 0.0; ///< offered rate, for the report
};

/// What the topology provides, counted.
struct des_cluster_shape {
  int nodes = 0;
  int prefill_workers = 0;
  int decode_workers = 0;
  int decode_slots = 0; ///< sum of max_batch
  int devices = 0;      ///< distinct (node, device) pairs the workers run on
};

struct des_result {
  run_result run;
  des_cluster_shape shape;
  double wall_seconds = 0.0; ///< how long the simulation itself took
  int64_t events = 0;
};

/// Runs the model. invalid_argument when the topology has no prefill or no
/// decode worker.
result<des_result> simulate(const topology& topo, const cost_profile& profile, const workload& w,
                            const des_options& options);

} // namespace mosaic::sim
