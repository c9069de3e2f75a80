// `mosaic sim fastcache --profile P [--rates ...] [--live-rates ...]`:
// FastCache's comparison (docs/fastcache.md). At every rate the stage
// model (sim/stage_des.hpp, driving engine/stage_scheduler) runs: no
// compression (--baseline schedule), then every --schedules entry with
// --compression (FCFS, fixed p/c/d sizes, dynamic). With --live-rates the
// in-process cluster (the actor pipeline with its compress stage) is also
// driven at those rates, without and with --compression, measuring every
// token on the real engine and sampling the pool's peak use.

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/sim_options.hpp"
#include "engine/kv_learned_compressor.hpp"
#include "engine/model/builtin_model.hpp"
#include "sim/cluster_target.hpp"
#include "sim/compare.hpp"
#include "sim/driver.hpp"
#include "sim/stage_des.hpp"

namespace mosaic::cli {

namespace {

struct fastcache_cli_options {
  sim_options sim;
  std::string profile;
  std::string compression = "snapkv:img=0.25,txt=0.5";
  std::vector<std::string> schedules{"fcfs", "p1c1d8", "p2c2d8", "p3c3d6", "p4c4d8", "dynamic"};
  std::string baseline = "dynamic";
  double kv_budget_mb = 96.0;
  double speedup = 1.0; ///< compute costs of the profile divided by this (a faster device)
  std::vector<double> rates{1, 2, 5, 10, 20, 30, 40};
  std::vector<double> live_rates;
  std::string live_policy = "full";
  /// Stage scheduling of the compressed live runs, one run each
  /// (node_options::schedule; the uncompressed live run is unscheduled).
  std::vector<std::string> live_schedules{"off"};
};

/// One line of the table, beside the report's run summary.
struct fastcache_row {
  std::string mode; ///< "DES" or "live"
  std::string label;
  double rate = 0.0;
  double ttft = 0.0, ttft_without = 0.0, tpot = 0.0, req_s = 0.0, tok_s = 0.0;
  double peak_kv_mib = 0.0, peak_reserved_mib = -1.0; ///< -1: not modelled (live)
  double compress_s = 0.0;
  std::string batches; ///< mean p/c/d batch sizes
  int64_t completed = 0, failed = 0;
};

int fail(const error& e) {
  std::fprintf(stderr, "error: %s\n", e.to_string().c_str());
  return 1;
}

constexpr double mib = 1024.0 * 1024.0;

fastcache_row row_of(const std::string& mode, const sim::run_summary& s) {
  fastcache_row r;
  r.mode = mode;
  r.label = s.label;
  r.rate = s.rate;
  r.ttft = s.ttft.mean;
  r.tpot = s.tpot.mean;
  r.req_s = s.request_throughput;
  r.tok_s = s.output_token_throughput;
  r.completed = s.completed;
  r.failed = s.failed;
  return r;
}

void print_row(const fastcache_row& r) {
  char reserved[32] = "-";
  if (r.peak_reserved_mib >= 0)
    std::snprintf(reserved, sizeof reserved, "%.1f", r.peak_reserved_mib);
  std::printf("%-5s %-22s %5.1f %9.3f %9.3f %8.4f %7.2f %8.1f %8.1f %8s %9s %5lld/%lld\n",
              r.mode.c_str(), r.label.c_str(), r.rate, r.ttft, r.ttft_without, r.tpot, r.req_s,
              r.tok_s, r.peak_kv_mib, reserved, r.batches.c_str(), (long long)r.completed,
              (long long)(r.completed + r.failed));
}

void print_header() {
  std::printf("%-5s %-22s %5s %9s %9s %8s %7s %8s %8s %8s %9s %s\n", "mode", "run", "req/s",
              "TTFT(s)", "TTFT-c(s)", "TPOT(s)", "thr r/s", "tok/s", "peakKV", "reservd", "p/c/d",
              "done");
  std::printf("%-5s %-22s %5s %9s %9s %8s %7s %8s %8s %8s %9s\n", "", "", "offer", "mean", "mean",
              "mean", "", "out", "MiB", "MiB", "mean bat");
}

nlohmann::json row_json(const fastcache_row& r) {
  return {{"mode", r.mode},
          {"label", r.label},
          {"rate_req_per_s", r.rate},
          {"ttft_mean_s", r.ttft},
          {"ttft_without_compression_mean_s", r.ttft_without},
          {"tpot_mean_s", r.tpot},
          {"request_throughput_req_per_s", r.req_s},
          {"output_token_throughput_tok_per_s", r.tok_s},
          {"peak_kv_mib", r.peak_kv_mib},
          {"peak_kv_reserved_mib", r.peak_reserved_mib},
          {"compress_mean_s", r.compress_s},
          {"mean_batch_p_c_d", r.batches},
          {"completed", r.completed},
          {"failed", r.failed}};
}

/// One live run: the in-process cluster, every request with `compression`.
result<std::pair<sim::run_result, fastcache_row>>
run_live(fastcache_cli_options& o, const sim::workload& w, const std::string& compression,
         const std::string& schedule, double rate) {
  auto node = o.sim;
  node.schedule = schedule;
  auto cluster = start_live_cluster(node);
  if (!cluster)
    return std::move(cluster).err();
  auto& c = **cluster;
  const std::string label = "live " + (compression.empty() ? std::string{"none"} : compression) +
                            (schedule == "off" ? std::string{} : " [" + schedule + "]");
  sim::cluster_target t{
      c,
      w,
      {.policy = o.live_policy, .images_by_key = !o.sim.inline_images, .compression = compression}};
  std::atomic<bool> stop{false};
  std::atomic<size_t> peak{0};
  std::thread sampler{[&] {
    while (!stop.load()) {
      const size_t used = c.stats().pool.bytes_used;
      size_t prev = peak.load();
      while (used > prev && !peak.compare_exchange_weak(prev, used)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{2});
    }
  }};
  std::fprintf(stderr, "%s: %zu requests at %.3g req/s...\n", label.c_str(), w.requests.size(),
               rate);
  sim::drive_options d;
  d.label = label;
  d.rate = rate;
  d.objectives = o.sim.objectives;
  d.drain_timeout = std::chrono::milliseconds{int64_t(o.sim.drain_timeout_s * 1000)};
  d.progress = o.sim.verbose;
  auto run = sim::drive(t, w, d);
  stop = true;
  sampler.join();
  auto row = row_of("live", run.summary);
  const auto s = c.stats();
  row.peak_kv_mib = double(peak.load()) / mib;
  row.compress_s = s.compressions > 0 ? double(s.compress_us) * 1e-6 / double(s.compressions) : 0;
  row.ttft_without = std::max(0.0, row.ttft - row.compress_s);
  if (s.stages.scheduled) {
    row.peak_reserved_mib = double(s.stages.kv_reserved_high_water) / mib;
    char b[48];
    const auto mean = [&](int i) {
      return s.stages.batches[i] > 0 ? double(s.stages.requests[i]) / double(s.stages.batches[i])
                                     : 0.0;
    };
    std::snprintf(b, sizeof b, "%.1f/%.1f/%.1f", mean(0), mean(1), mean(2));
    row.batches = b;
  } else {
    row.batches = "actors";
  }
  return std::pair{std::move(run), row};
}

int run_fastcache(fastcache_cli_options& o) {
  auto profile = sim::load_profile(o.profile);
  if (!profile)
    return fail(profile.err());
  if (!(o.speedup > 0))
    return fail(make_error(errc::invalid_argument, "--speedup must be > 0"));
  if (o.speedup != 1.0) {
    if (!o.live_rates.empty())
      return fail(make_error(errc::invalid_argument,
                             "--speedup models another device; it cannot apply to live runs"));
    auto& p = *profile;
    for (double* cost : {&p.prefill_base_s, &p.prefill_per_computed_token_s,
                         &p.prefill_per_attended_token_s, &p.decode_step_base_s,
                         &p.decode_step_per_seq_s, &p.encode_per_image_s, &p.compile_per_image_s})
      *cost /= o.speedup;
    p.load_ram_bytes_per_s *= o.speedup;
    p.device += " / " + std::to_string(o.speedup).substr(0, 5) + " (--speedup)";
  }
  auto spec = o.sim.load_spec();
  if (!spec)
    return fail(spec.err());
  auto comp = parse_compression(o.compression);
  if (!comp)
    return fail(comp.err());
  if (!comp->enabled())
    return fail(make_error(errc::invalid_argument, "--compression must not be none: the "
                                                   "baseline run is the uncompressed one"));
  // A learned compressor's kept rows follow from its group sizes, in the
  // model directory of --model.
  learned_groups learned;
  if (comp->method == compression_method::learned) {
    auto dir = resolve_model(o.sim.model);
    if (!dir)
      return fail(dir.err());
    auto g = model_learned_groups(*dir);
    if (!g)
      return fail(g.err());
    if (!g->known())
      return fail(make_error(errc::invalid_argument, "--compression learned: ", o.sim.model,
                             " has no ", learned_compressor_file,
                             "; the stage model needs its group sizes (give --model DIR)"));
    learned = *g;
  }
  if (!(o.kv_budget_mb > 0))
    return fail(make_error(errc::invalid_argument, "--kv-budget-mb must be > 0"));
  auto mem = sim::profile_memory_model(*profile, size_t(o.kv_budget_mb * mib));
  if (!mem)
    return fail(mem.err());
  struct run_kind {
    std::string label;
    schedule_policy schedule;
    compression_spec compression;
  };
  std::vector<run_kind> kinds;
  if (!o.baseline.empty()) {
    auto p = parse_schedule_policy(o.baseline);
    if (!p)
      return fail(p.err());
    kinds.push_back({"no compression (" + o.baseline + ")", *p, compression_spec{}});
  }
  for (const auto& name : o.schedules) {
    auto p = parse_schedule_policy(name);
    if (!p)
      return fail(p.err());
    kinds.push_back({name + " + compression", *p, *comp});
  }

  std::printf("FastCache comparison: workload %s, profile %s (%s), compression %s, memory "
              "budget weights %.1f MiB + %.1f MiB (KV and activations)\n",
              o.sim.workload.c_str(), profile->model.c_str(), profile->device.c_str(),
              comp->to_string().c_str(), double(mem->weight_bytes) / mib, o.kv_budget_mb);
  print_header();
  std::vector<sim::run_result> runs;
  nlohmann::json rows = nlohmann::json::array();
  if (!o.live_rates.empty() && o.sim.library.empty()) // the node needs one even for inline images
    o.sim.library = (std::filesystem::path{o.sim.out} / "library").string();
  for (double rate : o.live_rates) {
    auto w = o.sim.generate(*spec, rate);
    if (!w)
      return fail(w.err());
    if (!o.sim.inline_images)
      if (auto st = prepare_live_library(o.sim, *w); !st)
        return fail(st.err());
    std::vector<std::pair<std::string, std::string>> live_runs{{std::string{}, "off"}};
    for (const auto& sched : o.live_schedules)
      live_runs.emplace_back(comp->to_string(), sched);
    for (const auto& [c, sched] : live_runs) {
      auto r = run_live(o, *w, c, sched, rate);
      if (!r)
        return fail(r.err());
      print_row(r->second);
      rows.push_back(row_json(r->second));
      runs.push_back(std::move(r->first));
    }
  }
  for (double rate : o.rates) {
    auto w = o.sim.generate(*spec, rate);
    if (!w)
      return fail(w.err());
    for (const auto& k : kinds) {
      sim::stage_des_options d{k.label, k.schedule, k.compression, *mem, o.sim.objectives, rate,
                               learned};
      auto r = sim::simulate_stages(*profile, *w, d);
      if (!r)
        return fail(r.err());
      auto row = row_of("DES", r->run.summary);
      row.ttft_without = r->ttft_without_compression_mean;
      row.peak_kv_mib = double(r->peak_kv_actual) / mib;
      row.peak_reserved_mib = double(r->peak_kv_reserved) / mib;
      row.compress_s = r->compress_mean;
      char b[48];
      std::snprintf(b, sizeof b, "%.1f/%.1f/%.1f", r->stages[0].mean_batch(),
                    r->stages[1].mean_batch(), r->stages[2].mean_batch());
      row.batches = b;
      print_row(row);
      rows.push_back(row_json(row));
      runs.push_back(std::move(r->run));
    }
  }
  sim::report_header h{"fastcache",
                       o.sim.workload,
                       o.sim.seed,
                       "stage model (DES) on one device" +
                           std::string(o.live_rates.empty() ? "" : " + in-process cluster"),
                       profile->model + " profile (" + profile->device + ")",
                       o.sim.objectives};
  const nlohmann::json extra = {{"fastcache",
                                 {{"compression", comp->to_string()},
                                  {"kv_budget_mib", o.kv_budget_mb},
                                  {"weights_mib", double(mem->weight_bytes) / mib},
                                  {"rows", rows}}}};
  if (auto st = sim::write_report(o.sim.out, h, runs, &extra); !st)
    return fail(st.err());
  std::printf("report: %s/{summary.json,requests.csv,plot.svg}\n", o.sim.out.c_str());
  return 0;
}

} // namespace

void add_sim_fastcache_command(CLI::App& sim, int* exit_code) {
  auto o = std::make_shared<fastcache_cli_options>();
  o->sim.workload = "gqa";
  o->sim.duration_s = 60;
  o->sim.out = "sim-fastcache";
  auto* cmd = sim.add_subcommand(
      "fastcache", "FastCache comparison: no compression, FCFS, fixed p/c/d and dynamic "
                   "multi-stage batching (stage model; --live-rates adds real-engine runs)");
  add_workload_options(*cmd, o->sim);
  add_live_options(*cmd, o->sim);
  cmd->add_option("--profile", o->profile, "cost profile JSON from `mosaic bench --profile`")
      ->required();
  cmd->add_option("--compression", o->compression, "KV compression of the compressed runs")
      ->capture_default_str();
  cmd->add_option("--schedules", o->schedules,
                  "batching policies run with compression: fcfs, pPcCdD, dynamic[:count=,wait=]")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--baseline", o->baseline,
                  "batching policy of the uncompressed run (empty: none)")
      ->capture_default_str();
  cmd->add_option("--kv-budget-mb", o->kv_budget_mb,
                  "device memory beyond the weights, for KV and activations (MiB)")
      ->capture_default_str();
  cmd->add_option("--speedup", o->speedup,
                  "divide the profile's compute costs by this (what-if: a faster device)")
      ->capture_default_str();
  cmd->add_option("--rates", o->rates, "offered rates of the stage model (one run each)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--live-rates", o->live_rates,
                  "offered rates of live runs on the in-process cluster (none by default)")
      ->delimiter(',');
  cmd->add_option("--live-schedules", o->live_schedules,
                  "stage scheduling of the compressed live runs, one run each: off, fcfs, "
                  "dynamic[:...], p<P>c<C>d<D>")
      ->capture_default_str();
  cmd->add_option("--live-policy", o->live_policy, "reuse policy of the live runs")
      ->capture_default_str();
  cmd->callback([o, exit_code] { *exit_code = run_fastcache(*o); });
}

} // namespace mosaic::cli
