#pragma once

// The one actor a node publishes on its control_port (CAF middleman): the
// node's table of actors by kind. A peer's link (peer_link.hpp) asks it
// for the actor of one kind and sends it heartbeats.
//
//   (hello_atom, std::string kind, std::string from_node) -> caf::actor
//       errc::not_found when this node runs no actor of that kind
//   (heartbeat_atom) -> std::string (this node's name)

#include <functional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

namespace mosaic::actors {

/// The actor that serves `kind` to requests from node `from_node`; a
/// null actor when this node has none.
using actor_resolver =
    std::function<caf::actor(const std::string& kind, const std::string& from_node)>;

caf::actor spawn_node_directory(caf::actor_system& sys, std::string node, actor_resolver resolve);

} // namespace mosaic::actors
