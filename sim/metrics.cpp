#include "sim/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace mosaic::sim {

double request_record::tpot() const {
  if (output_tokens < 2)
    return 0.0;
  return (e2e() - ttft()) / double(output_tokens - 1);
}

double percentile(std::vector<double> values, double p) {
  if (values.empty())
    return 0.0;
  std::sort(values.begin(), values.end());
  const double rank = p / 100.0 * double(values.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(rank));
  const auto hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (rank - double(lo));
}

latency_stats describe(const std::vector<double>& values) {
  latency_stats s;
  if (values.empty())
    return s;
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / double(values.size());
  s.median = percentile(values, 50);
  s.p90 = percentile(values, 90);
  s.p99 = percentile(values, 99);
  return s;
}

double weighted_percentile(std::vector<std::pair<double, double>> samples, double p) {
  samples.erase(
      std::remove_if(samples.begin(), samples.end(), [](const auto& s) { return !(s.second > 0); }),
      samples.end());
  if (samples.empty())
    return 0.0;
  std::sort(samples.begin(), samples.end());
  double total = 0.0;
  for (const auto& s : samples)
    total += s.second;
  // numpy's rule on the expanded sample: value_at(k) is the value whose
  // copies cover index k.
  auto value_at = [&](double k) {
    double covered = 0.0;
    for (const auto& [v, w] : samples) {
      covered += w;
      if (k < covered)
        return v;
    }
    return samples.back().first;
  };
  const double rank = p / 100.0 * std::max(total - 1.0, 0.0);
  const double lo = std::floor(rank);
  const double a = value_at(lo);
  const double b = value_at(std::min(lo + 1.0, std::max(total - 1.0, 0.0)));
  return a + (b - a) * (rank - lo);
}

run_summary summarize(const std::vector<request_record>& records, const slo& objectives,
                      double duration_s,
                      const std::vector<std::pair<double, double>>* weighted_itl) {
  run_summary s;
  std::vector<double> ttft, tpot, itl, e2e;
  double first_send = INFINITY, last_end = 0.0;
  for (const auto& r : records) {
    first_send = std::min(first_send, r.sent_s);
    if (!r.ok) {
      ++s.failed;
      continue;
    }
    ++s.completed;
    last_end = std::max(last_end, r.end_s);
    s.total_input_tokens += r.prompt_tokens;
    s.total_output_tokens += r.output_tokens;
    s.total_image_tokens += r.image_tokens;
    ttft.push_back(r.ttft());
    e2e.push_back(r.e2e());
    if (r.output_tokens > 1)
      tpot.push_back(r.tpot());
    for (size_t i = 1; i < r.token_times_s.size(); ++i)
      itl.push_back(r.token_times_s[i] - r.token_times_s[i - 1]);
    const bool good = (objectives.ttft_s <= 0 || r.ttft() <= objectives.ttft_s) &&
                      (objectives.tpot_s <= 0 || r.tpot() <= objectives.tpot_s) &&
                      (objectives.e2e_s <= 0 || r.e2e() <= objectives.e2e_s);
    if (good)
      ++s.good;
  }
  s.ttft = describe(ttft);
  s.tpot = describe(tpot);
  s.e2e = describe(e2e);
  if (weighted_itl != nullptr && itl.empty()) {
    double sum = 0.0, n = 0.0;
    for (const auto& [v, w] : *weighted_itl) {
      sum += v * w;
      n += w;
    }
    s.itl.mean = n > 0 ? sum / n : 0.0;
    s.itl.median = weighted_percentile(*weighted_itl, 50);
    s.itl.p90 = weighted_percentile(*weighted_itl, 90);
    s.itl.p99 = weighted_percentile(*weighted_itl, 99);
  } else {
    s.itl = describe(itl);
  }
  s.duration_s = duration_s > 0                                ? duration_s
                 : (records.empty() || last_end <= first_send) ? 0.0
                                                               : last_end - first_send;
  if (s.duration_s > 0) {
    s.request_throughput = double(s.completed) / s.duration_s;
    s.output_token_throughput = double(s.total_output_tokens) / s.duration_s;
    s.total_token_throughput = double(s.total_input_tokens + s.total_output_tokens) / s.duration_s;
    s.image_token_throughput = double(s.total_image_tokens) / s.duration_s;
    s.goodput = objectives.any() ? double(s.good) / s.duration_s : 0.0;
  }
  return s;
}

} // namespace mosaic::sim
