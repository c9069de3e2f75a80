#include "server/metrics.hpp"

#include <map>
#include <utility>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace mosaic::server {

namespace {

using prometheus::Histogram;

Histogram::BucketBoundaries latency_buckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
          0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
}

Histogram::BucketBoundaries itl_buckets() {
  return {0.001, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
          0.1,   0.15,  0.2,  0.3,   0.4,  0.5,   0.75, 1.0,  2.5};
}

} // namespace

struct front_door_metrics::families {
  explicit families(prometheus::Registry& r)
    : ttft_f(prometheus::BuildHistogram()
                 .Name("mosaic:time_to_first_token_seconds")
                 .Help("Time from request arrival at the front door to its first token.")
                 .Register(r)),
      itl_f(prometheus::BuildHistogram()
                .Name("mosaic:inter_token_latency_seconds")
                .Help("Time between consecutive tokens of a request.")
                .Register(r)),
      e2e_f(prometheus::BuildHistogram()
                .Name("mosaic:e2e_request_latency_seconds")
                .Help("Time from request arrival to its last token.")
                .Register(r)),
      queue_f(prometheus::BuildHistogram()
                  .Name("mosaic:request_queue_time_seconds")
                  .Help("Time a request waited in the cluster's admission and prefill "
                        "queues before work on it started.")
                  .Register(r)),
      ttft_wo_f(prometheus::BuildHistogram()
                    .Name("mosaic:time_to_first_token_without_compression_seconds")
                    .Help("Time to first token minus the KV compress stage's time.")
                    .Register(r)),
      compress_f(prometheus::BuildHistogram()
                     .Name("mosaic:kv_compression_seconds")
                     .Help("Compress stage time of requests whose KV was compressed.")
                     .Register(r)),
      ttft(ttft_f.Add({}, latency_buckets())), itl(itl_f.Add({}, itl_buckets())),
      e2e(e2e_f.Add({}, latency_buckets())), queue(queue_f.Add({}, latency_buckets())),
      ttft_wo(ttft_wo_f.Add({}, latency_buckets())),
      compress(compress_f.Add({}, latency_buckets())),
      compress_saved(counter(r, "mosaic:kv_compression_saved_bytes_total",
                             "KV pool bytes freed by compression.")),
      prompt(counter(r, "mosaic:prompt_tokens_total", "Prompt tokens of finished requests.")),
      generation(counter(r, "mosaic:generation_tokens_total", "Generated tokens.")),
      image(counter(r, "mosaic:image_tokens_total", "Prompt tokens that are image tokens.")),
      reused(counter(r, "mosaic:reused_prompt_tokens_total",
                     "Prompt tokens whose KV came from a library.")),
      recomputed(counter(r, "mosaic:recomputed_prompt_tokens_total",
                         "Reused-image tokens recomputed by the reuse policy.")),
      cached(counter(r, "mosaic:cached_prompt_tokens_total",
                     "Prompt tokens whose KV was not computed at every layer (prefix-cache "
                     "hits + linked library image tokens left cached): usage's cached_tokens.")),
      prefix_queries(counter(r, "mosaic:prefix_cache_queries_total",
                             "Prompt tokens looked up in the KV pool's prefix cache.")),
      prefix_hits(counter(r, "mosaic:prefix_cache_hits_total",
                          "Prompt tokens found in the KV pool's prefix cache.")),
      library_queries(
          counter(r, "mosaic:library_lookups_total", "Images looked up in a KV library.")),
      library_hits(counter(r, "mosaic:library_lookup_hits_total", "Images found in a KV library.")),
      load_seconds(counter(r, "mosaic:library_load_seconds_total",
                           "Prefill time spent waiting for library KV layers.")),
      encodes(counter(r, "mosaic:vision_encodes_total", "Vision tower runs.")),
      load_fallbacks(counter(r, "mosaic:library_load_fallbacks_total",
                             "Library hits recomputed because their load failed.")),
      routed_affinity(counter(r, "mosaic:router_affinity_routed_total",
                              "Requests routed to a prefill worker that holds some of their "
                              "images.")),
      routed_images_held(counter(r, "mosaic:router_affinity_images_total",
                                 "Images of requests routed to a prefill worker that holds "
                                 "them.")),
      library_queries_f(prometheus::BuildCounter()
                            .Name("mosaic:library_queries_total")
                            .Help("Library lookups per tier.")
                            .Register(r)),
      library_hits_f(prometheus::BuildCounter()
                         .Name("mosaic:library_hits_total")
                         .Help("Library hits per tier.")
                         .Register(r)),
      ram_queries(library_queries_f.Add({{"tier", "ram"}})),
      disk_queries(library_queries_f.Add({{"tier", "disk"}})),
      ram_hits(library_hits_f.Add({{"tier", "ram"}})),
      disk_hits(library_hits_f.Add({{"tier", "disk"}})),
      library_bytes_f(prometheus::BuildGauge()
                          .Name("mosaic:library_bytes")
                          .Help("Bytes stored in the KV library per tier.")
                          .Register(r)),
      ram_bytes(library_bytes_f.Add({{"tier", "ram"}})),
      disk_bytes(library_bytes_f.Add({{"tier", "disk"}})),
      kv_usage(gauge(r, "mosaic:kv_cache_usage_perc", "KV pool usage, 0 to 1.")),
      running(gauge(r, "mosaic:num_requests_running",
                    "Generation requests in flight at the front door.")),
      waiting(gauge(r, "mosaic:num_requests_waiting",
                    "Requests in the cluster's admission and prefill queues.")),
      recomputed_fraction(gauge(r, "mosaic:recomputed_token_fraction",
                                "Recomputed / reused prompt tokens since start.")),
      success_f(prometheus::BuildCounter()
                    .Name("mosaic:request_success_total")
                    .Help("Requests answered, by finish reason.")
                    .Register(r)),
      failure_f(prometheus::BuildCounter()
                    .Name("mosaic:request_failure_total")
                    .Help("Requests answered with an HTTP error, by status.")
                    .Register(r)),
      stage_f(prometheus::BuildCounter()
                  .Name("mosaic:request_stage_seconds_total")
                  .Help("Where requests' time went on the node, by stage (docs/server.md).")
                  .Register(r)) {}

