#pragma once

// The one actor a node publishes on its control_port (CAF middleman): the
// node's table of actors by kind. A peer's link (peer_link.hpp) asks it
// for the actor of one kind and sends it heartbeats.
//
//   (hello_atom, std::string kind, std::string from_node, caf::actor from_directory)
//       -> caf::actor
//       errc::not_found when this node runs no actor of that kind; kind
//       "directory" is the directory itself. A non-null from_directory
//       (the dialing node's own directory, sent over its connection) is
//       recorded in `directories` until it goes down: under TLS this
//       node's links to that node use it instead of connecting
//       (peer_link.hpp, peer_directories).
//   (heartbeat_atom) -> std::string (this node's name)

#include <functional>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/peer_link.hpp"

namespace mosaic::actors {

/// The actor that serves `kind` to requests from node `from_node`; a
/// null actor when this node has none.
using actor_resolver =
    std::function<caf::actor(const std::string& kind, const std::string& from_node)>;

caf::actor spawn_node_directory(caf::actor_system& sys, std::string node, actor_resolver resolve,
                                std::shared_ptr<peer_directories> directories);

} // namespace mosaic::actors
