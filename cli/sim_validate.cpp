#include "cli/sim_validate.hpp"

#include <cmath>
#include <cstdio>
#include <unordered_map>

#include "sim/des.hpp"
#include "topology/loader.hpp"

namespace mosaic::cli {

namespace {

/// The in-process cluster's shape (actors/local_cluster): one node whose
/// CPU runs one prefill and one decode worker, a 2 GiB RAM tier.
topology in_process_topology(const sim_options& o) {
  topology t;
  t.model = o.model;
  t.source = "the in-process cluster (1 node, cpu: 1 prefill + 1 decode worker)";
  node_spec n;
  n.name = "local";
  n.host = "127.0.0.1";
  kv_loader_spec k;
  k.ram_gb = 2.0;
  decode_spec d;
  d.max_batch = o.max_batch;
  n.actors.push_back(actor_spec{k, {}});
  n.actors.push_back(actor_spec{prefill_spec{}, {}});
  n.actors.push_back(actor_spec{d, {}});
  t.nodes.push_back(std::move(n));
  return t;
}

/// `w` with each request's prompt tokens as the live run's usage counted
/// them (the tokenizer over the chat prompt: an input of the request, not a
/// measured time), so the DES computes the tokens the engine computed.
sim::workload with_counted_tokens(const sim::workload& w, const sim::run_result& run) {
  std::unordered_map<uint64_t, int> counted;
  for (const auto& rec : run.records)
    if (rec.prompt_tokens > 0)
      counted[rec.id] = rec.prompt_tokens;
  sim::workload out = w;
  for (auto& r : out.requests)
    if (auto it = counted.find(r.id); it != counted.end())
      r.prompt_tokens = it->second;
  return out;
}

double ratio(double des, double live) {
  return live > 0 ? des / live : 0.0;
}

} // namespace

result<nlohmann::json> validate_against_des(const sim_options& o, const sim::workload& w,
                                            const std::vector<sim::run_result>& runs,
                                            std::vector<sim::run_result>& des_runs) {
  auto profile = sim::load_profile(o.des_profile);
  if (!profile)
    return std::move(profile).err();
  topology topo;
  if (o.des_topology.empty()) {
    topo = in_process_topology(o);
  } else {
    auto t = load_topology(o.des_topology);
    if (!t)
      return std::move(t).err();
    topo = std::move(*t);
  }
  constexpr double limit = 0.20;
  std::printf("\nDES vs live (profile %s, %s); limit: DES/live within %.2f..%.2f\n",
              o.des_profile.c_str(), topo.source.c_str(), 1 - limit, 1 + limit);
  std::printf("%-16s %9s %9s %7s  %9s %9s %7s  %9s %9s %7s\n", "policy", "TTFT live", "TTFT DES",
              "ratio", "TPOT live", "TPOT DES", "ratio", "tok/s live", "tok/s DES", "ratio");
  auto out = nlohmann::json::array();
  for (const auto& run : runs) {
    auto policy = parse_policy(run.summary.label);
    if (!policy)
      return std::move(policy).err();
    auto des = sim::simulate(topo, *profile, with_counted_tokens(w, run),
                             {*policy, o.objectives, run.summary.rate});
    if (!des)
      return std::move(des).err();
    const auto& l = run.summary;
    const auto& d = des->run.summary;
    const double r_ttft = ratio(d.ttft.mean, l.ttft.mean);
    const double r_tpot = ratio(d.tpot.mean, l.tpot.mean);
    const double r_tput = ratio(d.output_token_throughput, l.output_token_throughput);
    const bool ok = std::abs(r_ttft - 1) <= limit && std::abs(r_tput - 1) <= limit;
    std::printf("%-16s %9.3f %9.3f %6.2fx  %9.4f %9.4f %6.2fx  %9.2f %9.2f %6.2fx  %s\n",
                l.label.c_str(), l.ttft.mean, d.ttft.mean, r_ttft, l.tpot.mean, d.tpot.mean, r_tpot,
                l.output_token_throughput, d.output_token_throughput, r_tput,
                ok ? "within 20%" : "OUTSIDE 20%");
    out.push_back({{"policy", l.label},
                   {"ttft_mean_live_s", l.ttft.mean},
                   {"ttft_mean_des_s", d.ttft.mean},
                   {"ttft_ratio_des_to_live", r_ttft},
                   {"tpot_mean_live_s", l.tpot.mean},
                   {"tpot_mean_des_s", d.tpot.mean},
                   {"tpot_ratio_des_to_live", r_tpot},
                   {"output_throughput_live_tok_per_s", l.output_token_throughput},
                   {"output_throughput_des_tok_per_s", d.output_token_throughput},
                   {"output_throughput_ratio_des_to_live", r_tput},
                   {"within_20_percent", ok}});
    des->run.summary.label = l.label;
    des_runs.push_back(std::move(des->run));
  }
  return out;
}

} // namespace mosaic::cli
