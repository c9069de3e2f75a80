// The /metrics exposition: vLLM-compatible names, histogram buckets that
// count what was observed, cluster counters that follow the stats.

#include <map>
#include <sstream>

#include <gtest/gtest.h>

#include "server/metrics.hpp"

namespace mosaic::server {
namespace {

/// "name{labels} value" lines of the exposition → value (comments skipped).
std::map<std::string, double> samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#')
      continue;
    auto sp = line.rfind(' ');
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

TEST(metrics, exposes_vllm_compatible_names_with_help_and_type) {
  front_door_metrics m;
  const auto text = m.expose();
  for (const char* name :
       {"mosaic:time_to_first_token_seconds", "mosaic:inter_token_latency_seconds",
        "mosaic:e2e_request_latency_seconds", "mosaic:prompt_tokens_total",
        "mosaic:generation_tokens_total", "mosaic:image_tokens_total",
        "mosaic:prefix_cache_queries_total", "mosaic:prefix_cache_hits_total",
        "mosaic:library_queries_total", "mosaic:library_hits_total", "mosaic:library_lookups_total",
        "mosaic:library_lookup_hits_total", "mosaic:cached_prompt_tokens_total",
        "mosaic:library_load_seconds_total", "mosaic:library_bytes", "mosaic:kv_cache_usage_perc",
        "mosaic:num_requests_running", "mosaic:recomputed_token_fraction"}) {
    EXPECT_NE(text.find(std::string{"# TYPE "} + name), std::string::npos) << name;
    EXPECT_NE(text.find(std::string{"# HELP "} + name), std::string::npos) << name;
  }
}

TEST(metrics, request_outcome_counters_exist_at_zero_before_any_request) {
  front_door_metrics m;
  const auto s = samples(m.expose());
  EXPECT_EQ(s.at("mosaic:request_success_total{finished_reason=\"stop\"}"), 0);
  EXPECT_EQ(s.at("mosaic:request_success_total{finished_reason=\"length\"}"), 0);
  EXPECT_EQ(s.at("mosaic:request_failure_total{status=\"400\"}"), 0);
  EXPECT_EQ(s.at("mosaic:request_failure_total{status=\"503\"}"), 0);
}

TEST(metrics, vllm_names_carry_the_same_values_for_vllm_dashboards) {
  front_door_metrics m;
  request_tokens t;
  t.prompt = 12;
  t.generated = 5;
  m.request_started();
  m.observe_ttft(0.25);
  m.request_succeeded("stop", t);
  const auto s = samples(m.expose("builtin:small"));
  EXPECT_EQ(s.at("vllm:prompt_tokens_total{model_name=\"builtin:small\"}"), 12);
  EXPECT_EQ(s.at("vllm:generation_tokens_total{model_name=\"builtin:small\"}"), 5);
  EXPECT_EQ(s.at("mosaic:prompt_tokens_total"), 12);
  EXPECT_EQ(s.at("vllm:request_success_total{finished_reason=\"stop\",model_name=\"builtin:"
                 "small\"}"),
            1);
  EXPECT_EQ(s.at("vllm:time_to_first_token_seconds_count{model_name=\"builtin:small\"}"), 1);
  EXPECT_EQ(s.at("vllm:num_requests_running{model_name=\"builtin:small\"}"), 1);
  for (const char* name : {"vllm:kv_cache_usage_perc", "vllm:prefix_cache_queries_total",
                           "vllm:prefix_cache_hits_total", "vllm:num_requests_waiting",
                           "vllm:e2e_request_latency_seconds", "vllm:inter_token_latency_seconds",
                           "vllm:request_queue_time_seconds"})
    EXPECT_NE(m.expose("builtin:small").find(std::string{"# TYPE "} + name), std::string::npos)
        << name;
  // Without a model name: Mosaic's series only.
  EXPECT_EQ(m.expose().find("vllm:"), std::string::npos);
}

TEST(metrics, compression_reports_time_ttft_without_it_and_bytes_saved) {
  front_door_metrics m;
  m.observe_ttft_without_compression(0.2);
  m.observe_compression(0.05, 3'000'000);
  m.observe_compression(0.15, 1'000'000);
  const auto s = samples(m.expose());
  EXPECT_EQ(s.at("mosaic:time_to_first_token_without_compression_seconds_count"), 1);
  EXPECT_NEAR(s.at("mosaic:time_to_first_token_without_compression_seconds_sum"), 0.2, 1e-9);
  EXPECT_EQ(s.at("mosaic:kv_compression_seconds_count"), 2);
  EXPECT_NEAR(s.at("mosaic:kv_compression_seconds_sum"), 0.2, 1e-9);
  EXPECT_EQ(s.at("mosaic:kv_compression_saved_bytes_total"), 4'000'000);
}

TEST(metrics, histograms_and_counters_count_requests) {
  front_door_metrics m;
  m.observe_ttft(0.03);
  m.observe_ttft(3.0);
  m.observe_inter_token(0.012);
  m.request_succeeded("stop", {100, 5, 64, 64, 16});
  m.request_succeeded("length", {10, 7, 0, 0, 0});
  m.request_failed(503);
  auto s = samples(m.expose());
  EXPECT_EQ(s["mosaic:time_to_first_token_seconds_count"], 2);
  EXPECT_DOUBLE_EQ(s["mosaic:time_to_first_token_seconds_sum"], 3.03);
  EXPECT_EQ(s["mosaic:time_to_first_token_seconds_bucket{le=\"0.04\"}"], 1);
  EXPECT_EQ(s["mosaic:time_to_first_token_seconds_bucket{le=\"+Inf\"}"], 2);
  EXPECT_EQ(s["mosaic:inter_token_latency_seconds_count"], 1);
  EXPECT_EQ(s["mosaic:prompt_tokens_total"], 110);
  EXPECT_EQ(s["mosaic:generation_tokens_total"], 12);
  EXPECT_EQ(s["mosaic:image_tokens_total"], 64);
  EXPECT_DOUBLE_EQ(s["mosaic:recomputed_token_fraction"], 0.25);
  EXPECT_EQ(s["mosaic:request_success_total{finished_reason=\"stop\"}"], 1);
  EXPECT_EQ(s["mosaic:request_success_total{finished_reason=\"length\"}"], 1);
  EXPECT_EQ(s["mosaic:request_failure_total{status=\"503\"}"], 1);
}

TEST(metrics, cluster_counters_follow_successive_stats) {
  front_door_metrics m;
  service_stats a;
  a.prefix_queries = 10;
  a.prefix_hits = 4;
  a.ram_hits = 3;
  a.ram_misses = 7;
  a.disk_hits = 1;
  a.disk_misses = 6;
  a.kv_cache_usage = 0.5;
  a.library_disk_bytes = 4096;
  m.update_cluster(a);
  service_stats b = a;
  b.prefix_queries = 15;
  b.prefix_hits = 6;
  b.kv_cache_usage = 0.125;
  b.routed_by_affinity = 3;
  b.routed_images_held = 5;
  m.update_cluster(b);
  auto s = samples(m.expose());
  EXPECT_EQ(s["mosaic:prefix_cache_queries_total"], 15);
  EXPECT_EQ(s["mosaic:prefix_cache_hits_total"], 6);
  EXPECT_EQ(s["mosaic:library_queries_total{tier=\"ram\"}"], 10);
  EXPECT_EQ(s["mosaic:library_hits_total{tier=\"disk\"}"], 1);
  EXPECT_EQ(s["mosaic:library_bytes{tier=\"disk\"}"], 4096);
  EXPECT_DOUBLE_EQ(s["mosaic:kv_cache_usage_perc"], 0.125);
  EXPECT_EQ(s["mosaic:router_affinity_routed_total"], 3);
  EXPECT_EQ(s["mosaic:router_affinity_images_total"], 5);
}

TEST(metrics, running_gauge_tracks_requests_in_flight) {
  front_door_metrics m;
  m.request_started();
  m.request_started();
  m.request_ended();
  EXPECT_EQ(samples(m.expose())["mosaic:num_requests_running"], 1);
}

} // namespace
} // namespace mosaic::server
