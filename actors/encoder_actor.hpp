#pragma once

// The encoder actor: decoded image → projector output (vision tower +
// projector on the node's backend), with an LRU encoder-output cache keyed
// by tenant and image key (tenants never share an entry: a fast answer
// must not tell one tenant that another sent the image), and
// the "compile" of an image (its standalone KV) for the library. Detached:
// every encode and compile is heavy compute on the node's backend.
//
//   (encode_atom, encode_request_msg) -> encode_result_msg
//       compile = false: embeddings behind encode_result.embeddings.id
//         (node_context::embeddings; the receiver takes it)
//       compile = true (upload): encode, compile, store in the tenant's
//         static library through the kv_loader; answers once stored
//   (store_atom, store_request_msg)   -> (nothing)
//       "store after use": compile the encoder output behind
//       embeddings.id and store it; failures are counted, not reported

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/node_context.hpp"

namespace mosaic::actors {

/// Spawns the encoder of `ctx`; stores go to `kv_loader`.
caf::actor spawn_encoder(caf::actor_system& sys, node_context* ctx, caf::actor kv_loader);

} // namespace mosaic::actors
