#include "sim/arrivals.hpp"

#include <cmath>

#include "sim/number_text.hpp"

namespace mosaic::sim {

status arrival_spec::validate() const {
  if (!(burstiness > 0.0) || !std::isfinite(burstiness))
    return make_error(errc::invalid_argument, "burstiness must be > 0 (1 is Poisson), got ",
                      num(burstiness));
  if (!(duration_s > 0.0) || !std::isfinite(duration_s))
    return make_error(errc::invalid_argument, "duration must be > 0 seconds, got ",
                      num(duration_s));
  if (max_requests < 0)
    return make_error(errc::invalid_argument, "the request cap must be >= 0 (0: none)");
  if (ramp.empty()) {
    if (!(rate > 0.0) || !std::isfinite(rate))
      return make_error(errc::invalid_argument, "rate must be > 0 requests/s, got ", num(rate));
    return {};
  }
  double last = -1.0;
  bool any_positive = false;
  for (const auto& p : ramp) {
    if (!std::isfinite(p.at_s) || p.at_s < 0.0 || p.at_s <= last)
      return make_error(errc::invalid_argument,
                        "ramp times must be >= 0 and strictly increasing (at ", num(p.at_s), " s)");
    if (!std::isfinite(p.rate) || p.rate < 0.0)
      return make_error(errc::invalid_argument, "ramp rates must be >= 0 (at ", num(p.at_s), " s)");
    any_positive = any_positive || p.rate > 0.0;
    last = p.at_s;
  }
  if (!any_positive)
    return make_error(errc::invalid_argument, "the ramp never has a positive rate");
  return {};
}

double arrival_spec::rate_at(double t) const {
  if (ramp.empty())
    return rate;
  if (t <= ramp.front().at_s)
    return ramp.front().rate;
  for (size_t i = 1; i < ramp.size(); ++i) {
    if (t <= ramp[i].at_s) {
      const auto& a = ramp[i - 1];
      const auto& b = ramp[i];
      return a.rate + (b.rate - a.rate) * (t - a.at_s) / (b.at_s - a.at_s);
    }
  }
  return ramp.back().rate;
}

result<arrival_process> parse_arrival_process(const std::string& name) {
  if (name == "poisson")
    return arrival_process::poisson;
  if (name == "gamma")
    return arrival_process::gamma;
  return make_error(errc::invalid_argument, "unknown arrival process '", name,
                    "'; use poisson or gamma");
}

namespace {

/// Λ⁻¹: the time at which the cumulative rate reaches `target`, or
/// infinity when it never does.
class inverse_cumulative_rate {
public:
  explicit inverse_cumulative_rate(const arrival_spec& s) {
    if (s.ramp.empty()) {
      pieces_.push_back({0.0, s.rate, s.rate, INFINITY, 0.0});
      return;
    }
    double acc = 0.0;
    if (s.ramp.front().at_s > 0.0) {
      pieces_.push_back({0.0, s.ramp.front().rate, s.ramp.front().rate, s.ramp.front().at_s, acc});
      acc += s.ramp.front().rate * s.ramp.front().at_s;
    }
    for (size_t i = 1; i < s.ramp.size(); ++i) {
      const auto& a = s.ramp[i - 1];
      const auto& b = s.ramp[i];
      pieces_.push_back({a.at_s, a.rate, b.rate, b.at_s, acc});
      acc += 0.5 * (a.rate + b.rate) * (b.at_s - a.at_s);
    }
    pieces_.push_back({s.ramp.back().at_s, s.ramp.back().rate, s.ramp.back().rate, INFINITY, acc});
  }

  double operator()(double target) {
    for (; next_ < pieces_.size(); ++next_) {
      const auto& p = pieces_[next_];
      const double len = p.end - p.begin;
      const double area = std::isinf(len) ? INFINITY : 0.5 * (p.r0 + p.r1) * len;
      const double need = target - p.acc;
      if (need > area)
        continue;
      if (std::isinf(len) || p.r0 == p.r1)
        return p.r0 > 0.0 ? p.begin + need / p.r0 : INFINITY;
      // r0 x + (r1 - r0) x² / (2 len) = need
      const double a = 0.5 * (p.r1 - p.r0) / len;
      const double disc = p.r0 * p.r0 + 4.0 * a * need;
      const double x = (-p.r0 + std::sqrt(std::max(disc, 0.0))) / (2.0 * a);
      return p.begin + x;
    }
    return INFINITY;
  }

private:
  struct piece {
    double begin, r0, r1, end, acc; ///< acc: Λ(begin)
  };
  std::vector<piece> pieces_;
  size_t next_ = 0; ///< targets only grow
};

} // namespace

result<std::vector<double>> arrival_times(const arrival_spec& spec, uint64_t seed) {
  MOSAIC_TRY(spec.validate());
  rng r{seed ^ 0xa5a5'5a5a'0f0f'f0f0ull};
  inverse_cumulative_rate inverse{spec};
  std::vector<double> out;
  double unit_time = 0.0;
  for (;;) {
    if (spec.max_requests > 0 && int64_t(out.size()) >= spec.max_requests)
      break;
    unit_time += spec.process == arrival_process::poisson
                     ? r.exponential()
                     : r.gamma(spec.burstiness, 1.0 / spec.burstiness);
    const double t = inverse(unit_time);
    if (!(t <= spec.duration_s))
      break;
    out.push_back(t);
  }
  return out;
}

} // namespace mosaic::sim
