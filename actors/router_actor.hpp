#pragma once

// The router: the node's entry point. It assigns request ids, fixes each
// request's absolute deadline (the request's own, else the node default),
// and admits at most `max_inflight` requests into the pipeline at once.
// A request that finds them all busy waits in a bounded queue
// (`max_queue`) until a slot frees or its deadline passes, and then fails
// with errc::overloaded; with the queue full it fails with overloaded at
// once. Nothing is dropped silently: every request ends in its last token
// event or an error.
//
//   (generate_atom, generate_request_msg, caf::actor sink) -> token_event_msg (the last)
//       tokens stream to `sink` as (token_atom, token_event_msg)
//   (cancel_atom, cancel_msg)          -> (nothing)   queued: ends it; running: to decode
//   (encode_atom, encode_request_msg)  -> encode_result_msg   (upload: compile = true)

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/node_context.hpp"

namespace mosaic::actors {

struct router_peers {
  caf::actor linker;
  caf::actor encoder;
  caf::actor decode; ///< receives cancels of running requests
};

caf::actor spawn_router(caf::actor_system& sys, node_context* ctx, router_peers peers);

} // namespace mosaic::actors
