#pragma once

// The kv_loader actor: owns the node's library traffic. It answers
// library lookups (leasing each disk hit so that it cannot be evicted
// before it is read), starts the layer-by-layer load of a hit into a
// `loaded_entry` of node_context::loads (whose wait_layer the prefill
// worker binds to its per-layer hook), and stores compiled images in a
// tenant's static library. Detached: stores write and fsync files.
//
//   (lookup_atom, library_lookup_msg)  -> library_lookup_result_msg
//   (load_atom, load_request_msg)      -> layer_ready_msg   (k.id: loads handle)
//   (store_atom, store_request_msg)    -> store_result_msg

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/node_context.hpp"

namespace mosaic::actors {

/// Spawns the kv_loader of `ctx` (which must outlive it).
caf::actor spawn_kv_loader(caf::actor_system& sys, node_context* ctx);

} // namespace mosaic::actors
