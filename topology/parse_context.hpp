#pragma once

// Internal to mosaic_topology: state shared by the parsers of the top
// level, nodes and actors, and the cluster-wide checks that run after them.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "topology/yaml_fields.hpp"

namespace mosaic::topology_detail {

/// A port some node or actor listens on; ports must be unique per host.
struct port_use {
  std::string host; ///< normalised (lower case, localhost = 127.0.0.1)
  int port = 0;
  std::string owner; ///< "node 'p0' control_port", for messages
  spec_origin at;
};

struct parse_context {
  diagnostic_sink& sink;
  const topology_options& options;
  request_defaults defaults;
  std::vector<port_use> ports;
  /// False once an actor's kind could not be read; the required-role check
  /// is skipped then, since its complaints would only echo that error.
  bool all_kinds_known = true;
};

/// Hosts compare case-insensitively, and "localhost" is 127.0.0.1.
std::string normalised_host(std::string_view host);

/// Records a port of `node` for the duplicate-port check.
void record_port(parse_context& ctx, const node_spec& node, std::string owner, int port,
                 spec_origin at);

/// "cpu" or "cuda:N" (0 <= N < 1024), else nullopt.
std::optional<device_spec> parse_device(std::string_view text);

/// A path key: `~/` expands to $HOME; relative paths resolve against
/// `options.base_dir`. Reports empty paths.
std::optional<std::string> read_path(map_reader& m, std::string_view key, parse_context& ctx);

/// One entry of a node's `actors:` list. `devices_known` is false when the
/// node's `devices` list had errors (then device membership is not checked).
std::optional<actor_spec> parse_actor(const YAML::Node& item, size_t index, const node_spec& node,
                                      bool devices_known, parse_context& ctx);

/// The whole document (a map). Returns the topology as far as it could be
/// read; it is valid only when no diagnostic was recorded.
topology parse_root(const YAML::Node& root, parse_context& ctx);

/// Checks across nodes: ports unique per host, every required role present.
/// `nodes_at` is where cluster-wide problems are reported.
void check_cluster(const topology& topo, spec_origin nodes_at, parse_context& ctx);

} // namespace mosaic::topology_detail
