#pragma once

// The prefill worker: runs ONE pass of a request's link plan. It takes the
// job the linker left in node_context::jobs, waits for the embeddings of
// every library hit, builds the policy's executable plan and runs the
// prefill with its per-layer hook bound to the loads: layer l starts as
// soon as layer l of every hit is in memory, so reads overlap the compute
// of earlier layers. A hit whose load fails is recomputed as a miss (the
// pass is run again without it; `load_fallbacks` counts it), so the answer
// stays right. The first token is sampled here; the KV sequence moves to
// the decode worker by handle (node_context::sequences[request_id]), or,
// when the request's compression is not none, to the compress stage
// (node_context::compress_jobs[request_id], with the plan it ran).
// Images encoded for this request are then compiled and stored through
// the encoder ("store after use"). Detached: the pass is heavy compute.
//
// When the node schedules its stages (node_context::stages scheduled and
// decode on this node), a request waits in the stage scheduler until a
// prefill batch admits it (its peak KV fits in the pool); a batch's passes
// run back to back. Otherwise a request runs at once, or waits while the
// compress stage has work (later stages first). Either way the actor waits
// for a `wake_atom`, never polls.
//
//   (prefill_atom, prefill_task_msg, caf::actor sink) -> token_event_msg (the last)
//   (wake_atom)  a batch may form / the compress stage finished a job

#include <memory>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/node_context.hpp"

namespace mosaic::actors {

class remote_decoders;

struct prefill_peers {
  caf::actor encoder; ///< receives "store after use" requests
  caf::actor decode;
  caf::actor compress; ///< requests whose compression is not none go here, not to decode;
                       ///< null: compression is refused (decode is on another node)
  /// Set when decode runs on other nodes: requests go to one of them and
  /// the KV over the data plane (actors/kv_relay.hpp) instead of by
  /// handle through node_context::sequences; `decode` is then unused.
  std::shared_ptr<remote_decoders> remote_kv;
};

caf::actor spawn_prefill(caf::actor_system& sys, node_context* ctx, prefill_peers peers);

} // namespace mosaic::actors
