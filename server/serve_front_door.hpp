#pragma once

// The front door of `mosaic serve`: HTTP and the ZeroMQ API, with
// settings from the topology's frontend actor and api_keys, overridden by
// command-line flags, served over an in-process local_cluster.
//
//   auto door = start_front_door(*cluster, topo, node, flags);
//   std::printf("listening on %s:%d\n", (*door)->host().c_str(), (*door)->port());
//   std::printf("ZeroMQ API on %s\n", (*door)->zmq_endpoint().c_str());

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "actors/local_cluster.hpp"
#include "engine/error.hpp"
#include "server/cluster_service.hpp"
#include "server/http_server.hpp"
#include "server/zmq_server.hpp"
#include "topology/topology.hpp"

namespace mosaic::server {

/// Command-line overrides (unset: the topology's value).
struct front_door_flags {
  std::optional<int> http_port;
  std::optional<int> zmq_port;
  std::string api_keys_file;
  std::string model; ///< the id /v1/models lists
  std::optional<int> drain_s; ///< SIGTERM grace for running requests
};

/// The running front door: the adapter, the HTTP server over it and the
/// ZeroMQ API sharing the HTTP server's state.
class front_door_handle {
public:
  front_door_handle(std::unique_ptr<cluster_service> service, std::unique_ptr<http_server> http,
                    std::unique_ptr<zmq_server> zmq)
    : service_(std::move(service)), http_(std::move(http)), zmq_(std::move(zmq)) {}
  ~front_door_handle() {
    zmq_.reset();  // it uses the HTTP server's state
    http_.reset(); // stop serving before the adapter goes
  }
  int port() const { return http_->port(); }
  int zmq_port() const { return zmq_->port(); }
  std::string zmq_endpoint() const { return zmq_->endpoint(); }
  const std::string& host() const { return http_->host(); }
  bool authenticated() const { return authenticated_; }
  void set_authenticated(bool on) { authenticated_ = on; }
  std::chrono::milliseconds drain_grace() const { return drain_; }
  void set_drain_grace(std::chrono::milliseconds grace) { drain_ = grace; }
  /// SIGTERM: stops taking requests (HTTP and ZeroMQ share the front
  /// door's state) and lets running ones finish within the drain grace
  /// (http_server::drain); the requests it had to cut.
  int drain() { return http_->drain(drain_); }

private:
  std::unique_ptr<cluster_service> service_;
  std::unique_ptr<http_server> http_;
  std::unique_ptr<zmq_server> zmq_;
  bool authenticated_ = false;
  std::chrono::milliseconds drain_{30000};
};

/// Starts the HTTP front door of `node` (empty: the first) of `topo` over
/// `cluster`; `cluster` must outlive the handle. Errors name the flag or
/// topology field to fix (unreadable key file, port taken).
result<std::unique_ptr<front_door_handle>> start_front_door(actors::local_cluster& cluster,
                                                            const topology& topo,
                                                            std::string_view node,
                                                            const front_door_flags& flags);

} // namespace mosaic::server
