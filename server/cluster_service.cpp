#include "server/cluster_service.hpp"

#include <chrono>

#include "server/request_convert.hpp"

namespace mosaic::server {

namespace {

/// actors::token_stream as a generation_stream. The cluster's stream ends
/// without a final event when the request fails before its first token;
/// that end becomes one error event here.
class cluster_stream final : public generation_stream {
public:
  explicit cluster_stream(std::shared_ptr<actors::token_stream> s) : s_(std::move(s)) {}

  std::optional<wire::token_event> next(std::chrono::milliseconds timeout) override {
    if (ended_)
      return std::nullopt;
    auto ev = s_->next(timeout);
    if (ev) {
      if (ev->finish != msg::FinishReason::none)
        ended_ = true;
      return ev;
    }
    if (!s_->finished())
      return std::nullopt;
    ended_ = true;
    wire::token_event last;
    last.request_id = s_->request_id();
    auto done = s_->wait(std::chrono::milliseconds{0});
    if (done) {
      last.finish =
          done->finish == msg::FinishReason::none ? msg::FinishReason::stop : done->finish;
      last.usage = done->usage;
      return last;
    }
    last.err = done.err();
    last.finish = done.err().code == errc::timeout     ? msg::FinishReason::timeout
                  : done.err().code == errc::cancelled ? msg::FinishReason::cancelled
                                                       : msg::FinishReason::error;
    return last;
  }

  void cancel() override { s_->cancel(); }

private:
  std::shared_ptr<actors::token_stream> s_;
  bool ended_ = false;
};

} // namespace

cluster_service::cluster_service(actors::local_cluster& cluster, std::string model)
  : cluster_(cluster) {
  const auto& cfg = cluster_.context().engine->config();
  info_.model = std::move(model);
  info_.context_length = cfg.text.context_length();
  info_.image_tokens = cfg.image_tokens();
  info_.chatml = cfg.qwen_vl();
  if (cfg.variable_image_tokens())
    info_.image_tokens_for = [cfg](int height, int width) {
      return cfg.image_tokens_for(height, width);
    };
  info_.created_unix_s = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
}

std::shared_ptr<generation_stream> cluster_service::submit(const wire::generate_request& request) {
  return std::make_shared<cluster_stream>(cluster_.submit(request));
}

result<stored_image> cluster_service::upload(std::string_view tenant,
                                             std::span<const uint8_t> image,
                                             std::chrono::milliseconds timeout) {
  auto up = cluster_.upload(tenant, image, timeout);
  if (!up)
    return std::move(up).err();
  return stored_image{key_to_hex(up->image_key), up->n_tokens};
}

status cluster_service::remove(std::string_view tenant, const library_key_bytes& key) {
  return cluster_.remove(tenant, key);
}

service_stats cluster_service::stats() const {
  const auto n = cluster_.stats();
  service_stats s;
  const uint64_t ended = n.completed + n.failed + n.cancelled;
  s.running = n.requests > ended ? n.requests - ended : 0;
  s.waiting = n.waiting;
  s.kv_cache_usage =
      n.pool.blocks_total > 0 ? double(n.pool.blocks_used) / double(n.pool.blocks_total) : 0.0;
  s.prefix_queries = n.pool.prefix_queries;
  s.prefix_hits = n.pool.prefix_hits;
  s.library_queries = n.library_hits + n.library_misses;
  s.library_hits = n.library_hits;
  s.load_seconds = double(n.load_wait_us) / 1e6;
  for (size_t i = 0; i < actors::n_request_stages; ++i)
    s.stage_seconds.emplace_back(actors::stage_name(actors::request_stage(i)),
                                 double(n.stage_us[i]) / 1e6);
  s.encodes = n.encodes;
  s.load_fallbacks = n.load_fallbacks;
  s.routed_by_affinity = n.routed_by_affinity;
  s.routed_images_held = n.routed_images_held;
  if (const auto& lib = cluster_.context().library) {
    const auto ls = lib->stats();
    s.ram_hits = ls.ram.hits;
    s.ram_misses = ls.ram.misses;
    s.disk_hits = ls.disk.hits;
    s.disk_misses = ls.disk.misses;
    s.library_ram_bytes = ls.ram_bytes;
    s.library_disk_bytes = ls.disk_bytes;
  }
  return s;
}

} // namespace mosaic::server
