#pragma once

// The HTTP front door of `mosaic serve`: settings from the topology's
// frontend actor and api_keys, overridden by command-line flags, served
// over an in-process local_cluster.
//
//   auto door = start_front_door(*cluster, topo, node, flags);
//   std::printf("listening on %s:%d\n", (*door)->host().c_str(), (*door)->port());

#include <memory>
#include <optional>
#include <string>

#include "actors/local_cluster.hpp"
#include "engine/error.hpp"
#include "server/cluster_service.hpp"
#include "server/http_server.hpp"
#include "topology/topology.hpp"

namespace mosaic::server {

/// Command-line overrides (unset: the topology's value).
struct front_door_flags {
  std::optional<int> http_port;
  std::string api_keys_file;
  std::string model; ///< the id /v1/models lists
};

/// The running front door: the adapter and the HTTP server over it.
class front_door_handle {
public:
  front_door_handle(std::unique_ptr<cluster_service> service, std::unique_ptr<http_server> http)
    : service_(std::move(service)), http_(std::move(http)) {}
  ~front_door_handle() { http_.reset(); } // stop serving before the adapter goes
  int port() const { return http_->port(); }
  const std::string& host() const { return http_->host(); }
  bool authenticated() const { return authenticated_; }
  void set_authenticated(bool on) { authenticated_ = on; }

private:
  std::unique_ptr<cluster_service> service_;
  std::unique_ptr<http_server> http_;
  bool authenticated_ = false;
};

/// Starts the HTTP front door of `node` (empty: the first) of `topo` over
/// `cluster`; `cluster` must outlive the handle. Errors name the flag or
/// topology field to fix (unreadable key file, port taken).
result<std::unique_ptr<front_door_handle>> start_front_door(actors::local_cluster& cluster,
                                                            const topology& topo,
                                                            std::string_view node,
                                                            const front_door_flags& flags);

} // namespace mosaic::server
