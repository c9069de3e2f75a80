#include "actors/prefill_routing.hpp"

#include <cstring>
#include <limits>
#include <variant>

namespace mosaic::actors {

namespace {

/// Length-prefixed fields, so that (tenant, key) pairs cannot collide.
digest tenant_scoped(std::string_view tenant, std::string_view kind, const digest& id) {
  sha256_hasher h;
  h.update(std::string_view{"mosaic.route.v1"});
  h.update_u64(tenant.size());
  h.update(tenant);
  h.update(kind);
  h.update(std::span<const uint8_t>{id.data(), id.size()});
  return h.finish();
}

} // namespace

digest route_key_of_image_key(std::string_view tenant, const digest& image_key) {
  return tenant_scoped(tenant, "key", image_key);
}

digest route_key_of_bytes(std::string_view tenant, std::span<const uint8_t> encoded) {
  return tenant_scoped(tenant, "bytes", sha256(encoded));
}

std::vector<digest> route_keys(const wire::generate_request& req) {
  std::vector<digest> keys;
  for (const auto& seg : req.segments) {
    if (const auto* k = std::get_if<wire::image_key_segment>(&seg))
      keys.push_back(route_key_of_image_key(req.tenant, k->key));
    else if (const auto* d = std::get_if<wire::image_data_segment>(&seg))
      keys.push_back(route_key_of_bytes(req.tenant, d->encoded));
  }
  return keys;
}

std::optional<route_choice> pick_prefill(std::span<const route_candidate> workers,
                                         router_strategy strategy, const route_weights& weights,
                                         uint32_t n_images, uint32_t image_tokens, size_t rr_next) {
  const size_t n = workers.size();
  std::optional<route_choice> best;
  uint32_t best_requests = 0;
  // Visiting from rr_next makes the first of equal candidates the next in
  // round-robin order, so ties spread instead of piling on worker 0.
  for (size_t step = 0; step < n; ++step) {
    const size_t i = (rr_next + step) % n;
    const auto& w = workers[i];
    if (!w.up)
      continue;
    if (strategy == router_strategy::round_robin)
      return route_choice{i, 0.0, 0};
    route_choice c{i, static_cast<double>(w.inflight_tokens), 0};
    if (strategy == router_strategy::cache_aware) {
      const uint32_t held = std::min(w.held_images, n_images);
      const double missing = double(n_images - held) * double(image_tokens);
      c.cost = weights.miss_weight * missing + weights.load_weight * double(w.inflight_tokens);
      c.held_images = held;
    }
    if (!best || c.cost < best->cost ||
        (c.cost == best->cost && w.inflight_requests < best_requests)) {
      best = c;
      best_requests = w.inflight_requests;
    }
  }
  return best;
}

// -- affinity_index -----------------------------------------------------------------

size_t affinity_index::digest_hash::operator()(const digest& d) const noexcept {
  size_t h = 0;
  std::memcpy(&h, d.data(), sizeof h); // already uniformly distributed
  return h;
}

affinity_index::affinity_index(size_t workers, size_t per_worker_capacity)
  : workers_(workers), capacity_(std::max<size_t>(per_worker_capacity, 1)) {}

void affinity_index::resize(size_t workers) {
  workers_.resize(workers);
}

void affinity_index::record(size_t worker, const digest& key) {
  if (worker >= workers_.size())
    return;
  auto& w = workers_[worker];
  if (auto it = w.where.find(key); it != w.where.end()) {
    w.order.splice(w.order.begin(), w.order, it->second);
    return;
  }
  w.order.push_front(key);
  w.where.emplace(key, w.order.begin());
  if (w.order.size() > capacity_) {
    w.where.erase(w.order.back());
    w.order.pop_back();
  }
}

bool affinity_index::holds(size_t worker, const digest& key) const {
  return worker < workers_.size() && workers_[worker].where.count(key) != 0;
}

uint32_t affinity_index::count_held(size_t worker, std::span<const digest> keys) const {
  uint32_t n = 0;
  for (const auto& k : keys)
    n += holds(worker, k) ? 1 : 0;
  return n;
}

void affinity_index::forget(size_t worker) {
  if (worker >= workers_.size())
    return;
  workers_[worker].order.clear();
  workers_[worker].where.clear();
}

size_t affinity_index::size(size_t worker) const {
  return worker < workers_.size() ? workers_[worker].order.size() : 0;
}

} // namespace mosaic::actors