  static prometheus::Counter& counter(prometheus::Registry& r, const char* name, const char* help) {
    return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
  }
  static prometheus::Gauge& gauge(prometheus::Registry& r, const char* name, const char* help) {
    return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
  }

  prometheus::Family<Histogram>& ttft_f;
  prometheus::Family<Histogram>& itl_f;
  prometheus::Family<Histogram>& e2e_f;
  prometheus::Family<Histogram>& queue_f;
  prometheus::Family<Histogram>& ttft_wo_f;
  prometheus::Family<Histogram>& compress_f;
  Histogram& ttft;
  Histogram& itl;
  Histogram& e2e;
  Histogram& queue;
  Histogram& ttft_wo;
  Histogram& compress;
  prometheus::Counter& compress_saved;
  prometheus::Counter& prompt;
  prometheus::Counter& generation;
  prometheus::Counter& image;
  prometheus::Counter& reused;
  prometheus::Counter& recomputed;
  prometheus::Counter& cached;
  prometheus::Counter& prefix_queries;
  prometheus::Counter& prefix_hits;
  prometheus::Counter& library_queries;
  prometheus::Counter& library_hits;
  prometheus::Counter& load_seconds;
  prometheus::Counter& encodes;
  prometheus::Counter& load_fallbacks;
  prometheus::Counter& routed_affinity;
  prometheus::Counter& routed_images_held;
  prometheus::Family<prometheus::Counter>& library_queries_f;
  prometheus::Family<prometheus::Counter>& library_hits_f;
  prometheus::Counter& ram_queries;
  prometheus::Counter& disk_queries;
  prometheus::Counter& ram_hits;
  prometheus::Counter& disk_hits;
  prometheus::Family<prometheus::Gauge>& library_bytes_f;
  prometheus::Gauge& ram_bytes;
  prometheus::Gauge& disk_bytes;
  prometheus::Gauge& kv_usage;
  prometheus::Gauge& running;
  prometheus::Gauge& waiting;
  prometheus::Gauge& recomputed_fraction;
  prometheus::Family<prometheus::Counter>& success_f;
  prometheus::Family<prometheus::Counter>& failure_f;
  prometheus::Family<prometheus::Counter>& stage_f;
};

front_door_metrics::front_door_metrics()
  : registry_(std::make_shared<prometheus::Registry>()),
    f_(std::make_unique<families>(*registry_)) {
  // Exported at 0 from the start, as vLLM does, so that a rate() over the
  // first event works and dashboards see the series before any traffic.
  for (const char* reason : {"stop", "length"})
    f_->success_f.Add({{"finished_reason", reason}});
  for (int status : {400, 401, 404, 408, 413, 429, 500, 503, 504})
    f_->failure_f.Add({{"status", std::to_string(status)}});
}

front_door_metrics::~front_door_metrics() = default;

void front_door_metrics::observe_ttft(double seconds) {
  f_->ttft.Observe(seconds);
}

void front_door_metrics::observe_ttft_without_compression(double seconds) {
  f_->ttft_wo.Observe(seconds);
}

void front_door_metrics::observe_compression(double compress_seconds, uint64_t kv_bytes_saved) {
  f_->compress.Observe(compress_seconds);
  f_->compress_saved.Increment(static_cast<double>(kv_bytes_saved));
}
void front_door_metrics::observe_inter_token(double seconds) {
  f_->itl.Observe(seconds);
}
void front_door_metrics::observe_e2e(double seconds) {
  f_->e2e.Observe(seconds);
}
void front_door_metrics::observe_queue_time(double seconds) {
  f_->queue.Observe(seconds);
}
void front_door_metrics::request_started() {
  f_->running.Increment();
}
void front_door_metrics::request_ended() {
  f_->running.Decrement();
}

