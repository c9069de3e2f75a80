#include "actors/compress_actor.hpp"

#include <chrono>
#include <filesystem>
#include <optional>

#include <caf/all.hpp>

#include "actors/forward_request.hpp"
#include "actors/pipeline_messages.hpp"
#include "engine/kv_compression.hpp"
#include "engine/kv_learned_compressor.hpp"
#include "messages/error_convert.hpp"
#include "messages/readers.hpp"

namespace mosaic::actors {

namespace {

using steady = std::chrono::steady_clock;

struct compress_state {
  node_context* ctx = nullptr;
  caf::actor decode;
  /// The model's learned compressor, loaded on the first "learned" request.
  std::optional<learned_compressor> learned;
  static inline const char* name = "compress";
};

/// Runs the job's compressor (the caller holds compute_mutex).
result<compressed_kv> run_compressor(compress_state& st, compress_job& job) {
  auto& engine = *st.ctx->engine;
  if (job.compression.method != compression_method::learned)
    return compress_kv(engine.backend(), engine.decoder(), engine.pool(), job.sequence, job.plan,
                       job.compression);
  if (!st.learned) {
    const auto file = engine.model_dir() / learned_compressor_file;
    if (!std::filesystem::exists(file))
      return make_error(errc::unsupported, "compression \"learned\": the model has no ",
                        learned_compressor_file, " in ", engine.model_dir().string(),
                        " (train one with tools/fastcache_train.py)");
    const auto& t = engine.config().text;
    auto c = learned_compressor::load(engine.backend(), file, t.num_layers, t.kv_dim());
    if (!c)
      return std::move(c).err();
    st.learned = std::move(*c);
  }
  return compress_kv_learned(engine.backend(), engine.pool(), job.sequence, job.plan, *st.learned);
}

caf::result<token_event_msg> on_compress(caf::stateful_actor<compress_state>* self,
                                         const compress_task_msg& m, const caf::actor& sink) {
  auto& st = self->state;
  auto* ctx = st.ctx;
  auto task = read_decode_task(m->decode());
  const uint64_t id = task.request_id;
  auto job = ctx->compress_jobs.take(id);
  if (!job)
    return to_caf_error(make_error(
        errc::not_found, "no prefilled sequence to compress for request ", std::to_string(id)));
  if (deadline_passed(task.deadline_unix_ns))
    return to_caf_error(make_error(errc::timeout, "request ", std::to_string(id),
                                   " passed its deadline before compression"));
  result<compressed_kv> c = make_error(errc::internal, "not run");
  uint64_t us = 0; // compute only, not the wait for the device
  {
    std::lock_guard lock{ctx->compute_mutex};
    const auto t0 = steady::now();
    c = run_compressor(st, *job);
    us = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - t0).count());
  }
  kv_sequence out;
  if (c) {
    const auto& s = c->stats;
    msg::CompressionUsage usage{static_cast<uint32_t>(s.tokens_before),
                                static_cast<uint32_t>(s.tokens_after), s.bytes_before,
                                s.bytes_after, us};
    task.compression = usage;
    task.position = static_cast<uint32_t>(c->next_position);
    task.kv.n_tokens = static_cast<uint32_t>(s.tokens_after);
    out = std::move(c->sequence);
    ctx->counters.compressions++;
    ctx->counters.compress_us += us;
    ctx->counters.compress_saved_bytes += s.bytes_before - std::min(s.bytes_before, s.bytes_after);
  } else if (c.err().code == errc::out_of_memory) {
    // No room for the compressed copy next to the original: decode the
    // original (compress_kv left it untouched).
    ctx->counters.compress_fallbacks++;
    out = std::move(job->sequence);
  } else {
    return to_caf_error(c.err());
  }
  job.reset(); // the plan's inputs (library entries, embeddings) go now
  ctx->sequences.put_at(id, std::make_shared<kv_sequence>(std::move(out)));
  return forward_request(self, st.decode, task.deadline_unix_ns, decode_atom_v,
                         make_decode_task_msg(task), sink, [ctx, id] { ctx->sequences.take(id); });
}

caf::behavior compress_actor(caf::stateful_actor<compress_state>* self, node_context* ctx,
                             caf::actor decode) {
  self->state.ctx = ctx;
  self->state.decode = std::move(decode);
  return {
      [self](compress_atom, const compress_task_msg& m, const caf::actor& sink) {
        return on_compress(self, m, sink);
      },
  };
}

} // namespace

caf::actor spawn_compress(caf::actor_system& sys, node_context* ctx, caf::actor decode) {
  return sys.spawn<caf::detached>(compress_actor, ctx, std::move(decode));
}

} // namespace mosaic::actors
