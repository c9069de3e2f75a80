// `mosaic serve [--topology FILE]`: every actor of one node in this
// process (router, encoder, kv_loader, linker, prefill, decode), running
// until SIGINT or SIGTERM. Without --topology it runs the embedded
// default, the same as deploy/topologies/single-cpu.yaml (builtin:small on
// the CPU). The OpenAI-compatible HTTP front door (server/) listens on the
// frontend actor's http_port (--http-port), the ZeroMQ API on its
// zmq_port (--zmq-port).

#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include <pthread.h>

#include "actors/local_cluster.hpp"
#include "cli/commands.hpp"
#include "server/serve_front_door.hpp"
#include "topology/loader.hpp"

namespace mosaic::cli {

namespace {

/// deploy/topologies/single-cpu.yaml without the comments.
constexpr const char* default_topology = R"(model: builtin:small
defaults:
  policy: "mpic:32"
  deadline_ms: 30000
  max_tokens: 256
nodes:
  - name: local
    host: 127.0.0.1
    control_port: 7400
    data_port: 7500
    devices: [cpu]
    actors:
      - { kind: frontend, http_port: 8000, zmq_port: 8001 }
      - { kind: router }
      - { kind: encoder, device: cpu, cache_mb: 512 }
      - { kind: kv_loader, library: ~/.cache/mosaic/library, ram_gb: 2, disk_gb: 20, io: pread }
      - { kind: linker }
      - { kind: prefill, device: cpu, max_tokens: 4096 }
      - { kind: decode, device: cpu, max_batch: 16, pool_gb: 1 }
)";

struct serve_options {
  int drain_s = -1; ///< -1: the topology's frontend drain_s
  std::string topology_file;
  std::string node;
  std::string model;
  std::string library;
  int http_port = -1; ///< -1: the topology's
  int zmq_port = -1;  ///< -1: the topology's
  std::string api_keys;
  bool dry_run = false;
};

int run_serve(const serve_options& o) {
  auto topo = o.topology_file.empty() ? parse_topology(default_topology, "<default: single-cpu>")
                                      : load_topology(o.topology_file);
  if (!topo) {
    std::fprintf(stderr, "mosaic serve: %s\n", topo.err().to_string().c_str());
    return 2;
  }
  auto opts = actors::node_options_from_topology(*topo, o.node);
  if (!opts) {
    std::fprintf(stderr, "mosaic serve: %s\n", opts.err().to_string().c_str());
    return 2;
  }
  if (!o.model.empty())
    opts->model = o.model;
  if (!o.library.empty())
    opts->library_dir = o.library;

  // SIGINT/SIGTERM are taken by sigwait below: block them before any
  // thread starts so that every CAF and loader thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::printf("mosaic serve: %s, node %s, model %s\n", topo->source.c_str(),
              o.node.empty() ? topo->nodes.front().name.c_str() : o.node.c_str(),
              opts->model.c_str());
  std::fflush(stdout);
  auto cluster = actors::local_cluster::start(std::move(*opts));
  if (!cluster) {
    std::fprintf(stderr, "mosaic serve: %s\n", cluster.err().to_string().c_str());
    return 1;
  }
  for (const auto& line : (*cluster)->actors())
    std::printf("  started %s\n", line.c_str());
  server::front_door_flags door_flags;
  if (o.http_port >= 0)
    door_flags.http_port = o.http_port;
  if (o.zmq_port >= 0)
    door_flags.zmq_port = o.zmq_port;
  door_flags.api_keys_file = o.api_keys;
  door_flags.model = o.model;
  if (o.drain_s >= 0)
    door_flags.drain_s = o.drain_s;
  auto door = server::start_front_door(**cluster, *topo, o.node, door_flags);
  if (!door) {
    std::fprintf(stderr, "mosaic serve: front door: %s\n", door.err().to_string().c_str());
    return 1;
  }
  std::printf("HTTP front door: http://%s:%d/v1 (%s)\n", (*door)->host().c_str(), (*door)->port(),
              (*door)->authenticated() ? "API keys required" : "no API keys: tenant 'default'");
  std::printf("ZeroMQ API: %s\n", (*door)->zmq_endpoint().c_str());
  if (o.dry_run) {
    std::printf("dry run: shutting down\n");
    return 0;
  }
  std::printf("running; stop with Ctrl-C or SIGTERM\n");
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::printf("mosaic serve: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  std::fflush(stdout);
  // Drain: new requests get 503 and /health 503, running ones finish
  // within the grace; those still running then end with an error event.
  const int cut = (*door)->drain();
  std::printf("mosaic serve: drained (%d request%s cut after %lld s)\n", cut, cut == 1 ? "" : "s",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::seconds>((*door)->drain_grace()).count()));
  std::fflush(stdout);
  door->reset(); // stop taking requests before the actors go
  cluster->reset();
  const auto s = std::string{"stopped"};
  std::printf("%s\n", s.c_str());
  return 0;
}

} // namespace

void add_serve_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<serve_options>();
  auto* serve = app.add_subcommand(
      "serve", "Run every actor of one node in this process until SIGINT/SIGTERM");
  serve->add_option("--topology", o->topology_file,
                    "topology YAML (default: the single-cpu topology, builtin:small on the CPU)");
  serve->add_option("--node", o->node, "which node of the topology to run (default: the first)");
  serve->add_option("--model", o->model, "override the topology's model");
  serve->add_option("--library", o->library, "override the kv_loader's library directory");
  serve
      ->add_option("--http-port", o->http_port,
                   "HTTP port of the front door (default: the topology's, 8000; 0: any free)")
      ->check(CLI::Range(0, 65535));
  serve
      ->add_option("--zmq-port", o->zmq_port,
                   "ZeroMQ API port of the front door (default: the topology's, 8001; 0: any free)")
      ->check(CLI::Range(0, 65535));
  serve->add_option("--api-keys", o->api_keys,
                    "API key file, one `key tenant` per line (default: the topology's api_keys)");
  serve
      ->add_option("--drain-seconds", o->drain_s,
                   "on SIGTERM, how long running requests may finish (default: the topology "
                   "frontend's drain_s, 30)")
      ->check(CLI::Range(0, 3600));
  serve->add_flag("--dry-run", o->dry_run, "start every actor, print them, then shut down");
  serve->callback([o, exit_code] { *exit_code = run_serve(*o); });
}

} // namespace mosaic::cli
