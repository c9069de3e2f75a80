#include "actors/compress_actor.hpp"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>
#include <unordered_map>

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

/// A task that arrived for a request the scheduler tracks.
struct arrived_task {
  compress_task_msg msg;
  caf::actor sink;
  caf::typed_response_promise<token_event_msg> rp;
};

struct compress_state {
  node_context* ctx = nullptr;
  caf::actor decode;
  std::unordered_map<uint64_t, arrived_task> arrived; ///< by request id
  std::optional<stage_batch> batch;                   ///< formed, waiting for its tasks or running
  bool timer_armed = false;
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

/// Compresses request `task`'s KV and publishes the result for decode
/// (node_context::sequences); `task` gains what compression did. Errors
/// are the request's.
status compress_one(compress_state& st, wire::decode_task& task) {
  auto* ctx = st.ctx;
  const uint64_t id = task.request_id;
  auto job = ctx->compress_jobs.take(id);
  if (!job)
    return make_error(errc::not_found, "no prefilled sequence to compress for request ",
                      std::to_string(id));
  if (deadline_passed(task.deadline_unix_ns))
    return make_error(errc::timeout, "request ", std::to_string(id),
                      " passed its deadline before compression");
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
    // M-RoPE: positions continue from the largest + 1 (link_plan::rope_delta).
    task.position = static_cast<uint32_t>(c->next_position + job->plan.rope_delta);
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
    return std::move(c).err();
  }
  job.reset(); // the plan's inputs (library entries, embeddings) go now
  ctx->stages->held(id, static_cast<int>(out.blocks().size()));
  if (!ctx->sequences.put_at(id, std::make_shared<kv_sequence>(std::move(out))))
    return make_error(errc::invalid_argument, id_in_use(id));
  return {};
}

/// Compresses and hands on to decode, answering `rp`.
void run_task(caf::stateful_actor<compress_state>* self, const compress_task_msg& m,
              const caf::actor& sink, caf::typed_response_promise<token_event_msg> rp) {
  auto& st = self->state;
  auto* ctx = st.ctx;
  auto task = read_decode_task(m->decode());
  const uint64_t id = task.request_id;
  if (auto ok = compress_one(st, task); !ok) {
    ctx->stages->release(id);
    rp.deliver(to_caf_error(ok.err()));
    return;
  }
  forward_into(self, rp, st.decode, task.deadline_unix_ns, decode_atom_v,
               make_decode_task_msg(task), sink, [ctx, id] {
                 ctx->sequences.take(id);
                 ctx->stages->release(id);
               });
}

/// With a scheduler: runs the compress batches it forms, once the task of
/// every request in the batch has arrived (the prefill worker sends it
/// before the batch that makes the request ready here ends).
void pump(caf::stateful_actor<compress_state>* self) {
  auto& st = self->state;
  auto* adm = st.ctx->stages.get();
  // Tasks whose request left the scheduler while they waited here (the
  // prefill worker gave up on them): answer and drop them.
  for (auto it = st.arrived.begin(); it != st.arrived.end();) {
    if (adm->tracks(it->first)) {
      ++it;
      continue;
    }
    st.ctx->compress_jobs.take(it->first);
    it->second.rp.deliver(to_caf_error(make_error(
        errc::cancelled, "request ", std::to_string(it->first), " left the compress queue")));
    it = st.arrived.erase(it);
  }
  for (;;) {
    if (!st.batch) {
      auto b = adm->next(stage_kind::compress);
      if (b.empty())
        break;
      st.batch = std::move(b);
    }
    for (uint64_t id : st.batch->requests)
      if (st.arrived.count(id) == 0 && adm->tracks(id))
        return; // its task is on its way
    // One compress_kv per request (the engine compresses one sequence at
    // a time): the batch is the set admitted together, run back to back.
    for (uint64_t id : st.batch->requests) {
      auto it = st.arrived.find(id);
      if (it == st.arrived.end())
        continue; // it left (failed or cancelled) meanwhile
      auto w = std::move(it->second);
      st.arrived.erase(it);
      run_task(self, w.msg, w.sink, w.rp);
    }
    adm->done(*st.batch);
    st.batch.reset();
    adm->wake(stage_kind::prefill);
  }
  const double in = adm->seconds_until_wake(stage_kind::compress);
  if (std::isfinite(in) && in > 0 && !st.timer_armed) {
    st.timer_armed = true;
    self->delayed_send(self,
                       std::chrono::microseconds{static_cast<int64_t>(std::max(in, 0.0) * 1e6) + 1},
                       wake_atom_v);
  }
}

caf::result<token_event_msg> on_compress(caf::stateful_actor<compress_state>* self,
                                         const compress_task_msg& m, const caf::actor& sink) {
  auto& st = self->state;
  auto* adm = st.ctx->stages.get();
  auto rp = self->make_response_promise<token_event_msg>();
  const uint64_t id = m->decode() ? m->decode()->request_id() : 0;
  if (adm->tracks(id)) {
    st.arrived.emplace(id, arrived_task{m, sink, rp});
    pump(self);
    return rp;
  }
  run_task(self, m, sink, rp);
  // Without a scheduler the prefill worker holds new requests while this
  // stage has work: tell it when that may have changed.
  adm->wake(stage_kind::prefill);
  return rp;
}

caf::behavior compress_actor(caf::stateful_actor<compress_state>* self, node_context* ctx,
                             caf::actor decode) {
  self->state.ctx = ctx;
  self->state.decode = std::move(decode);
  ctx->stages->attach(stage_kind::compress, self->address());
  return {
      [self](compress_atom, const compress_task_msg& m, const caf::actor& sink) {
        return on_compress(self, m, sink);
      },
      [self](wake_atom) {
        self->state.timer_armed = false;
        pump(self);
      },
  };
}

} // namespace

caf::actor spawn_compress(caf::actor_system& sys, node_context* ctx, caf::actor decode) {
  return sys.spawn<caf::detached>(compress_actor, ctx, std::move(decode));
}

} // namespace mosaic::actors
