// Cluster-wide checks that need every node parsed first.

#include <algorithm>
#include <array>
#include <cctype>
#include <tuple>

#include <arpa/inet.h>

#include "topology/parse_context.hpp"

namespace mosaic::topology_detail {

std::string normalised_host(std::string_view host) {
  std::string out{host};
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (out == "localhost")
    return "127.0.0.1";
  // Short and padded IPv4 forms name the same address as the dotted quad
  // (127.1 is 127.0.0.1, as inet_aton reads it).
  in_addr a{};
  if (out.find_first_not_of("0123456789.") == std::string::npos &&
      ::inet_aton(out.c_str(), &a) != 0)
    return ::inet_ntoa(a);
  return out;
}

void record_port(parse_context& ctx, const node_spec& node, std::string owner, int port,
                 spec_origin at) {
  if (node.host.empty())
    return; // the missing host is already reported
  ctx.ports.push_back({normalised_host(node.host), port, std::move(owner), at});
}

namespace {

void check_ports(parse_context& ctx) {
  auto& ports = ctx.ports;
  auto before = [](const port_use& a, const port_use& b) {
    return std::tie(a.host, a.port, a.at.line, a.at.column) <
           std::tie(b.host, b.port, b.at.line, b.at.column);
  };
  std::stable_sort(ports.begin(), ports.end(), before);
  // Each later user of a host:port is reported against its first user.
  size_t first = 0;
  for (size_t i = 1; i < ports.size(); ++i) {
    if (ports[i].host != ports[first].host || ports[i].port != ports[first].port) {
      first = i;
      continue;
    }
    const auto& owner = ports[first];
    const auto& dup = ports[i];
    ctx.sink.add(dup.at,
                 "port " + std::to_string(dup.port) + " (" + dup.owner + ") is already used by " +
                     owner.owner + " on host " + dup.host + " (line " +
                     std::to_string(owner.at.line) + ")",
                 "give every port on one host its own number");
  }
}

} // namespace

void check_cluster(const topology& topo, spec_origin nodes_at, parse_context& ctx) {
  check_ports(ctx);
  // Keys for every node or none: a node without one could not be admitted
  // by the others' data planes, nor check theirs.
  size_t keyed = 0;
  for (const auto& n : topo.nodes)
    keyed += n.public_key.empty() ? 0 : 1;
  if (keyed != 0 && keyed != topo.nodes.size())
    for (const auto& n : topo.nodes)
      if (n.public_key.empty())
        ctx.sink.add(n.origin,
                     "node '" + n.name + "' has no public_key, but other nodes of the cluster do",
                     "give every node a public_key (`mosaic keys --out FILE` makes a pair), or "
                     "none");
  // Control-plane TLS: a CA and a certificate + key for every node, or
  // nothing (a node without one could neither be admitted nor admit).
  size_t certified = 0;
  for (const auto& n : topo.nodes)
    certified += (n.tls_cert.empty() && n.tls_key.empty()) ? 0 : 1;
  if (certified != 0 || !topo.tls_ca.empty()) {
    if (topo.tls_ca.empty())
      ctx.sink.add(nodes_at, "nodes have tls_cert/tls_key but the topology has no tls_ca",
                   "add `tls_ca: ca.crt`, the CA certificate that signed every node's "
                   "(docs/deploy.md#trust-boundary-and-keys)");
    for (const auto& n : topo.nodes)
      if (n.tls_cert.empty() || n.tls_key.empty())
        ctx.sink.add(n.origin,
                     "node '" + n.name + "' lacks " +
                         (n.tls_cert.empty() && n.tls_key.empty()
                              ? std::string{"tls_cert and tls_key"}
                          : n.tls_cert.empty() ? std::string{"tls_cert"}
                                               : std::string{"tls_key"}) +
                         ", but the cluster's control plane uses TLS",
                     "give every node its certificate and key signed by tls_ca, or remove "
                     "tls_ca and every tls_cert/tls_key");
  }
  for (const auto& n : topo.nodes)
    if (!n.key_file.empty() && n.public_key.empty())
      ctx.sink.add(n.origin, "node '" + n.name + "' names a key_file but no public_key",
                   "add the public_key that `mosaic keys` printed for that file");
  if (!ctx.all_kinds_known)
    return;
  constexpr std::array required = {actor_kind::frontend, actor_kind::encoder, actor_kind::kv_loader,
                                   actor_kind::linker,   actor_kind::prefill, actor_kind::decode};
  for (auto kind : required) {
    if (topo.count(kind) > 0)
      continue;
    std::string name = to_string(kind);
    ctx.sink.add(nodes_at, "the cluster has no " + name + " actor; every request needs one",
                 "add `- { kind: " + name + " }` to the actors of a node");
  }
}

} // namespace mosaic::topology_detail