void front_door_metrics::request_succeeded(std::string_view finish_reason,
                                           const request_tokens& t) {
  f_->prompt.Increment(t.prompt);
  f_->generation.Increment(t.generated);
  f_->image.Increment(t.image);
  f_->reused.Increment(t.reused);
  f_->recomputed.Increment(t.recomputed);
  f_->cached.Increment(t.cached);
  std::lock_guard lock{mutex_};
  f_->success_f.Add({{"finished_reason", std::string{finish_reason}}}).Increment();
  reused_ += t.reused;
  recomputed_ += t.recomputed;
  f_->recomputed_fraction.Set(reused_ == 0 ? 0.0 : double(recomputed_) / double(reused_));
}

void front_door_metrics::request_failed(int http_status, uint64_t generated) {
  f_->generation.Increment(double(generated));
  std::lock_guard lock{mutex_};
  f_->failure_f.Add({{"status", std::to_string(http_status)}}).Increment();
}

void front_door_metrics::update_cluster(const service_stats& s) {
  std::lock_guard lock{mutex_};
  auto advance = [](prometheus::Counter& c, uint64_t now, uint64_t before) {
    if (now > before)
      c.Increment(double(now - before));
  };
  advance(f_->prefix_queries, s.prefix_queries, last_.prefix_queries);
  advance(f_->prefix_hits, s.prefix_hits, last_.prefix_hits);
  advance(f_->library_queries, s.library_queries, last_.library_queries);
  advance(f_->library_hits, s.library_hits, last_.library_hits);
  advance(f_->ram_queries, s.ram_hits + s.ram_misses, last_.ram_hits + last_.ram_misses);
  advance(f_->disk_queries, s.disk_hits + s.disk_misses, last_.disk_hits + last_.disk_misses);
  advance(f_->ram_hits, s.ram_hits, last_.ram_hits);
  advance(f_->disk_hits, s.disk_hits, last_.disk_hits);
  advance(f_->encodes, s.encodes, last_.encodes);
  advance(f_->load_fallbacks, s.load_fallbacks, last_.load_fallbacks);
  advance(f_->routed_affinity, s.routed_by_affinity, last_.routed_by_affinity);
  advance(f_->routed_images_held, s.routed_images_held, last_.routed_images_held);
  if (s.load_seconds > last_.load_seconds)
    f_->load_seconds.Increment(s.load_seconds - last_.load_seconds);
  for (size_t i = 0; i < s.stage_seconds.size(); ++i) {
    const auto& [stage, seconds] = s.stage_seconds[i];
    const double before = i < last_.stage_seconds.size() && last_.stage_seconds[i].first == stage
                              ? last_.stage_seconds[i].second
                              : 0.0;
    auto& c = f_->stage_f.Add({{"stage", stage}}); // the series, created at its first sight
    if (seconds > before)
      c.Increment(seconds - before);
  }
  f_->ram_bytes.Set(double(s.library_ram_bytes));
  f_->disk_bytes.Set(double(s.library_disk_bytes));
  f_->kv_usage.Set(s.kv_cache_usage);
  f_->waiting.Set(double(s.waiting));
  last_ = s;
}

namespace {

/// Mosaic's series that vLLM (V1) exports too, and vLLM's names for them.
constexpr std::pair<std::string_view, std::string_view> vllm_names[] = {
    {"mosaic:time_to_first_token_seconds", "vllm:time_to_first_token_seconds"},
    {"mosaic:inter_token_latency_seconds", "vllm:inter_token_latency_seconds"},
    {"mosaic:e2e_request_latency_seconds", "vllm:e2e_request_latency_seconds"},
    {"mosaic:request_queue_time_seconds", "vllm:request_queue_time_seconds"},
    {"mosaic:prompt_tokens_total", "vllm:prompt_tokens_total"},
    {"mosaic:generation_tokens_total", "vllm:generation_tokens_total"},
    {"mosaic:request_success_total", "vllm:request_success_total"},
    {"mosaic:num_requests_running", "vllm:num_requests_running"},
    {"mosaic:num_requests_waiting", "vllm:num_requests_waiting"},
    {"mosaic:kv_cache_usage_perc", "vllm:kv_cache_usage_perc"},
    {"mosaic:prefix_cache_queries_total", "vllm:prefix_cache_queries_total"},
    {"mosaic:prefix_cache_hits_total", "vllm:prefix_cache_hits_total"},
};

} // namespace

std::string front_door_metrics::expose(std::string_view model_name) const {
  auto collected = registry_->Collect();
  if (!model_name.empty()) {
    const size_t n = collected.size();
    for (size_t i = 0; i < n; ++i) {
      for (const auto& [ours, theirs] : vllm_names) {
        if (collected[i].name != ours)
          continue;
        auto copy = collected[i];
        copy.name = std::string{theirs};
        for (auto& m : copy.metric)
          m.label.push_back({"model_name", std::string{model_name}});
        collected.push_back(std::move(copy));
      }
    }
  }
  return prometheus::TextSerializer{}.Serialize(collected);
}

} // namespace mosaic::server
