// Workloads: reproducible per seed, statistics that match their YAML,
// Zipf popularity, Poisson/gamma arrivals and rate ramps.

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "sim/arrivals.hpp"
#include "sim/procedural_image.hpp"
#include "sim/workload.hpp"

namespace mosaic::sim {
namespace {

uint64_t fresh_seed() {
  return std::random_device{}();
}

workload_spec load(const std::string& name) {
  auto spec = load_workload_spec(name, builtin_workload_dir());
  EXPECT_TRUE(spec) << (spec ? "" : spec.err().to_string());
  return *spec;
}

bool same(const workload& a, const workload& b) {
  if (a.requests.size() != b.requests.size())
    return false;
  for (size_t i = 0; i < a.requests.size(); ++i) {
    const auto &x = a.requests[i], &y = b.requests[i];
    if (x.arrival_s != y.arrival_s || x.max_tokens != y.max_tokens ||
        x.pieces.size() != y.pieces.size())
      return false;
    for (size_t k = 0; k < x.pieces.size(); ++k)
      if (x.pieces[k].text != y.pieces[k].text || x.pieces[k].image != y.pieces[k].image)
        return false;
  }
  return true;
}

TEST(Workload, ShippedWorkloadsLoadAndCiteTheirSources) {
  for (const char* name : {"mmdu", "sparkles", "gqa"}) {
    auto spec = load(name);
    EXPECT_EQ(spec.name, name);
    EXPECT_FALSE(spec.sources.empty()) << name;
    EXPECT_FALSE(spec.approximations.empty()) << name;
  }
}

TEST(Workload, SameSeedSameWorkloadOtherSeedOtherWorkload) {
  const auto seed = fresh_seed();
  for (const char* name : {"mmdu", "sparkles", "gqa"}) {
    auto spec = load(name);
    auto a = generate_workload(spec, spec.arrivals, seed);
    auto b = generate_workload(spec, spec.arrivals, seed);
    auto c = generate_workload(spec, spec.arrivals, seed + 1);
    ASSERT_TRUE(a && b && c);
    EXPECT_FALSE(a->requests.empty());
    EXPECT_TRUE(same(*a, *b)) << name << " seed " << seed;
    EXPECT_FALSE(same(*a, *c)) << name << " seed " << seed;
  }
}

TEST(Workload, ProceduralImagesAreReproducibleAndDistinct) {
  const auto seed = fresh_seed();
  auto a = procedural_png(seed, 3, 64);
  EXPECT_EQ(a, procedural_png(seed, 3, 64));
  EXPECT_NE(a, procedural_png(seed, 4, 64));
  auto decoded = decode_image(a, image_limits{});
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->width, 64);
  EXPECT_EQ(decoded->rgb, procedural_image(seed, 3, 64).rgb);
}

TEST(Workload, StatisticsMatchTheYaml) {
  const auto seed = fresh_seed();
  for (const char* name : {"mmdu", "sparkles", "gqa"}) {
    auto spec = load(name);
    arrival_spec many = spec.arrivals;
    many.rate = 50.0;
    many.duration_s = 3600;
    many.max_requests = 6000;
    auto w = generate_workload(spec, many, seed);
    ASSERT_TRUE(w);
    double answers = 0, new_images = 0, new_image_turns = 0, first_turns = 0;
    std::vector<int> turns_per_dialogue;
    for (const auto& r : w->requests) {
      answers += r.max_tokens;
      if (r.turn == 0 || spec.new_images == new_images_at::every_turn) {
        new_images += r.n_new_images;
        ++new_image_turns;
      }
      if (r.turn == 0) {
        ++first_turns;
        turns_per_dialogue.push_back(1);
      } else {
        ++turns_per_dialogue.back();
      }
      EXPECT_LE(r.max_tokens, spec.answer_tokens.max);
      EXPECT_GE(r.max_tokens, spec.answer_tokens.min);
    }
    turns_per_dialogue.pop_back(); // the last dialogue may be cut by the cap
    const double n = double(w->requests.size());
    EXPECT_NEAR(answers / n, spec.answer_tokens.mean, 0.1 * spec.answer_tokens.mean) << name;
    EXPECT_NEAR(new_images / new_image_turns, spec.images_per_turn.mean,
                0.1 * spec.images_per_turn.mean + 0.05)
        << name;
    const double mean_turns =
        std::accumulate(turns_per_dialogue.begin(), turns_per_dialogue.end(), 0.0) /
        double(turns_per_dialogue.size());
    EXPECT_NEAR(mean_turns, spec.turns.mean, 0.15 * spec.turns.mean) << name;
  }
}

TEST(Workload, LaterTurnsResendTheHistory) {
  auto spec = load("mmdu");
  auto w = generate_workload(spec, spec.arrivals, fresh_seed());
  ASSERT_TRUE(w);
  ASSERT_GE(w->requests.size(), 2u);
  const auto& a = w->requests[0];
  const auto& b = w->requests[1];
  ASSERT_EQ(b.turn, 1);
  EXPECT_EQ(b.n_images(), a.n_images()); // MMDU: all images in the first turn
  EXPECT_EQ(b.n_new_images, 0);
  for (size_t i = 0; i < a.pieces.size(); ++i)
    EXPECT_EQ(b.pieces[i].text, a.pieces[i].text);
}

TEST(Workload, LimitsCapImagesTurnsAndOutput) {
  auto spec = load("mmdu");
  auto w = generate_workload(spec, spec.arrivals, fresh_seed(), {2, 2, 16});
  ASSERT_TRUE(w);
  for (const auto& r : w->requests) {
    EXPECT_LE(r.n_images(), 2);
    EXPECT_LT(r.turn, 2);
    EXPECT_LE(r.max_tokens, 16);
  }
}

TEST(Workload, BadYamlNamesTheLineAndTheFix) {
  auto bad = parse_workload_spec("name: x\nimages:\n  pool: 10\n  zipf: 1\n", "bad.yaml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.err().message.find("bad.yaml:4"), std::string::npos) << bad.err().message;
  EXPECT_NE(bad.err().message.find("zipf_exponent"), std::string::npos);
  auto range = parse_workload_spec("name: x\nimages: {pool: 0}\n", "r.yaml");
  ASSERT_FALSE(range);
  EXPECT_NE(range.err().message.find("images.pool"), std::string::npos);
  EXPECT_FALSE(load_workload_spec("no-such-workload", builtin_workload_dir()));
}

TEST(Zipf, FrequenciesFollowTheExponent) {
  rng r{fresh_seed()};
  for (double s : {0.0, 0.8, 1.2}) {
    zipf_sampler z{20, s};
    std::vector<int> counts(20);
    constexpr int n = 100000;
    for (int i = 0; i < n; ++i)
      ++counts[size_t(z.sample(r))];
    for (int k : {0, 1, 4, 19})
      EXPECT_NEAR(counts[size_t(k)] / double(n), z.probability(k), 0.01) << s << " " << k;
    // P(1) / P(k+1) = (k+1)^s
    EXPECT_NEAR(z.probability(0) / z.probability(3), std::pow(4.0, s), 1e-9);
  }
}

TEST(Arrivals, PoissonHasRateAndExponentialGaps) {
  arrival_spec a;
  a.rate = 20;
  a.duration_s = 500;
  auto t = arrival_times(a, fresh_seed());
  ASSERT_TRUE(t);
  const double n = double(t->size());
  EXPECT_NEAR(n / a.duration_s, a.rate, 0.05 * a.rate);
  std::vector<double> gaps;
  for (size_t i = 1; i < t->size(); ++i)
    gaps.push_back((*t)[i] - (*t)[i - 1]);
  double mean = 0, var = 0;
  for (double g : gaps)
    mean += g / double(gaps.size());
  for (double g : gaps)
    var += (g - mean) * (g - mean) / double(gaps.size());
  EXPECT_NEAR(std::sqrt(var) / mean, 1.0, 0.05); // CV of an exponential is 1
}

TEST(Arrivals, GammaBurstinessSetsTheGapVariation) {
  for (double b : {0.25, 4.0}) {
    arrival_spec a;
    a.process = arrival_process::gamma;
    a.burstiness = b;
    a.rate = 10;
    a.duration_s = 2000;
    auto t = arrival_times(a, fresh_seed());
    ASSERT_TRUE(t);
    EXPECT_NEAR(double(t->size()) / a.duration_s, a.rate, 0.08 * a.rate) << b;
    std::vector<double> gaps;
    for (size_t i = 1; i < t->size(); ++i)
      gaps.push_back((*t)[i] - (*t)[i - 1]);
    double mean = 0, var = 0;
    for (double g : gaps)
      mean += g / double(gaps.size());
    for (double g : gaps)
      var += (g - mean) * (g - mean) / double(gaps.size());
    EXPECT_NEAR(std::sqrt(var) / mean, 1.0 / std::sqrt(b), 0.1 / std::sqrt(b)) << b;
  }
}

TEST(Arrivals, RampAndCap) {
  arrival_spec a;
  a.ramp = {{0, 0}, {100, 40}}; // linear 0 → 40 req/s: 2000 expected
  a.duration_s = 100;
  auto t = arrival_times(a, fresh_seed());
  ASSERT_TRUE(t);
  EXPECT_NEAR(double(t->size()), 2000, 150);
  const auto late = std::count_if(t->begin(), t->end(), [](double x) { return x > 50; });
  EXPECT_NEAR(double(late) / double(t->size()), 0.75, 0.04); // 3/4 of the area
  a.max_requests = 10;
  auto capped = arrival_times(a, 1);
  ASSERT_TRUE(capped);
  EXPECT_EQ(capped->size(), 10u);
  arrival_spec bad;
  bad.rate = -1;
  EXPECT_FALSE(arrival_times(bad, 1));
}

} // namespace
} // namespace mosaic::sim

namespace mosaic::sim {
namespace {

// yaml-cpp 0.7 loops and allocates without bound on a stray ',' at block
// level (its issue #1040); workload files go through topology's guard.
TEST(workload_yaml, stray_comma_is_an_error_not_an_oom) {
  for (std::string_view text : {",", ",name: mmdu\n", "name: x\n,\n"}) {
    auto w = parse_workload_spec(text, "bad.yaml");
    ASSERT_FALSE(w) << text;
    EXPECT_NE(w.err().message.find("bad.yaml:"), std::string::npos) << w.err().message;
  }
}

} // namespace
} // namespace mosaic::sim
