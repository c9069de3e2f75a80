#pragma once

// FastCache's dynamic multi-stage batching with memory-aware admission
// (arXiv 2503.08461): requests pass through prefill → compress → decode
// (compress is skipped when a request keeps all its KV), each stage has
// its own FIFO queue, and a resource manager accounts device memory:
//
//   used = weights + sum(reserved KV of admitted requests)
//                  + sum(activations of running batches)   <= budget
//
// A request's KV reservation is taken at admission (its prefill batch) at
// the request's peak — max(KV_before + KV_after while compressing,
// KV_after + decode growth) — and shrinks when compression finishes, which
// is how compression lets more requests in. Activations are per running
// batch (bytes per token x tokens). Admission also keeps room for the
// largest single-request activation of any admitted request, so a stage
// can always run a batch of one once the others finish (no deadlock).
//
// Each stage's next batch is the longest FIFO prefix of its queue that
// fits in free memory (capped by the policy), formed once the queue holds
// `count` requests or its oldest has waited `max_wait` seconds. Decode
// batches run to completion (the caller may interleave tokens inside); a
// live caller may instead let requests join the running decode batch and
// leave it one by one (join_batch, release: actors/stage_admission.hpp).
//
// Pure and deterministic: no threads, no clock of its own; the caller
// passes `now` (seconds) to every call. Not thread-safe.

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/error.hpp"
#include "engine/kv_compression.hpp"
#include "engine/kv_pool.hpp"
#include "engine/model/model_config.hpp"
#include "engine/schedule_policy.hpp"

namespace mosaic {

/// The resource manager's memory model (bytes).
struct memory_model {
  size_t budget_bytes = 0;                 ///< device memory to schedule within
  size_t weight_bytes = 0;                 ///< resident weights
  size_t kv_bytes_per_token = 0;           ///< K and V of every layer for one token
  int block_size = 1;                      ///< KV is allocated in blocks of this many tokens
  size_t prefill_act_bytes_per_token = 0;  ///< per prompt token in a prefill batch
  size_t compress_act_bytes_per_token = 0; ///< per prompt token in a compress batch
  size_t decode_act_bytes_per_seq = 0;     ///< per sequence in a decode batch
  /// KV reservations may not exceed this (a live node's KV pool); 0: only
  /// `budget_bytes` limits them.
  size_t kv_budget_bytes = 0;

  /// KV bytes of `tokens` tokens, rounded up to whole blocks.
  size_t kv_bytes(int tokens) const noexcept;
};

/// A model of `cfg` whose KV lives in a pool with geometry `pool` (per-token
/// bytes from bytes_per_block / block_size) and float32 activation
/// estimates from the engine's working buffers (see docs/fastcache.md).
memory_model make_memory_model(const text_config& cfg, const kv_pool_stats& pool,
                               size_t budget_bytes, size_t weight_bytes);

/// Float32 bytes of the decoder's weights (embeddings, layers, head).
size_t decoder_weight_bytes(const text_config& cfg) noexcept;

/// Fraction of a prompt's KV that `spec` keeps (1 for none). For
/// `learned`, `groups` (the compressor's) give it: each modality keeps one
/// row per full group plus the tokens left over (an upper bound when the
/// image tokens span several images); unknown groups keep everything.
float kv_keep_fraction(const compression_spec& spec, int image_tokens, int text_tokens,
                       learned_groups groups = {}) noexcept;

/// One request as the scheduler sees it.
struct request_info {
  uint64_t id = 0;
  int prompt_tokens = 0;
  int max_new_tokens = 0;
  float kv_keep_ratio = 1.0f; ///< kept fraction of the prompt KV; 1 = no compress stage
};

/// A batch handed to a stage; give it back to on_stage_done.
struct stage_batch {
  stage_kind stage = stage_kind::prefill;
  uint64_t batch_id = 0;
  std::vector<uint64_t> requests; ///< empty: nothing to run now
  size_t activation_bytes = 0;    ///< reserved until on_stage_done
  size_t kv_admitted_bytes = 0;   ///< prefill: KV reserved for the new requests
  bool empty() const noexcept { return requests.empty(); }
};

/// Memory accounting at one instant.
struct memory_usage {
  size_t budget = 0;
  size_t weights = 0;
  size_t kv_reserved = 0;
  size_t activations = 0;
  size_t used() const noexcept { return weights + kv_reserved + activations; }
  size_t free() const noexcept { return budget - used(); }
};

class stage_scheduler {
public:
  /// Errors when the weights alone exceed the budget or a policy field is
  /// out of range.
  static result<stage_scheduler> create(const memory_model& model, const schedule_policy& policy);

