#pragma once

// What the front door needs from the serving cluster, as an interface: the
// HTTP server (and its unit tests) talk to this, `cluster_service` adapts
// actors::local_cluster to it. The front door never touches the engine.
//
//   auto stream = service.submit(request);          // never blocks
//   while (auto ev = stream->next(100ms)) ...       // token events, last has finish
//   stream->cancel();                               // the client went away

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "engine/error.hpp"
#include "messages/builders.hpp"

namespace mosaic::server {

/// The token events of one request, in order. The last event carries a
/// finish reason other than `none` (and `err` when it is `error`).
class generation_stream {
public:
  virtual ~generation_stream() = default;
  /// The next event; nullopt when none came within `timeout`.
  virtual std::optional<wire::token_event> next(std::chrono::milliseconds timeout) = 0;
  /// Stops the request; its stream then ends with finish `cancelled`.
  virtual void cancel() = 0;
};

/// Static facts about the served model.
struct service_info {
  std::string model;          ///< the id /v1/models lists
  int context_length = 4096;  ///< prompt + generated tokens
  int image_tokens = 576;     ///< prompt tokens one image takes (at most)
  int64_t created_unix_s = 0; ///< when the service started
  /// The tokens of an image of height x width pixels, where they depend on
  /// its size (LLaVA-1.6); empty: every image takes image_tokens.
  std::function<result<int>(int height, int width)> image_tokens_for;
  /// The model's chat format: false renders chat turns in LLaVA's
  /// "USER: ... ASSISTANT:" format (the cluster wraps the last turn), true
  /// renders the whole conversation in ChatML as Qwen2-VL's template does
  /// (the cluster takes a prompt that starts with <|im_start|> as it is).
  bool chatml = false;
};

/// Cluster-side numbers for /metrics (cumulative counters and gauges).
struct service_stats {
  uint64_t running = 0;         ///< requests admitted and not finished
  uint64_t waiting = 0;         ///< requests not started yet (admission and prefill queues)
  double kv_cache_usage = 0.0;  ///< fraction of KV pool blocks in use, 0..1
  uint64_t prefix_queries = 0;  ///< prompt tokens looked up in the prefix cache
  uint64_t prefix_hits = 0;     ///< of which found
  uint64_t library_queries = 0; ///< images looked up in a library
  uint64_t library_hits = 0;    ///< of which found
  uint64_t ram_hits = 0, ram_misses = 0;   ///< library RAM tier
  uint64_t disk_hits = 0, disk_misses = 0; ///< library disk tier
  double load_seconds = 0.0;               ///< prefill time spent waiting for library layers
  uint64_t library_ram_bytes = 0;
  uint64_t library_disk_bytes = 0;
  uint64_t encodes = 0;
  uint64_t load_fallbacks = 0; ///< library hits recomputed because a load failed
  /// Requests the router sent to a prefill worker known to hold at least
  /// one of their images, and those images (actors/prefill_routing.hpp).
  uint64_t routed_by_affinity = 0;
  uint64_t routed_images_held = 0;
  /// Where requests' time went, per stage (actors' request_stage names),
  /// cumulative seconds; mosaic:request_stage_seconds_total{stage}.
  std::vector<std::pair<std::string, double>> stage_seconds;
};

/// An image stored in a tenant's static library.
struct stored_image {
  std::string id; ///< 64 hex characters (its library key)
  uint32_t n_tokens = 0;
};

class generation_service {
public:
  virtual ~generation_service() = default;
  virtual service_info info() const = 0;
  /// Starts a request (its tenant, deadline and policy are set); never blocks.
  virtual std::shared_ptr<generation_stream> submit(const wire::generate_request& request) = 0;
  /// Encodes `image` (PNG/JPEG bytes), compiles its KV and stores it in
  /// `tenant`'s static library.
  virtual result<stored_image> upload(std::string_view tenant, std::span<const uint8_t> image,
                                      std::chrono::milliseconds timeout) = 0;
  /// Deletes one of `tenant`'s own images; not_found for anyone else's.
  virtual status remove(std::string_view tenant, const library_key_bytes& key) = 0;
  virtual service_stats stats() const = 0;
};

} // namespace mosaic::server
