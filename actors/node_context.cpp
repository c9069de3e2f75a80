#include "actors/node_context.hpp"

#include <algorithm>

#include "engine/kv_learned_compressor.hpp"
#include "engine/model/builtin_model.hpp"
#include "engine/model/model_config.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic::actors {

int64_t unix_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

result<std::unique_ptr<node_context>> node_context::create(node_options options) {
  auto ctx = std::make_unique<node_context>();
  ctx->options = std::move(options);
  const auto& o = ctx->options;
  if (o.block_size < 1 || o.decode_max_batch < 1 || o.max_inflight < 1 || o.max_queue < 0)
    return make_error(errc::invalid_argument,
                      "node options: block_size, decode_max_batch and max_inflight must be at "
                      "least 1 and max_queue at least 0");
  if (o.with_library && o.library_dir.empty())
    return make_error(errc::invalid_argument,
                      "node options: no KV library directory; set `library:` on the kv_loader");

  auto dir = resolve_model(o.model);
  if (!dir)
    return std::move(dir).err();
  auto cfg = load_model_config(*dir);
  if (!cfg)
    return std::move(cfg).err();
  // K and V, every layer, f32.
  const uint64_t bytes_per_block = uint64_t(2) * uint64_t(cfg->text.num_layers) *
                                   uint64_t(o.block_size) * uint64_t(cfg->text.kv_dim()) * 4;
  const auto n_blocks =
      static_cast<int>(std::clamp<uint64_t>(o.pool_bytes / bytes_per_block, 1, uint64_t(1) << 24));

  auto be = make_backend(o.device, o.threads);
  if (!be)
    return std::move(be).err();
  ctx->backend = std::move(*be);
  auto engine = llava_engine::load(o.model, *ctx->backend, kv_pool_options{n_blocks, o.block_size});
  if (!engine)
    return std::move(engine).err();
  ctx->engine = std::move(*engine);
  const auto& config = ctx->engine->config();
  auto enc = image_encoder::create(*ctx->backend, config, lookup_in(ctx->engine->weights()));
  if (!enc)
    return std::move(enc).err();
  ctx->encoder.emplace(std::move(*enc));
  ctx->model_fingerprint = ctx->engine->weights().fingerprint();
  std::optional<schedule_policy> schedule;
  if (o.schedule == "auto") {
    if (o.default_compression.enabled())
      schedule = schedule_policy{};
  } else if (o.schedule != "off") {
    auto p = parse_schedule_policy(o.schedule);
    if (!p)
      return make_error(errc::invalid_argument, "node options: schedule: ", p.err().message);
    schedule = *p;
  }
  // A learned compressor's group sizes size its requests' compressed KV
  // (the compress actor loads the MLPs on the first such request).
  auto learned = model_learned_groups(ctx->engine->model_dir());
  if (!learned)
    return make_error(learned.err().code,
                      "node options: the model's learned compressor: ", learned.err().message);
  auto stages = stage_admission::create(schedule, config.text, ctx->engine->pool(), o, *learned);
  if (!stages)
    return std::move(stages).err();
  ctx->stages = std::move(*stages);

  if (!o.with_library)
    return ctx;
  kv::library_options lo;
  lo.dir = o.library_dir;
  lo.model_fingerprint = ctx->model_fingerprint;
  lo.dtype = o.storage;
  lo.n_kv_heads = config.text.num_kv_heads;
  lo.head_dim = config.text.head_dim();
  lo.ram_budget_bytes = o.ram_budget_bytes;
  lo.disk_budget_bytes = o.disk_budget_bytes;
  lo.static_ttl = o.static_ttl;
  auto lib = kv::kv_library::open(std::move(lo));
  if (!lib)
    return std::move(lib).err();
  ctx->library = std::move(*lib);

  kv::loader_options lopt;
  lopt.mode = o.io;
  lopt.queue_depth = std::clamp(o.queue_depth, 1u, 32u);
  auto loader = kv::kv_loader::create(lopt);
  if (!loader)
    return std::move(loader).err();
  ctx->loader = std::move(*loader);
  return ctx;
}

const char* stage_name(request_stage s) {
  static constexpr const char* names[n_request_stages] = {
      "prepare",       "library_lookup", "resolve_images",    "image_decode",    "encode_lock_wait",
      "vision_encode", "prefill_queue",  "prefill_load_wait", "prefill_compute", "compile"};
  return size_t(s) < n_request_stages ? names[size_t(s)] : "unknown";
}

node_stats node_context::stats() const {
  node_stats s;
  const auto& c = counters;
  for (size_t i = 0; i < n_request_stages; ++i) {
    s.stage_us[i] = c.stage_us[i].load();
    s.stage_count[i] = c.stage_count[i].load();
  }
  s.requests = c.requests.load();
  s.completed = c.completed.load();
  s.failed = c.failed.load();
  s.overloaded = c.overloaded.load();
  s.cancelled = c.cancelled.load();
  s.waiting = c.admission_queue.load() + jobs.size();
  s.library_hits = c.library_hits.load();
  s.library_misses = c.library_misses.load();
  s.encoder_cache_hits = c.encoder_cache_hits.load();
  s.image_decodes = c.image_decodes.load();
  s.encodes = c.encodes.load();
  s.load_fallbacks = c.load_fallbacks.load();
  s.kv_send_unlocked_waits = c.kv_send_unlocked_waits.load();
  s.stores = c.stores.load();
  s.prefills = c.prefills.load();
  s.prefill_us = c.prefill_us.load();
  s.load_wait_us = c.load_wait_us.load();
  s.decode_steps = c.decode_steps.load();
  s.compressions = c.compressions.load();
  s.compress_us = c.compress_us.load();
  s.compress_saved_bytes = c.compress_saved_bytes.load();
  s.compress_fallbacks = c.compress_fallbacks.load();
  s.routed_by_affinity = c.routed_by_affinity.load();
  s.routed_images_held = c.routed_images_held.load();
  {
    std::lock_guard lock{routed_mutex};
    s.routed_per_worker = routed_per_worker;
  }
  if (engine)
    s.pool = engine->pool().stats();
  if (stages)
    s.stages = stages->stats();
  return s;
}

} // namespace mosaic::actors
