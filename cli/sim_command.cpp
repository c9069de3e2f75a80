// `mosaic sim run|compare|des|images`: the online traffic simulator
// (docs/sim.md). `run` and `compare` drive a real cluster in this process
// and measure every token; `des` replays a workload on a model of a
// topology with costs from `mosaic bench --profile`.

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/sim_live_backend.hpp"
#include "cli/sim_options.hpp"
#include "cli/sim_validate.hpp"
#include "sim/compare.hpp"
#include "sim/driver.hpp"
#include "sim/procedural_image.hpp"

namespace mosaic::cli {

namespace {

int fail(const error& e) {
  std::fprintf(stderr, "error: %s\n", e.to_string().c_str());
  return 1;
}

sim::report_header header(const sim_options& o, const std::string& mode,
                          const std::vector<std::unique_ptr<live_backend>>& backends) {
  std::string target, model;
  for (const auto& b : backends) {
    target += (target.empty() ? "" : "; ") + b->describe();
    if (model.find(b->model()) == std::string::npos)
      model += (model.empty() ? "" : "; ") + b->model();
  }
  return {mode, o.workload, o.seed, target, model, o.objectives};
}

int run_live(sim_options o) {
  auto spec = o.load_spec();
  if (!spec)
    return fail(spec.err());
  if (o.targets.size() > 1)
    return fail(make_error(errc::invalid_argument,
                           "sim run drives one --target; `mosaic sim compare` takes several"));
  auto backends = make_live_backends(o);
  if (!backends)
    return fail(backends.err());
  auto& backend = backends->front();
  // A peer has no reuse policies: its runs carry its own name.
  const auto label = backend->is_mosaic() ? o.policy : backend->server();
  std::vector<double> rates = o.rates.empty() ? std::vector<double>{o.rate} : o.rates;
  std::vector<sim::run_result> runs;
  for (double rate : rates) {
    auto w = o.generate(*spec, rate);
    if (!w)
      return fail(w.err());
    // Each rate's workload may use more images.
    if (auto st = backend->prepare(*w); !st)
      return fail(st.err());
    auto r = backend->run(*w, o.policy, label, rate);
    if (!r)
      return fail(r.err());
    sim::print_run(*r);
    runs.push_back(std::move(*r));
  }
  if (auto st = sim::write_report(o.out, header(o, "live", *backends), runs); !st)
    return fail(st.err());
  std::printf("report: %s/{summary.json,requests.csv,plot.svg}\n", o.out.c_str());
  return 0;
}

/// `sim compare --replay requests.csv --des-profile P`: the DES against a
/// recorded live run (same workload options), without running it again.
int run_replay(const sim_options& o) {
  if (o.des_profile.empty())
    return fail(make_error(errc::invalid_argument, "--replay needs --des-profile"));
  auto w = o.load_workload();
  if (!w)
    return fail(w.err());
  auto runs = sim::read_requests_csv(o.replay, o.objectives);
  if (!runs)
    return fail(runs.err());
  for (const auto& run : *runs)
    if (run.records.size() != w->requests.size())
      return fail(make_error(errc::invalid_argument, o.replay, ": ", run.summary.label, " has ",
                             std::to_string(run.records.size()), " requests, the workload ",
                             std::to_string(w->requests.size()),
                             "; give the workload options of the recorded run"));
  std::vector<sim::run_result> des_runs;
  auto v = validate_against_des(o, *w, *runs, des_runs);
  if (!v)
    return fail(v.err());
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  const auto csv = std::filesystem::path{o.out} / "des_requests.csv";
  if (auto st = sim::write_text(csv, sim::requests_csv(des_runs)); !st)
    return fail(st.err());
  std::printf("report: %s\n", csv.c_str());
  return 0;
}

int run_compare(sim_options o) {
  if (!o.replay.empty())
    return run_replay(o);
  auto policies = sim::parse_policy_list(o.policies);
  if (!policies)
    return fail(policies.err());
  auto w = o.load_workload();
  if (!w)
    return fail(w.err());
  if (w->requests.empty())
    return fail(make_error(errc::invalid_argument, "the workload has no request; raise --rate or "
                                                   "--duration"));
  auto backends = make_live_backends(o);
  if (!backends)
    return fail(backends.err());
  if (!o.des_profile.empty() && (backends->size() > 1 || !backends->front()->is_mosaic()))
    return fail(make_error(errc::invalid_argument, "--des-profile validates the DES against one "
                                                   "Mosaic cluster; drop it when comparing "
                                                   "servers"));
  for (auto& b : *backends)
    if (auto st = b->prepare(*w); !st)
      return fail(st.err());
  const auto plan = plan_runs(*backends, *policies);
  // Ratios are to `prefix` (a real prefix cache) among Mosaic's runs, or
  // to the first peer when one is driven: the server Mosaic is measured
  // against.
  std::string baseline = o.baseline;
  for (const auto& r : plan)
    if (baseline.empty() && !r.backend->is_mosaic())
      baseline = r.label;
  if (baseline.empty())
    baseline = "prefix";
  bool known = false;
  for (const auto& r : plan)
    known = known || r.label == baseline;
  if (!known)
    return fail(make_error(errc::invalid_argument, "--baseline '", baseline,
                           "' is none of the runs' labels"));
  std::vector<sim::run_result> runs;
  for (const auto& p : plan) {
    auto r = p.backend->run(*w, p.policy, p.label, o.rate);
    if (!r)
      return fail(r.err());
    runs.push_back(std::move(*r));
  }
  const auto table = sim::compare_runs(runs, baseline, "full");
  std::fputs(sim::format_compare_table(table, baseline).c_str(), stdout);
  nlohmann::json extra = {{"compare", sim::compare_json(table)}, {"compare_baseline", baseline}};
  std::vector<sim::run_result> des_runs;
  if (!o.des_profile.empty()) {
    auto v = validate_against_des(o, *w, runs, des_runs);
    if (!v)
      return fail(v.err());
    extra["des_validation"] = std::move(*v);
  }
  if (auto st = sim::write_report(o.out, header(o, "compare", *backends), runs, &extra); !st)
    return fail(st.err());
  if (des_runs.empty()) {
    std::printf("report: %s/{summary.json,requests.csv,plot.svg}\n", o.out.c_str());
    return 0;
  }
  const auto csv = std::filesystem::path{o.out} / "des_requests.csv";
  if (auto st = sim::write_text(csv, sim::requests_csv(des_runs)); !st)
    return fail(st.err());
  std::printf("report: %s/{summary.json,requests.csv,des_requests.csv,plot.svg}\n", o.out.c_str());
  return 0;
}

int run_images(const sim_options& o) {
  auto w = o.load_workload();
  if (!w)
    return fail(w.err());
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  for (int idx : w->used_images()) {
    const auto png = sim::procedural_png(o.seed, idx, w->spec.image_size);
    const auto path = std::filesystem::path{o.out} / ("image_" + std::to_string(idx) + ".png");
    std::ofstream f{path, std::ios::binary};
    f.write(reinterpret_cast<const char*>(png.data()), std::streamsize(png.size()));
    if (!f)
      return fail(make_error(errc::io_error, "cannot write ", path.string()));
  }
  std::printf("%zu images written to %s\n", w->used_images().size(), o.out.c_str());
  return 0;
}

} // namespace

void add_sim_command(CLI::App& app, int* exit_code) {
  auto* sim = app.add_subcommand("sim", "Online traffic simulator: drive a cluster with a "
                                        "workload, compare reuse policies, simulate a topology");
  sim->require_subcommand(1);

  auto run_o = std::make_shared<sim_options>();
  auto* run = sim->add_subcommand(
      "run", "Drive a cluster (in-process, or --target URL) open-loop with a workload");
  add_workload_options(*run, *run_o);
  add_live_options(*run, *run_o);
  run->add_option("--policy", run_o->policy, "reuse policy of every request")
      ->capture_default_str();
  run->add_option("--rates", run_o->rates, "several offered rates (one run each), e.g. 0.2,0.4")
      ->delimiter(',');
  run->callback([run_o, exit_code] { *exit_code = run_live(*run_o); });

  auto cmp_o = std::make_shared<sim_options>();
  auto* cmp = sim->add_subcommand(
      "compare", "Same workload and seed against several policies and servers; one table of "
                 "TTFT and throughput ratios to a baseline and output agreement with full");
  add_workload_options(*cmp, *cmp_o);
  add_live_options(*cmp, *cmp_o);
  cmp->add_option("--policies", cmp_o->policies,
                  "comma-separated policies (full is added as the agreement reference)")
      ->capture_default_str();
  cmp->add_option("--baseline", cmp_o->baseline,
                  "the run TTFT and throughput are given as ratios to (default: the first "
                  "peer --target, else prefix)");
  cmp->add_option("--replay", cmp_o->replay,
                  "with --des-profile: validate the DES against this recorded requests.csv of "
                  "an earlier compare (same workload options) instead of running live");
  cmp->add_option("--des-profile", cmp_o->des_profile,
                  "also replay the workload in the DES with this profile (`mosaic bench "
                  "--profile`) and print DES vs live with their ratios");
  cmp->add_option("--des-topology", cmp_o->des_topology,
                  "topology of the DES replay (default: the in-process cluster's shape)");
  cmp->callback([cmp_o, exit_code] { *exit_code = run_compare(*cmp_o); });

  auto img_o = std::make_shared<sim_options>();
  auto* img = sim->add_subcommand("images", "Write the workload's procedural images as PNG files");
  add_workload_options(*img, *img_o);
  img->add_option("--out", img_o->out, "directory")->required();
  img->callback([img_o, exit_code] { *exit_code = run_images(*img_o); });

  add_sim_des_command(*sim, exit_code);
  add_sim_fastcache_command(*sim, exit_code);
}

} // namespace mosaic::cli
