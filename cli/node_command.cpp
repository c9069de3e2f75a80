// `mosaic node --topology FILE --node NAME`: the actors that the topology
// places on node NAME, in this process, as one node of a multi-node
// cluster (local_cluster::join): published through CAF's middleman on the
// node's control_port, bulk (KV, embeddings) received on its data_port,
// linked to the peers that run the other roles. Peers may start in any
// order; the node waits for them (--connect-timeout) and exits with a
// message naming the missing ones. A node with a frontend serves the
// OpenAI HTTP API as `mosaic serve` does. Runs until SIGINT or SIGTERM.

#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include <pthread.h>

#include "actors/local_cluster.hpp"
#include "actors/peer_link.hpp"
#include "cli/commands.hpp"
#include "server/serve_front_door.hpp"
#include "topology/loader.hpp"

namespace mosaic::cli {

namespace {

struct node_command_options {
  std::string topology_file;
  std::string node;
  std::string bind;
  int connect_timeout_s = 60;
  int http_port = -1;
  int drain_s = -1; ///< -1: the topology frontend's drain_s
  std::string api_keys;
  std::string key_file;
};

int run_node(const node_command_options& o) {
  auto topo = load_topology(o.topology_file);
  if (!topo) {
    std::fprintf(stderr, "mosaic node: %s\n", topo.err().to_string().c_str());
    return 2;
  }
  const auto* spec = topo->find_node(o.node);
  if (spec == nullptr) {
    std::string names;
    for (const auto& n : topo->nodes)
      names += (names.empty() ? "" : ", ") + n.name;
    std::fprintf(stderr, "mosaic node: %s has no node '%s'; its nodes: %s\n",
                 o.topology_file.c_str(), o.node.c_str(), names.c_str());
    return 2;
  }
  // SIGINT/SIGTERM are taken by sigwait: block them before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::printf("mosaic node: %s, node %s (%s, control_port %d, data_port %d), model %s\n",
              topo->source.c_str(), spec->name.c_str(), spec->host.c_str(), spec->control_port,
              spec->data_port, topo->model.c_str());
  std::fflush(stdout);
  actors::join_options jo;
  jo.bind = o.bind;
  jo.key_file = o.key_file;
  jo.connect_timeout = std::chrono::seconds{o.connect_timeout_s};
  auto cluster = actors::local_cluster::join(*topo, o.node, jo);
  if (!cluster) {
    std::fprintf(stderr, "mosaic node: %s\n", cluster.err().to_string().c_str());
    return 1;
  }
  for (const auto& line : (*cluster)->actors())
    std::printf("  started %s\n", line.c_str());
  for (const auto& p : (*cluster)->peers())
    std::printf("  linked to %s\n", p.describe().c_str());
  std::unique_ptr<server::front_door_handle> door;
  if (spec->count(actor_kind::frontend) != 0) {
    server::front_door_flags flags;
    if (o.http_port >= 0)
      flags.http_port = o.http_port;
    flags.api_keys_file = o.api_keys;
    if (o.drain_s >= 0)
      flags.drain_s = o.drain_s;
    auto d = server::start_front_door(**cluster, *topo, o.node, flags);
    if (!d) {
      std::fprintf(stderr, "mosaic node: front door: %s\n", d.err().to_string().c_str());
      return 1;
    }
    door = std::move(*d);
    std::printf("HTTP front door: http://%s:%d/v1\n", door->host().c_str(), door->port());
  }
  std::printf("node %s ready; stop with Ctrl-C or SIGTERM\n", spec->name.c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::printf("mosaic node: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  std::fflush(stdout);
  if (door) { // drain: running requests finish within the grace (serve_command.cpp)
    const int cut = door->drain();
    std::printf("mosaic node: drained (%d request%s cut)\n", cut, cut == 1 ? "" : "s");
    std::fflush(stdout);
  } else { // a prefill or decode node: the work it holds finishes first
    const int grace = o.drain_s >= 0 ? o.drain_s : 30;
    const bool idle = (*cluster)->wait_idle(std::chrono::seconds{grace});
    std::printf("mosaic node: %s\n", idle ? "drained (its requests finished)"
                                           : "drain grace over with requests still running");
    std::fflush(stdout);
  }
  door.reset();
  cluster->reset();
  std::printf("stopped\n");
  return 0;
}

} // namespace

void add_node_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<node_command_options>();
  auto* cmd = app.add_subcommand(
      "node", "Run the actors a topology places on one node, as part of a multi-node cluster");
  cmd->add_option("--topology", o->topology_file, "topology YAML shared by every node")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--node", o->node, "which node of the topology this process is")->required();
  cmd->add_option("--bind", o->bind,
                  "address to listen on (default: the node's host if it is an IP address, else "
                  "0.0.0.0)");
  cmd->add_option("--connect-timeout", o->connect_timeout_s,
                  "seconds to wait for every peer node at startup")
      ->check(CLI::Range(1, 3600));
  cmd->add_option("--http-port", o->http_port, "HTTP port of the front door (0: any free)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--api-keys", o->api_keys, "API key file (default: the topology's api_keys)");
  cmd->add_option("--key-file", o->key_file,
                  "this node's CURVE key file from `mosaic keys` (default: the topology node's "
                  "key_file); needed when the topology gives nodes public keys");
  cmd->add_option("--drain-seconds", o->drain_s,
                  "on SIGTERM, how long running requests may finish (default: the topology "
                  "frontend's drain_s on a node with a frontend, else 30)")
      ->check(CLI::Range(0, 3600));
  cmd->callback([o, exit_code] { *exit_code = run_node(*o); });
}

} // namespace mosaic::cli