  /// Queues a request for prefill at time `now`. Errors: duplicate id,
  /// non-positive prompt, ratio outside (0, 1], or a request that could
  /// never fit even in an empty system.
  status enqueue(const request_info& request, double now);

  /// The next batch for `stage` (empty when the stage is busy, its queue
  /// has not reached a threshold, or nothing fits). At most one batch per
  /// stage runs at a time.
  stage_batch next_batch(stage_kind stage, double now);

  /// The stage finished `batch`: activations are released, requests move
  /// on (compress releases the dropped KV, decode the rest).
  status on_stage_done(const stage_batch& batch, double now);

  // -- live use (actors/stage_admission) ----------------------------------------

  /// Continuous batching (the live decode worker): while `stage` runs a
  /// batch, queued requests that fit join it, up to the policy's cap; the
  /// result lists only the joiners and carries the running batch's id.
  /// When the stage is idle this is next_batch.
  stage_batch join_batch(stage_kind stage, double now);

  /// Request `id` leaves early wherever it is: it finished decoding before
  /// the rest of its batch, or it failed or was cancelled in any stage. Its
  /// KV reservation and its share of a running batch's activations are
  /// freed; a running batch left empty ends. Errors: unknown id.
  status release(uint64_t id, double now);

  /// KV bytes of `kv_budget_bytes` held by others (a live pool's blocks
  /// that no scheduled request owns); prefill admits only what fits in
  /// the rest.
  void set_kv_external(size_t bytes) noexcept { kv_external_ = bytes; }

  /// True while `id` is queued or running.
  bool tracks(uint64_t id) const noexcept { return live_.count(id) != 0; }

  /// Earliest time a waiting threshold will fire for `stage` (infinity if
  /// its queue is empty).
  double wake_time(stage_kind stage) const noexcept;

  memory_usage memory() const noexcept;
  size_t queued(stage_kind stage) const noexcept;
  bool busy(stage_kind stage) const noexcept;
  /// Admitted and not yet finished.
  size_t in_flight() const noexcept { return live_.size() - queued(stage_kind::prefill); }
  /// Requests that finished decode, in completion order.
  const std::vector<uint64_t>& completed() const noexcept { return completed_; }
  const memory_model& model() const noexcept { return model_; }
  const schedule_policy& policy() const noexcept { return policy_; }

private:
  struct entry {
    request_info info;
    size_t kv_held = 0;     ///< reserved KV bytes (0 before admission)
    size_t max_act = 0;     ///< largest single-request activation of its stages
    double ready_since = 0; ///< when it entered its current queue
    bool admitted = false;
  };
  struct running {
    stage_batch batch;
    bool active = false;
  };

  stage_scheduler(const memory_model& model, const schedule_policy& policy)
    : model_(model), policy_(policy) {}

  size_t activation_of(stage_kind stage, const request_info& r) const noexcept;
  size_t kv_peak(const request_info& r) const noexcept;
  size_t kv_after_compress(const request_info& r) const noexcept;
  bool triggered(stage_kind stage, double now) const noexcept;
  size_t admitted_headroom() const noexcept;

  memory_model model_;
  schedule_policy policy_;
  std::unordered_map<uint64_t, entry> live_;
  std::array<std::deque<uint64_t>, n_stage_kinds> queues_;
  std::array<running, n_stage_kinds> running_;
  std::vector<uint64_t> completed_;
  size_t kv_reserved_ = 0;
  size_t kv_external_ = 0;
  size_t act_reserved_ = 0;
  uint64_t next_batch_id_ = 1;
};

} // namespace mosaic
