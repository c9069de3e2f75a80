#pragma once

// Options shared by the `mosaic sim` subcommands (cli/sim_command.cpp,
// cli/sim_des_command.cpp).

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "actors/local_cluster.hpp"
#include "sim/metrics.hpp"
#include "sim/workload.hpp"

namespace mosaic::cli {

/// What --target names, by its URL scheme.
enum class target_kind { in_process, http, zmq };

struct sim_options {
  // -- workload ---------------------------------------------------------------
  std::string workload = "mmdu";
  uint64_t seed = 1;
  double rate = 0.0;       ///< requests/s; 0: the workload's default
  double duration_s = 0.0; ///< 0: the workload's default
  std::string process;     ///< poisson|gamma; empty: the workload's
  double burstiness = 0.0; ///< 0: the workload's
  int64_t max_requests = 0;
  std::vector<std::string> ramp; ///< "AT:RATE" points
  int max_turns = 0, max_images = 0, max_output_tokens = 0;
  double zipf = -1.0; ///< < 0: the workload's

  // -- live -------------------------------------------------------------------
  std::string model = "builtin:small";
  std::string device = "cpu";
  int threads = 0;
  int max_batch = 16;
  std::string schedule = "auto"; ///< the live node's stage scheduling (node_options::schedule)
  double pool_mb = 1024.0;       ///< the live node's KV pool (MiB)
  std::string library;           ///< dynamic library directory (prebuilt or filled here)
  bool inline_images = false;
  /// Servers to drive: http://HOST:PORT (a Mosaic front door or any
  /// OpenAI-compatible server) or zmq://HOST:PORT; none: in-process.
  std::vector<std::string> targets;
  std::string api_key;         ///< Bearer key for remote servers with keys
  std::string images = "auto"; ///< http targets: upload | data-url | auto
  bool no_cache_salt = false;  ///< http targets: send no cache_salt
  std::string baseline;        ///< compare: the label ratios are to (empty: the default)
  double connect_timeout_s = 3.0;
  bool no_progress = false; ///< no progress bar
  std::string des_profile;  ///< compare: also replay in the DES with this profile
  std::string des_topology; ///< its topology (empty: the in-process cluster's shape)
  std::string replay;       ///< compare: a recorded requests.csv instead of live runs
  std::string policy = "mpic:32";
  std::string policies = "prefix,full_reuse,mpic:32,cacheblend:0.15,vlcache:0.05";
  std::vector<double> rates;
  double drain_timeout_s = 300.0;
  bool verbose = false;
  sim::slo objectives;
  std::string out = "sim-out";

  /// The kind of target `target` names: empty → in-process; http:// →
  /// a server over HTTP; zmq:// → Mosaic's ZeroMQ API. Any other scheme
  /// is invalid_argument, listing the known ones.
  static result<target_kind> target_scheme(const std::string& target);
  /// The workload spec named by `workload`.
  result<sim::workload_spec> load_spec() const;
  /// The arrival process: the spec's, with the command line's overrides.
  result<sim::arrival_spec> arrivals(const sim::workload_spec& spec, double rate_override) const;
  /// Generates the workload at `rate_override` (0: --rate or the spec's).
  result<sim::workload> generate(const sim::workload_spec& spec, double rate_override) const;
  /// load_spec() then generate() at --rate (the spec is the workload's `spec`).
  result<sim::workload> load_workload() const;
};

/// --workload, --seed, --rate, --duration, --process, --burstiness,
/// --max-requests, --ramp, --zipf, --max-turns, --max-images, --max-output-tokens.
void add_workload_options(CLI::App& cmd, sim_options& o);
/// --model, --device, --threads, --library, --inline-images, --target,
/// --api-key, --connect-timeout, --slo-*, --out, --drain-timeout,
/// --verbose, --no-progress.
void add_live_options(CLI::App& cmd, sim_options& o);
/// Starts a fresh single-node cluster of --model/--device/--threads on
/// --library.
result<std::unique_ptr<actors::local_cluster>> start_live_cluster(const sim_options& o);
/// Prepares the library: OUT/library unless --library was given, then puts
/// every image of `w` into it (skipping those present).
status prepare_live_library(sim_options& o, const sim::workload& w);
/// `mosaic sim des`.
void add_sim_des_command(CLI::App& sim, int* exit_code);
/// `mosaic sim fastcache`.
void add_sim_fastcache_command(CLI::App& sim, int* exit_code);

} // namespace mosaic::cli
