#include "cli/sim_options.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "sim/cluster_target.hpp"

namespace mosaic::cli {

result<target_kind> sim_options::target_scheme(const std::string& target) {
  if (target.empty())
    return target_kind::in_process;
  const auto sep = target.find("://");
  const std::string scheme = sep == std::string::npos ? std::string{} : target.substr(0, sep);
  if (scheme == "http")
    return target_kind::http;
  if (scheme == "zmq")
    return target_kind::zmq;
  if (scheme == "https")
    return make_error(errc::invalid_argument, "--target ", target,
                      ": https is not supported; give the front door's plain http://HOST:PORT");
  return make_error(errc::invalid_argument, "--target '", target,
                    "': unknown scheme; use http://HOST:PORT (a `mosaic serve` front door or "
                    "any OpenAI-compatible server) or zmq://HOST:PORT (Mosaic's ZeroMQ API), "
                    "or omit --target for the in-process cluster");
}

result<sim::workload_spec> sim_options::load_spec() const {
  auto spec = sim::load_workload_spec(workload, sim::builtin_workload_dir());
  if (!spec)
    return spec;
  if (zipf >= 0)
    spec->zipf_exponent = zipf;
  return spec;
}

result<sim::workload> sim_options::load_workload() const {
  auto spec = load_spec();
  if (!spec)
    return std::move(spec).err();
  return generate(*spec, rate);
}

result<sim::arrival_spec> sim_options::arrivals(const sim::workload_spec& spec,
                                                double rate_override) const {
  sim::arrival_spec a = spec.arrivals;
  if (rate_override > 0) {
    a.rate = rate_override;
    a.ramp.clear();
  } else if (rate > 0) {
    a.rate = rate;
    a.ramp.clear();
  }
  if (duration_s > 0)
    a.duration_s = duration_s;
  if (!process.empty()) {
    auto p = sim::parse_arrival_process(process);
    if (!p)
      return std::move(p).err();
    a.process = *p;
  }
  if (burstiness > 0)
    a.burstiness = burstiness;
  if (max_requests > 0)
    a.max_requests = max_requests;
  if (!ramp.empty()) {
    a.ramp.clear();
    for (const auto& point : ramp) {
      const auto colon = point.find(':');
      char* end = nullptr;
      sim::rate_point rp;
      if (colon != std::string::npos) {
        rp.at_s = std::strtod(point.c_str(), &end);
        rp.rate = std::strtod(point.c_str() + colon + 1, &end);
      }
      if (colon == std::string::npos || end == nullptr || *end != '\0')
        return make_error(errc::invalid_argument, "--ramp: '", point,
                          "' is not AT:RATE (seconds:requests per second), e.g. 0:0.1,60:1");
      a.ramp.push_back(rp);
    }
  }
  MOSAIC_TRY(a.validate());
  return a;
}

result<sim::workload> sim_options::generate(const sim::workload_spec& spec,
                                            double rate_override) const {
  auto a = arrivals(spec, rate_override);
  if (!a)
    return std::move(a).err();
  return sim::generate_workload(spec, *a, seed, {max_turns, max_images, max_output_tokens});
}

void add_workload_options(CLI::App& cmd, sim_options& o) {
  cmd.add_option("--workload", o.workload, "mmdu, sparkles, gqa or a workload YAML file")
      ->capture_default_str();
  cmd.add_option("--seed", o.seed, "workload seed")->capture_default_str();
  cmd.add_option("--rate", o.rate, "offered requests/s (default: the workload's)");
  cmd.add_option("--duration", o.duration_s, "seconds of arrivals (default: the workload's)");
  cmd.add_option("--process", o.process, "arrival process: poisson or gamma");
  cmd.add_option("--burstiness", o.burstiness, "gamma shape (1 = Poisson, < 1 burstier)");
  cmd.add_option("--max-requests", o.max_requests, "cap on the number of requests");
  cmd.add_option("--ramp", o.ramp, "rate ramp as AT:RATE points, e.g. 0:0.1,60:1")->delimiter(',');
  cmd.add_option("--zipf", o.zipf, "image popularity exponent (default: the workload's)");
  cmd.add_option("--max-turns", o.max_turns, "cap turns per dialogue");
  cmd.add_option("--max-images", o.max_images, "cap images per request");
  cmd.add_option("--max-output-tokens", o.max_output_tokens, "cap output tokens per request");
}

void add_live_options(CLI::App& cmd, sim_options& o) {
  cmd.add_option("--model", o.model, "builtin:tiny, builtin:small or an HF LLaVA directory")
      ->capture_default_str();
  cmd.add_option("--device", o.device, "cpu or cuda:N")->capture_default_str();
  cmd.add_option("--threads", o.threads, "CPU backend threads (0 = every core)");
  cmd.add_option("--max-batch", o.max_batch, "decode batch size")->capture_default_str();
  cmd.add_option("--pool-mb", o.pool_mb, "KV pool of the in-process node (MiB)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--library", o.library,
                 "dynamic library directory; the workload's images are put there first "
                 "(default: OUT/library)");
  cmd.add_flag("--inline-images", o.inline_images,
               "send images as PNG bytes instead of library references (no library)");
  cmd.add_option("--target", o.targets,
                 "drive a running server instead of an in-process cluster: http://HOST:PORT "
                 "(`mosaic serve`'s HTTP front door, or any OpenAI-compatible server such as "
                 "vLLM or SGLang) or zmq://HOST:PORT (Mosaic's ZeroMQ API); `compare` takes "
                 "several")
      ->allow_extra_args(false);
  cmd.add_option("--api-key", o.api_key, "API key of the --target servers (if they have keys)");
  cmd.add_option("--images", o.images,
                 "how http targets get images: upload (Mosaic's library references), data-url "
                 "(the PNG in every request, as a peer needs), auto (data-url when any target "
                 "is not Mosaic)")
      ->check(CLI::IsMember({"auto", "upload", "data-url"}))
      ->capture_default_str();
  cmd.add_flag("--no-cache-salt", o.no_cache_salt,
               "send no cache_salt (by default each run on an http target has its own, so it "
               "starts from a cold prefix cache)");
  cmd.add_option("--connect-timeout", o.connect_timeout_s,
                 "seconds to wait for the --target to answer")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 600.0));
  cmd.add_option("--slo-ttft", o.objectives.ttft_s, "goodput SLO on TTFT (seconds)");
  cmd.add_option("--slo-tpot", o.objectives.tpot_s, "goodput SLO on TPOT (seconds)");
  cmd.add_option("--slo-e2e", o.objectives.e2e_s, "goodput SLO on end-to-end latency (seconds)");
  cmd.add_option("--out", o.out, "report directory")->capture_default_str();
  cmd.add_option("--drain-timeout", o.drain_timeout_s,
                 "seconds to wait for requests after the last arrival")
      ->capture_default_str();
  cmd.add_flag("--verbose", o.verbose, "one line per finished request");
  cmd.add_flag("--no-progress", o.no_progress, "no progress bar on stderr");
}

result<std::unique_ptr<actors::local_cluster>> start_live_cluster(const sim_options& o) {
  actors::node_options n;
  n.model = o.model;
  n.device = o.device;
  n.threads = o.threads;
  n.library_dir = o.library;
  n.default_deadline_ms = int(o.drain_timeout_s * 1000);
  n.decode_max_batch = o.max_batch;
  n.schedule = o.schedule;
  n.pool_bytes = static_cast<uint64_t>(o.pool_mb * 1024.0 * 1024.0);
  return actors::local_cluster::start(n);
}

status prepare_live_library(sim_options& o, const sim::workload& w) {
  if (o.library.empty())
    o.library = (std::filesystem::path{o.out} / "library").string();
  auto cluster = start_live_cluster(o);
  if (!cluster)
    return std::move(cluster).err();
  std::fprintf(stderr, "preparing the dynamic library %s (%zu images)...\n", o.library.c_str(),
               w.used_images().size());
  auto n = sim::prebuild_dynamic_library(**cluster, w);
  if (!n)
    return std::move(n).err();
  std::fprintf(stderr, "  %d compiled, %zu already there\n", *n,
               w.used_images().size() - size_t(*n));
  return {};
}

} // namespace mosaic::cli
