#pragma once

// Prometheus metrics of the front door, with vLLM-compatible names
// (`mosaic:` instead of `vllm:`). Latency histograms are measured here,
// at the front door (TTFT includes everything behind it); cluster-side
// numbers (library tiers, KV usage) are copied from service_stats each
// time /metrics is scraped.

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "server/generation_service.hpp"

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
} // namespace prometheus

namespace mosaic::server {

/// Token counts of one finished request.
struct request_tokens {
  uint32_t prompt = 0; ///< every prompt token (image tokens included)
  uint32_t generated = 0;
  uint32_t image = 0;      ///< prompt tokens that are image tokens
  uint32_t reused = 0;     ///< prompt tokens whose KV came from a library
  uint32_t recomputed = 0; ///< reused-image tokens recomputed by the policy
  uint32_t cached = 0;     ///< usage.prompt_tokens_details.cached_tokens
};

class front_door_metrics {
public:
  front_door_metrics();
  ~front_door_metrics();
  front_door_metrics(const front_door_metrics&) = delete;
  front_door_metrics& operator=(const front_door_metrics&) = delete;

  void observe_ttft(double seconds);
  void observe_inter_token(double seconds);
  void observe_e2e(double seconds);
  /// Time a finished request waited before work on it started (the
  /// cluster's admission and prefill queues; token_event::queue_us).
  void observe_queue_time(double seconds);
  /// TTFT minus the compress stage's time (= TTFT for uncompressed requests).
  void observe_ttft_without_compression(double seconds);
  /// A request went through the compress stage (FastCache).
  void observe_compression(double compress_seconds, uint64_t kv_bytes_saved);
  /// A generation request entered / left the front door.
  void request_started();
  void request_ended();
  /// A request that produced an answer ("stop" or "length").
  void request_succeeded(std::string_view finish_reason, const request_tokens& tokens);
  /// A request answered with an HTTP error (label: the status code);
  /// `generated`: tokens it was sent before the error (a cut stream).
  void request_failed(int http_status, uint64_t generated = 0);
  /// Copies cluster-side counters and gauges (counters advance by the
  /// difference to the previous call).
  void update_cluster(const service_stats& stats);

  /// The Prometheus text exposition format (version 0.0.4). With a model
  /// name, the series vLLM also exports appear a second time under
  /// vLLM's names (`vllm:…`, labelled `model_name`), so that dashboards and
  /// tools built for vLLM read Mosaic; Mosaic's own `mosaic:…` series stay.
  std::string expose(std::string_view model_name = {}) const;

private:
  struct families;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<families> f_;
  mutable std::mutex mutex_; // guards last_ and the failure/success label maps
  service_stats last_{};
  uint64_t reused_ = 0, recomputed_ = 0;
};

} // namespace mosaic::server
