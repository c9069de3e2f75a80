#pragma once

// What a node of a multi-node cluster holds beyond the actors
// (local_cluster::join, actors/cluster_node.cpp): the ZeroMQ context, the
// data-plane receiver on its data_port, the outboxes towards remote
// decode nodes, the peers it links to and their health. Destroyed after
// the actor system (every actor that uses it has stopped).

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "actors/kv_relay.hpp"
#include "actors/peer_link.hpp"
#include "kv/transfer/curve_keys.hpp"
#include "kv/transfer/receiver.hpp"

namespace mosaic::actors {

struct node_network {
  std::string node;
  zmq::context_t zmq{1};
  std::unique_ptr<kv::transfer::kv_receiver> receiver; ///< on the node's data_port
  std::vector<std::shared_ptr<kv_outbox>> outboxes;    ///< towards remote decode nodes
  std::vector<peer_address> peers;
  std::shared_ptr<peer_health> health = std::make_shared<peer_health>();
  /// This node's directory and those of the peers that dialed it.
  std::shared_ptr<peer_directories> directories = std::make_shared<peer_directories>();
  /// This node's CURVE pair when the topology gives nodes keys: the data
  /// plane is then encrypted and admits only the topology's nodes.
  std::optional<kv::transfer::curve_pair> keys;

  /// A data-plane sender's options towards the node whose CURVE public
  /// key is `peer_key` (CURVE when this node has keys).
  kv::transfer::sender_options sender_to(const std::string& peer_key) const {
    kv::transfer::sender_options so;
    if (keys)
      so.curve =
          kv::transfer::sender_options::curve_keys{peer_key, keys->public_key, keys->secret_key};
    return so;
  }

  ~node_network() {
    outboxes.clear(); // sockets before the context
    receiver.reset();
  }
};

} // namespace mosaic::actors
