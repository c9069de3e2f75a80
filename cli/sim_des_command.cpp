// `mosaic sim des --topology T --workload W --profile P`: replays a
// workload on the discrete-event model of a topology (sim/des.hpp).

#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/sim_options.hpp"
#include "sim/compare.hpp"
#include "sim/des.hpp"
#include "topology/loader.hpp"

namespace mosaic::cli {

namespace {

struct des_cli_options {
  sim_options sim;
  std::string topology;
  std::string profile;
  std::vector<std::string> policies{"mpic:32"};
  std::vector<double> rates;
};

int fail(const error& e) {
  std::fprintf(stderr, "error: %s\n", e.to_string().c_str());
  return 1;
}

int run_des(const des_cli_options& o) {
  auto topo = load_topology(o.topology);
  if (!topo)
    return fail(topo.err());
  auto profile = sim::load_profile(o.profile);
  if (!profile)
    return fail(profile.err());
  auto spec = o.sim.load_spec();
  if (!spec)
    return fail(spec.err());
  std::vector<double> rates = o.rates.empty() ? std::vector<double>{o.sim.rate} : o.rates;
  std::vector<sim::run_result> runs;
  for (double rate : rates) {
    auto w = o.sim.generate(*spec, rate);
    if (!w)
      return fail(w.err());
    for (const auto& p : o.policies) {
      auto policy = parse_policy(p);
      if (!policy)
        return fail(policy.err());
      sim::des_options d{*policy, o.sim.objectives, rate > 0 ? rate : w->spec.arrivals.rate};
      if (o.sim.rate > 0 && rate <= 0)
        d.rate = o.sim.rate;
      auto r = sim::simulate(*topo, *profile, *w, d);
      if (!r)
        return fail(r.err());
      std::printf("DES %s: %d nodes, %d prefill and %d decode workers; %zu requests, %lld "
                  "events, simulated in %.2f s\n",
                  topo->source.c_str(), r->shape.nodes, r->shape.prefill_workers,
                  r->shape.decode_workers, w->requests.size(), (long long)r->events,
                  r->wall_seconds);
      sim::print_run(r->run);
      runs.push_back(std::move(r->run));
    }
  }
  sim::report_header h{"des",
                       o.sim.workload,
                       o.sim.seed,
                       "DES of " + o.topology,
                       profile->model + " profile (" + profile->device + ")",
                       o.sim.objectives};
  if (auto st = sim::write_report(o.sim.out, h, runs); !st)
    return fail(st.err());
  std::printf("report: %s/{summary.json,requests.csv,plot.svg}\n", o.sim.out.c_str());
  return 0;
}

} // namespace

void add_sim_des_command(CLI::App& sim, int* exit_code) {
  auto o = std::make_shared<des_cli_options>();
  auto* des = sim.add_subcommand(
      "des", "Discrete-event simulation of a topology with costs from `mosaic bench --profile`");
  add_workload_options(*des, o->sim);
  des->add_option("--topology", o->topology, "topology YAML (any number of nodes and devices)")
      ->required();
  des->add_option("--profile", o->profile, "cost profile JSON from `mosaic bench --profile`")
      ->required();
  des->add_option("--policies", o->policies, "reuse policies to simulate, e.g. prefix,mpic:32")
      ->delimiter(',')
      ->capture_default_str();
  des->add_option("--rates", o->rates, "several offered rates (one run each)")->delimiter(',');
  des->add_option("--slo-ttft", o->sim.objectives.ttft_s, "goodput SLO on TTFT (seconds)");
  des->add_option("--slo-tpot", o->sim.objectives.tpot_s, "goodput SLO on TPOT (seconds)");
  des->add_option("--slo-e2e", o->sim.objectives.e2e_s, "goodput SLO on E2E (seconds)");
  des->add_option("--out", o->sim.out, "report directory")->capture_default_str();
  des->callback([o, exit_code] { *exit_code = run_des(*o); });
}

} // namespace mosaic::cli
