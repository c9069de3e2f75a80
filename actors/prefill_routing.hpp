#pragma once

// Which prefill worker gets a request (the router's choice when a node or
// cluster runs several). Pure functions and one bounded index, no actors:
// the router (router_actor.cpp) keeps the state, these decide.
//
// Cache-aware routing, after Dynamo's KV router and Mooncake's Conductor:
// each worker that is up gets a cost
//
//   cost = miss_weight * (image tokens of the request it does not hold)
//        + load_weight * (prompt tokens of the requests in flight on it)
//
// and the cheapest wins (ties: fewer requests in flight, then the next in
// round-robin order). The first term is what the worker would encode and
// compute again instead of loading from its KV library; the second keeps a
// worker that holds every hot image from taking the whole flood. With the
// default weights (1, 1) a worker that holds the request's images is
// preferred until it has about one more request's worth of prompt tokens
// in flight than another.
//
// What a worker holds is known approximately (Dynamo's "approximate"
// mode): `affinity_index` remembers, per worker, the tenant-scoped keys of
// the images of requests it completed and of images uploaded to it (the
// worker then holds them: a hit was in its library, a miss is stored there
// after use, an upload is compiled into it). It is bounded per worker
// (least recently routed keys leave first), so a stale entry costs at worst
// one miss where a hit was expected.

#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/model/sha256.hpp"
#include "messages/builders.hpp"
#include "topology/topology.hpp"

namespace mosaic::actors {

/// The key the router files an image under: SHA-256 over the tenant and
/// the image's identity (its ImageKey, or the SHA-256 of its encoded
/// bytes). Library entries are private to a tenant (static library), so
/// one tenant's keys never make another tenant's request look like a hit.
digest route_key_of_image_key(std::string_view tenant, const digest& image_key);
digest route_key_of_bytes(std::string_view tenant, std::span<const uint8_t> encoded);

/// The route keys of a request's images, in prompt order.
std::vector<digest> route_keys(const wire::generate_request& req);

/// How costs weigh (see the top of this file).
struct route_weights {
  double miss_weight = 1.0; ///< per image token the worker would have to compute again
  double load_weight = 1.0; ///< per prompt token in flight on the worker
};

/// One worker as the router sees it when a request arrives.
struct route_candidate {
  bool up = true;
  uint32_t inflight_requests = 0;
  uint64_t inflight_tokens = 0; ///< prompt tokens of its requests in flight
  uint32_t held_images = 0;     ///< of the request's images, those it is known to hold
};

struct route_choice {
  size_t worker = 0;
  double cost = 0.0;
  uint32_t held_images = 0; ///< the chosen worker's (0 unless cache_aware)
};

/// Picks a worker for a request of `n_images` images of `image_tokens`
/// tokens each. `strategy`: least_loaded (fewest prompt tokens in flight,
/// then fewest requests), round_robin (the next up worker after
/// `rr_next`), cache_aware (the cost above). Workers that are down are
/// skipped; nullopt when none is up.
std::optional<route_choice> pick_prefill(std::span<const route_candidate> workers,
                                         router_strategy strategy, const route_weights& weights,
                                         uint32_t n_images, uint32_t image_tokens, size_t rr_next);

/// Per worker, the route keys it is known to hold; at most
/// `per_worker_capacity` keys each (least recently touched leave first).
class affinity_index {
public:
  explicit affinity_index(size_t workers = 0, size_t per_worker_capacity = 4096);
  void resize(size_t workers);
  /// `worker` holds `key` (now, or again: it becomes the most recent).
  void record(size_t worker, const digest& key);
  bool holds(size_t worker, const digest& key) const;
  /// How many of `keys` `worker` holds.
  uint32_t count_held(size_t worker, std::span<const digest> keys) const;
  /// Drops everything `worker` held (it restarted, or its library is gone).
  void forget(size_t worker);
  size_t size(size_t worker) const;
  size_t capacity() const { return capacity_; }

private:
  struct digest_hash {
    size_t operator()(const digest& d) const noexcept;
  };
  struct worker_keys {
    std::list<digest> order; ///< most recent first
    std::unordered_map<digest, std::list<digest>::iterator, digest_hash> where;
  };
  std::vector<worker_keys> workers_;
  size_t capacity_;
};

} // namespace mosaic::actors
