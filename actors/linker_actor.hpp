#pragma once

// The linker actor: turns a request into a prefill job. It tokenises the
// prompt (chat template, one image marker per image), keys every image,
// asks the kv_loader which images the tenant's libraries hold, starts the
// loads of the hits and, at the same time, has the encoder encode the
// misses (misses encode while hits load), then hands the job (by handle:
// node_context::jobs[request_id]) and the plan outline to the prefill
// worker, answering with the request's final token event.
//
//   (generate_atom, generate_request_msg, caf::actor sink) -> token_event_msg
//
// The request must already carry the router's id and absolute deadline.

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/node_context.hpp"

namespace mosaic::actors {

/// The linker's peers.
struct linker_peers {
  caf::actor encoder;
  caf::actor kv_loader;
  caf::actor prefill;
};

/// Spawns a linker (cooperatively scheduled: it only waits on its peers).
caf::actor spawn_linker(caf::actor_system& sys, node_context* ctx, linker_peers peers);

} // namespace mosaic::actors
