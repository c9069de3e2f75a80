#pragma once

// A local stand-in for one actor of another node (multi-node clusters,
// `mosaic node`). Local actors get the link as their peer handle and send
// it what they would send the remote actor; the link:
//
// - connects to the peer's node directory (node_directory.hpp) through
//   CAF's middleman at host:control_port, asks it for the actor of one
//   kind, and monitors it; until it is connected it retries with backoff
//   (50 ms doubling to 1 s), forever, so that startup order does not
//   matter and a restarted node rejoins;
// - sends the directory a heartbeat every `heartbeat_interval`; a
//   heartbeat unanswered within `heartbeat_timeout`, or a down message
//   from the remote actor, marks the peer down;
// - forwards every message: a request is forwarded as a request and its
//   answer relayed; when the peer goes down, every forwarded request
//   still waiting is answered at once with errc::unavailable naming the
//   node and its host:port (so no client waits for its deadline), and
//   requests arriving while the peer is down get the same error.
//
// Up and down changes are published to a shared `peer_health`, which the
// node uses to wait for its peers at startup and to report them.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/actor_system.hpp>

#include "engine/error.hpp"

namespace mosaic::actors {

/// Where a peer node listens.
struct peer_address {
  std::string node; ///< topology name
  std::string host;
  uint16_t control_port = 0;
  /// "node 'decode' (127.0.0.1:7402)", for messages.
  std::string describe() const;
};

/// Which peers are up; shared by a node's links and its main thread. A
/// node is up while every link to it (one per actor kind asked of it) is
/// connected: a node whose linker link still connects is not yet one the
/// router may pick, and startup waits for all of its links.
class peer_health {
public:
  /// Registers a link to `peer` (down until set up).
  void expect(const peer_address& peer, const std::string& link);
  /// Records that link `link` to `peer` is up or down (one line on stderr
  /// when the node's state changes, unless quiet).
  void set(const peer_address& peer, const std::string& link, bool up);
  bool up(const std::string& node) const;
  /// Waits until every link to every node of `peers` is up; false after `deadline`,
  /// with `missing` naming those that are not.
  bool wait_all(const std::vector<peer_address>& peers,
                std::chrono::steady_clock::time_point deadline,
                std::vector<peer_address>& missing) const;
  /// Times `peer` went down since it first came up.
  uint64_t downs(const std::string& node) const;
  void set_quiet(bool quiet) { quiet_ = quiet; }

private:
  bool node_up(const std::string& node) const; // mutex_ held

  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::map<std::string, std::map<std::string, bool>> links_; ///< node -> link kind -> up
  std::map<std::string, uint64_t> downs_;
  bool quiet_ = false;
};

/// The node directories (node_directory.hpp) a node's links use: its own,
/// which a dialing link introduces in its hello, and those its peers
/// introduced. Shared by a node's links and its directory.
///
/// With TLS on the control plane a pair of nodes keeps one connection,
/// opened by the node whose name sorts first (`dials`): CAF 0.17.6's
/// OpenSSL module loses the requests sent over the second of two opposite
/// connections between a pair of nodes, while messages both ways over one
/// connection work. The other node's links to the dialer take the
/// dialer's directory from here (over the dialer's connection) instead of
/// connecting.
class peer_directories {
public:
  void set_own(caf::actor directory);
  caf::actor own() const;
  /// `node`'s directory, as a hello over its connection carried it.
  void introduce(const std::string& node, caf::actor directory);
  /// Forgets `node`'s directory if it is still `gone` (it went down).
  void forget(const std::string& node, const caf::actor_addr& gone);
  /// The directory `node` introduced; null until it has.
  caf::actor of(const std::string& node) const;

private:
  mutable std::mutex mutex_;
  caf::actor own_;
  std::map<std::string, caf::actor> introduced_;
};

/// Whether node `self` opens the control connection to node `peer`:
/// always without TLS; with TLS only when `self` sorts first.
bool dials(const std::string& self, const std::string& peer, bool tls);

struct peer_link_options {
  peer_address peer;
  /// The actor kind asked of the peer's directory ("decode"); "directory"
  /// asks for the directory itself (a link that only keeps the connection
  /// and the introduction, for a peer that needs this node but not the
  /// other way round).
  std::string kind;
  std::string from_node; ///< this node's name (the directory hands out per-requester actors)
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds heartbeat_timeout{1500};
  /// Longest a forwarded request may wait for its answer (the sender's own
  /// deadline normally ends it first).
  std::chrono::milliseconds request_timeout{600'000};
  /// Connect over TLS (CAF's OpenSSL module; the actor system must have
  /// caf::openssl::manager loaded with this node's certificate). A link
  /// to a peer that sorts first then never connects: it waits for the
  /// peer's directory in `directories`.
  bool tls = false;
  /// This node's directories (required with TLS; else optional).
  std::shared_ptr<peer_directories> directories;
};

/// True when `err` is a link's answer to a request it never forwarded
/// (its peer was not connected): the request may be sent elsewhere.
bool refused_unsent(const error& err);

/// An actor that sends every message it gets to each of `targets` (plain
/// sends; a request gets no answer). The router's cancels to several
/// decode nodes.
caf::actor spawn_fanout(caf::actor_system& sys, std::vector<caf::actor> targets);

/// Spawns the link; `health` may be null. The actor system must have the
/// middleman loaded (init_network).
caf::actor spawn_peer_link(caf::actor_system& sys, peer_link_options options,
                           std::shared_ptr<peer_health> health);

} // namespace mosaic::actors
