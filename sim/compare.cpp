#include "sim/compare.hpp"

#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/policy_spec.hpp"

namespace mosaic::sim {

result<std::vector<std::string>> parse_policy_list(const std::string& list) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  std::stringstream ss{list};
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty())
      continue;
    auto p = parse_policy(item);
    if (!p)
      return make_error(errc::invalid_argument, "--policies: ", p.err().message);
    auto canonical = p->to_string();
    if (!seen.insert(canonical).second)
      return make_error(errc::invalid_argument, "--policies: '", item, "' is given twice");
    out.push_back(canonical);
  }
  if (out.empty())
    return make_error(errc::invalid_argument, "--policies is empty; e.g. prefix,mpic:32");
  if (seen.count("full") == 0)
    out.insert(out.begin(), "full");
  return out;
}

std::vector<compare_row> compare_runs(const std::vector<run_result>& runs,
                                      const std::string& baseline, const std::string& reference) {
  const run_result* base = nullptr;
  const run_result* ref = nullptr;
  for (const auto& r : runs) {
    if (r.summary.label == baseline)
      base = &r;
    if (r.summary.label == reference)
      ref = &r;
  }
  std::vector<compare_row> rows;
  for (const auto& r : runs) {
    compare_row row;
    row.policy = r.summary.label;
    row.ttft_mean_s = r.summary.ttft.mean;
    row.ttft_p90_s = r.summary.ttft.p90;
    row.output_throughput = r.summary.output_token_throughput;
    row.completed = r.summary.completed;
    row.failed = r.summary.failed;
    if (base != nullptr && base->summary.ttft.mean > 0)
      row.ttft_ratio = r.summary.ttft.mean / base->summary.ttft.mean;
    if (base != nullptr && base->summary.ttft.p90 > 0)
      row.ttft_p90_ratio = r.summary.ttft.p90 / base->summary.ttft.p90;
    if (base != nullptr && base->summary.output_token_throughput > 0)
      row.throughput_ratio =
          r.summary.output_token_throughput / base->summary.output_token_throughput;
    if (ref != nullptr && ref->records.size() == r.records.size()) {
      int both = 0, exact = 0;
      double frac = 0.0;
      for (size_t i = 0; i < r.records.size(); ++i) {
        const auto& a = r.records[i];
        const auto& b = ref->records[i];
        if (!a.ok || !b.ok)
          continue;
        ++both;
        exact += a.tokens == b.tokens ? 1 : 0;
        const auto n = std::min(a.tokens.size(), b.tokens.size());
        size_t common = 0;
        while (common < n && a.tokens[common] == b.tokens[common])
          ++common;
        frac += b.tokens.empty() ? 1.0 : double(common) / double(b.tokens.size());
      }
      if (both > 0) {
        row.agreement_exact = double(exact) / both;
        row.agreement_tokens = frac / both;
      }
    }
    rows.push_back(row);
  }
  return rows;
}

std::string format_compare_table(const std::vector<compare_row>& rows,
                                 const std::string& baseline) {
  std::string out = "ratios (x) are to " + baseline + "\n";
  char line[320];
  std::snprintf(line, sizeof line, "%-22s %5s %6s %11s %7s %10s %7s %10s %7s %12s %12s\n", "run",
                "done", "failed", "TTFT mean s", "x", "TTFT p90 s", "x", "out tok/s", "x",
                "=full exact", "=full tokens");
  out += line;
  for (const auto& r : rows) {
    auto ratio = [](double v) {
      char b[32];
      if (v > 0)
        std::snprintf(b, sizeof b, "%.2fx", v);
      else
        std::snprintf(b, sizeof b, "-");
      return std::string{b};
    };
    auto pct = [](double v) {
      char b[32];
      if (v >= 0)
        std::snprintf(b, sizeof b, "%.0f%%", 100 * v);
      else
        std::snprintf(b, sizeof b, "-");
      return std::string{b};
    };
    std::snprintf(line, sizeof line,
                  "%-22s %5lld %6lld %11.3f %7s %10.3f %7s %10.2f %7s %12s %12s\n",
                  r.policy.c_str(), (long long)r.completed, (long long)r.failed, r.ttft_mean_s,
                  ratio(r.ttft_ratio).c_str(), r.ttft_p90_s, ratio(r.ttft_p90_ratio).c_str(),
                  r.output_throughput, ratio(r.throughput_ratio).c_str(),
                  pct(r.agreement_exact).c_str(), pct(r.agreement_tokens).c_str());
    out += line;
  }
  return out;
}

nlohmann::json compare_json(const std::vector<compare_row>& rows) {
  auto a = nlohmann::json::array();
  for (const auto& r : rows)
    a.push_back({{"policy", r.policy},
                 {"completed_requests", r.completed},
                 {"failed_requests", r.failed},
                 {"ttft_mean_s", r.ttft_mean_s},
                 {"ttft_ratio_to_baseline", r.ttft_ratio},
                 {"ttft_p90_s", r.ttft_p90_s},
                 {"ttft_p90_ratio_to_baseline", r.ttft_p90_ratio},
                 {"output_token_throughput_tok_per_s", r.output_throughput},
                 {"throughput_ratio_to_baseline", r.throughput_ratio},
                 {"agreement_with_full_exact_frac", r.agreement_exact},
                 {"agreement_with_full_tokens_frac", r.agreement_tokens}});
  return a;
}

void print_run(const run_result& run) {
  const auto& s = run.summary;
  std::printf("%s @ %.3g req/s: %lld done, %lld failed in %.2f s\n", s.label.c_str(), s.rate,
              (long long)s.completed, (long long)s.failed, s.duration_s);
  std::printf("  TTFT  mean %.3f  median %.3f  p90 %.3f  p99 %.3f s\n", s.ttft.mean, s.ttft.median,
              s.ttft.p90, s.ttft.p99);
  std::printf("  TPOT  mean %.4f  median %.4f  p90 %.4f  p99 %.4f s\n", s.tpot.mean, s.tpot.median,
              s.tpot.p90, s.tpot.p99);
  std::printf("  ITL   mean %.4f  median %.4f  p90 %.4f  p99 %.4f s\n", s.itl.mean, s.itl.median,
              s.itl.p90, s.itl.p99);
  std::printf("  E2E   mean %.3f  median %.3f  p90 %.3f  p99 %.3f s\n", s.e2e.mean, s.e2e.median,
              s.e2e.p90, s.e2e.p99);
  std::printf("  throughput %.3f req/s, %.2f out tok/s, %.2f total tok/s (%.2f image tok/s); "
              "goodput %.3f req/s\n",
              s.request_throughput, s.output_token_throughput, s.total_token_throughput,
              s.image_token_throughput, s.goodput);
}

} // namespace mosaic::sim
