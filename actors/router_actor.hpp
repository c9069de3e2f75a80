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
//
// With several prefill workers (`router_peers::prefill`: in this process,
// or on other nodes through peer links) the router picks one per request
// and per upload (actors/prefill_routing.hpp): by load and, with the
// cache_aware strategy, by which worker already holds the request's
// images. A worker that is down (a local linker that stopped, a node its
// links see down) is skipped; a request refused unsent by a worker that
// just went down is sent to another one.

#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/node_context.hpp"

namespace mosaic::actors {

class peer_health;

/// One prefill worker the router can send requests to: a linker with its
/// prefill worker and KV library.
struct prefill_route {
  std::string name;    ///< for messages: "local 0", "node 'p1'"
  caf::actor linker;   ///< local linker or peer link to a node's linker
  caf::actor uploader; ///< compiles and stores uploads into this worker's library
  /// The node whose up/down state (router_peers::health) decides whether
  /// the worker is up; empty: a local worker, up until its linker stops.
  std::string node;
};

struct router_peers {
  caf::actor linker;  ///< the only worker when `prefill` is empty
  caf::actor encoder; ///< the uploader when `prefill` is empty
  /// Every kv_loader of the cluster (local, or links): a DELETE removes
  /// the tenant's entry from whichever library holds it.
  std::vector<caf::actor> libraries;
  caf::actor decode;  ///< receives cancels of running requests
  /// Every prefill worker (see above); empty: {linker, encoder}.
  std::vector<prefill_route> prefill;
  std::shared_ptr<peer_health> health; ///< up/down of remote workers' nodes
  /// Which router of the cluster this is (its node's index in the
  /// topology): request ids are `(index + 1) << 40 | n`, unique cluster-
  /// wide, so that two routers' requests never meet under one id.
  uint32_t index = 0;
};

/// The first request id router `index` hands out.
constexpr uint64_t first_request_id(uint32_t index) {
  return (uint64_t(index) + 1) << 40 | 1;
}

caf::actor spawn_router(caf::actor_system& sys, node_context* ctx, router_peers peers);

} // namespace mosaic::actors
