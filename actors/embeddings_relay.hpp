#pragma once

// The encoder's output across nodes (multi-node). The linker asks the
// encoder for the embeddings of each miss ([n_tokens, hidden] f32, 9.4 MB
// for LLaVA-1.5-7B); in one process they move by handle
// (node_context::embeddings). When the encoder is on another node:
//
// - encoder node: the directory hands each remote node its own
//   `embeddings_gateway`, which forwards encode requests to the encoder,
//   takes the output from this node's table and pushes it over the data
//   plane (kv/transfer/, one section) to the requesting node's data_port,
//   under a transfer id with the top bit set (KV transfers use request
//   ids, which never have it); the answer names that id in
//   `embeddings.id`, with `embeddings.node` = the encoder's node.
// - linker node: the linker's "encoder" is an `embeddings_intake` in front
//   of the peer link; for an answer whose embeddings are on another node
//   it takes the transfer from this node's receiver, puts the floats into
//   this node's table and relays the answer with the local handle. The
//   linker is unchanged.
//
// Other messages (store requests) pass through both unchanged.

#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/node_context.hpp"
#include "kv/transfer/sender.hpp"

namespace zmq {
class context_t;
}

namespace mosaic::kv::transfer {
class kv_receiver;
}

namespace mosaic::actors {

/// Encoder node: the gateway for one requesting node whose data plane is
/// `endpoint`. `zmq` must outlive the actor.
caf::actor spawn_embeddings_gateway(caf::actor_system& sys, node_context* ctx, zmq::context_t& zmq,
                                    std::string endpoint, std::string node, caf::actor encoder,
                                    kv::transfer::sender_options options = {});

/// Linker node: the intake in front of `encoder_link`. `receiver` must
/// outlive the actor.
caf::actor spawn_embeddings_intake(caf::actor_system& sys, node_context* ctx,
                                   kv::transfer::kv_receiver* receiver, caf::actor encoder_link);

} // namespace mosaic::actors
