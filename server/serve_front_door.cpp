#include "server/serve_front_door.hpp"

namespace mosaic::server {

result<std::unique_ptr<front_door_handle>> start_front_door(actors::local_cluster& cluster,
                                                            const topology& topo,
                                                            std::string_view node,
                                                            const front_door_flags& flags) {
  const node_spec* n =
      node.empty() ? (topo.nodes.empty() ? nullptr : &topo.nodes.front()) : topo.find_node(node);
  if (n == nullptr)
    return make_error(errc::not_found, "the topology has no node '", node, "'");
  http_options o;
  o.host = "127.0.0.1";
  std::chrono::milliseconds drain = std::chrono::seconds{frontend_spec{}.drain_s};
  zmq_options z;
  for (const auto& a : n->actors)
    if (const auto* fe = a.get<frontend_spec>()) {
      o.port = fe->http_port;
      o.host = fe->bind.empty() ? (n->host.empty() ? o.host : n->host) : fe->bind;
      o.limits.max_body_bytes = fe->max_body_bytes();
      o.max_concurrent = fe->max_concurrent;
      o.connections.max_connections = fe->max_connections;
      o.connections.max_connections_per_client = fe->max_connections_per_client;
      o.connections.header_timeout = std::chrono::seconds{fe->header_timeout_s};
      drain = std::chrono::seconds{fe->drain_s};
      z.port = fe->zmq_port;
    }
  z.host = o.host;
  if (topo.defaults.deadline_ms > 0)
    o.request_timeout = std::chrono::milliseconds{topo.defaults.deadline_ms};
  if (flags.http_port)
    o.port = *flags.http_port;
  if (flags.zmq_port)
    z.port = *flags.zmq_port;
  if (flags.drain_s)
    drain = std::chrono::seconds{*flags.drain_s};
  const std::string keys_file = flags.api_keys_file.empty() ? topo.api_keys : flags.api_keys_file;
  if (!keys_file.empty()) {
    auto keys = api_keys::load(keys_file);
    if (!keys)
      return make_error(keys.err().code, "--api-keys: ", keys.err().message);
    if (!keys->enabled())
      return make_error(errc::invalid_argument, "--api-keys: ", keys_file,
                        " lists no keys; add `key tenant` lines or leave the option out");
    o.keys = std::move(*keys);
  }
  const bool authenticated = o.keys.enabled();
  auto service =
      std::make_unique<cluster_service>(cluster, flags.model.empty() ? topo.model : flags.model);
  auto http = http_server::start(std::move(o), *service);
  if (!http)
    return std::move(http).err();
  auto zmq = zmq_server::start(std::move(z), **http);
  if (!zmq)
    return std::move(zmq).err();
  auto handle =
      std::make_unique<front_door_handle>(std::move(service), std::move(*http), std::move(*zmq));
  handle->set_authenticated(authenticated);
  handle->set_drain_grace(drain);
  return handle;
}

} // namespace mosaic::server
