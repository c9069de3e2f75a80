#pragma once

// One node's admission to the FastCache stages (prefill → compress →
// decode): the node's single `stage_scheduler` (engine/stage_scheduler.hpp)
// behind a mutex, shared by the prefill, compress and decode actors through
// node_context::stages, and the wake-ups between them.
//
// The resource manager accounts the node's real KV pool: its capacity is
// the scheduler's KV budget, each admitted request reserves its peak KV
// (prompt + compressed copy while compressing, kept + max_tokens after),
// and pool blocks that no scheduled request holds (library compiles after
// use, sequences decoded for other nodes) are measured at every prefill
// admission (pool blocks in use minus the blocks the scheduled requests
// reported) and kept out of the budget. Weights and activation estimates
// come from the model's geometry (make_memory_model).
//
// Without a policy (`schedule: off`, or no compression by default) the
// object only carries the wake-ups: prefill holds new requests while the
// compress stage has work, and the compress actor wakes it when that work
// is done (no polling).
//
// Thread-safe. Wake-ups are `wake_atom` messages to the actors that
// attached themselves; sent outside the lock.

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include <caf/actor_addr.hpp>

#include "engine/error.hpp"
#include "engine/stage_scheduler.hpp"

namespace mosaic::actors {

struct node_options;
struct prefill_job;

/// What the node's stages did (node_stats::stages).
struct stage_admission_stats {
  bool scheduled = false;
  std::string policy;                ///< "off" without a scheduler
  size_t kv_budget_bytes = 0;        ///< the pool's capacity
  size_t kv_reserved_bytes = 0;      ///< reserved now
  size_t kv_reserved_high_water = 0; ///< the most ever reserved (<= kv_budget_bytes)
  size_t kv_external_high_water = 0; ///< the most pool bytes seen held outside the scheduler
  std::array<uint64_t, n_stage_kinds> batches{};  ///< batches formed (decode: joins) per stage
  std::array<uint64_t, n_stage_kinds> requests{}; ///< requests they carried
  /// The largest batch per stage (decode: the most requests joining at once).
  std::array<uint64_t, n_stage_kinds> max_batch{};
  uint64_t refused = 0; ///< requests that could never fit
};

class stage_admission {
public:
  /// `policy` empty: no scheduler (wake-ups only). `kv_pool` is the
  /// node's pool; it must outlive this object. `learned`: the group sizes
  /// of the model's learned compressor, if it has one (unknown: a
  /// "learned" request reserves its whole prompt again).
  static result<std::unique_ptr<stage_admission>>
  create(const std::optional<schedule_policy>& policy, const text_config& cfg, const kv_pool& pool,
         const node_options& options, learned_groups learned = {});

  bool scheduled() const noexcept { return sched_.has_value(); }

  /// The actor of `stage` receives this object's wake-ups.
  void attach(stage_kind stage, caf::actor_addr actor);
  /// Sends `stage`'s actor a wake_atom.
  void wake(stage_kind stage) const;

  /// The request `job` as the scheduler sees it: prompt tokens with images
  /// expanded, max_tokens (or the node default), and the KV it keeps after
  /// compression (the compressor's kept count plus one block of slack;
  /// learned compression is assumed to keep everything).
  request_info request_of(const prefill_job& job) const;

  /// Queues a request for prefill. Errors: it can never fit (a clear
  /// refusal naming sizes), or the id is already queued.
  status enqueue(const request_info& request);
  /// The next batch of `stage` (decode: requests joining the running
  /// batch). Empty when nothing may run now.
  stage_batch next(stage_kind stage);
  /// `batch` (prefill or compress) finished; its remaining requests move on
  /// and the stages with queued work are woken.
  void done(const stage_batch& batch);
  /// Request `id` left (finished decoding, failed or cancelled anywhere);
  /// no-op for a request the scheduler does not track.
  void release(uint64_t id);
  /// The pool blocks request `id`'s sequences hold now.
  void held(uint64_t id, int blocks);
  bool tracks(uint64_t id) const;

  /// Seconds until `stage`'s wait threshold fires (infinity: none).
  double seconds_until_wake(stage_kind stage) const;
  /// True when the last prefill admission found requests waiting that
  /// only pool blocks held outside the scheduler kept out: nothing the
  /// scheduler tracks will wake prefill, so it retries on a timer.
  bool blocked_outside() const;

  stage_admission_stats stats() const;

private:
  stage_admission(const kv_pool& pool) : pool_(&pool) {}
  double now() const;
  void wake_queued();

  const kv_pool* pool_;
  mutable std::mutex mutex_;
  std::optional<stage_scheduler> sched_;
  std::array<caf::actor_addr, n_stage_kinds> actors_;
  std::unordered_map<uint64_t, int> held_blocks_;
  int held_total_ = 0;
  int block_size_ = 1;
  int default_max_tokens_ = 256;
  learned_groups learned_;
  bool blocked_outside_ = false;
  int64_t t0_ns_ = 0;
  stage_admission_stats stats_;
};

} // namespace mosaic::actors
