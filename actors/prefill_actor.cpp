#include "actors/prefill_actor.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <limits>
#include <optional>
#include <random>
#include <unordered_map>

#include <caf/all.hpp>

#include "actors/forward_request.hpp"
#include "actors/kv_relay.hpp"
#include "actors/pipeline_messages.hpp"
#include "engine/sampler.hpp"
#include "messages/error_convert.hpp"

namespace mosaic::actors {

namespace {

using steady = std::chrono::steady_clock;

uint64_t micros_since(steady::time_point t0) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - t0).count());
}

/// A request waiting in this stage.
struct held_task {
  prefill_task_msg msg;
  caf::actor sink;
  caf::typed_response_promise<token_event_msg> rp;
};

struct prefill_state {
  node_context* ctx = nullptr;
  prefill_peers peers;
  /// With a scheduler: requests queued in it, by id.
  std::unordered_map<uint64_t, held_task> waiting;
  /// Without: requests held while the compress stage has work.
  std::deque<held_task> held;
  bool timer_armed = false;
  bool pump_pending = false; ///< a wake_atom to self is queued
  static inline const char* name = "prefill";
};

/// What one request's pass produced.
struct pass_outcome {
  kv_sequence sequence;
  int32_t first_token = 0;
  int prompt_tokens = 0;
  /// M-RoPE: decode positions are index + rope_delta (prefill_result).
  int32_t rope_delta = 0;
  prefill_stats stats;
  int prefix_cached_tokens = 0;                    ///< adopted from the prefix cache
  std::vector<wire::token_logprob> first_logprobs; ///< sampling.logprobs >= 0
  /// Requests with a compress stage: the plan the pass ran and what keeps
  /// its image embeddings alive (compress_job).
  link_plan plan;
  std::vector<std::shared_ptr<const void>> inputs;
};

/// A job's images during the pass: the loaded entries of the hits and,
/// for images computed now, their input embeddings.
struct pass_images {
  std::vector<std::shared_ptr<loaded_entry>> entries; ///< null for misses
  std::vector<bool> use_entry;
  std::vector<std::shared_ptr<const std::vector<float>>> fallback; // [n_tokens, hidden]
};

/// Turns hit `i` into a miss; its embeddings come from the entry when
/// they loaded, else from encoding the request's pixels again.
status fall_back(node_context& ctx, const prefill_job& job, pass_images& im, size_t i,
                 bool embeddings_ok) {
  im.use_entry[i] = false;
  ctx.counters.load_fallbacks++;
  if (embeddings_ok)
    return {};
  if (!job.images[i].pixels)
    return make_error(errc::unavailable, "the library entry of image ", std::to_string(i),
                      " failed to load and the request gave no pixels to recompute it from; "
                      "send the image bytes again");
  auto emb = ctx.encoder->encode(*job.images[i].pixels);
  if (!emb)
    return std::move(emb).err();
  im.fallback[i] = std::make_shared<const std::vector<float>>(std::move(*emb));
  return {};
}

/// Where the pass streams the request's KV when decode runs on another
/// node: a transfer to `target` begins once the plan is known and each
/// layer goes from the engine's layer_done hook.
struct remote_sink {
  std::shared_ptr<remote_decoders::target> target;
  uint64_t request_id = 0;
  std::unique_ptr<kv_stream> stream;
};

result<pass_outcome> run_pass(node_context& ctx, prefill_job& job, remote_sink* remote) {
  const size_t n = job.images.size();
  pass_images im;
  im.entries.resize(n);
  im.use_entry.assign(n, false);
  im.fallback.resize(n);
  for (size_t i = 0; i < n; ++i)
    if (job.images[i].load_id != 0) {
      im.entries[i] = ctx.loads.take(job.images[i].load_id);
      im.use_entry[i] = im.entries[i] != nullptr;
    }
  const auto t0 = steady::now();
  uint64_t wait_us = 0;
  // Embeddings are waited for before the compute lock: decode keeps the
  // device meanwhile.
  for (size_t i = 0; i < n; ++i) {
    if (!im.use_entry[i])
      continue;
    const auto tw = steady::now();
    auto ok = im.entries[i]->wait_embeddings();
    wait_us += micros_since(tw);
    if (!ok) {
      std::lock_guard lock{ctx.compute_mutex}; // a re-encode computes
      MOSAIC_TRY(fall_back(ctx, job, im, i, false));
    }
  }
  std::unique_lock lock{ctx.compute_mutex};
  auto& engine = *ctx.engine;
  const auto& tok = engine.tokenizer();
  // One pass; a second only when a load fails mid-pass (that image then
  // computed like a miss). Each retry removes one hit, so this ends.
  for (size_t attempt = 0; attempt <= n; ++attempt) {
    std::vector<prompt_image> images(n);
    for (size_t i = 0; i < n; ++i) {
      auto& pi = images[i];
      pi.key = to_hex(job.images[i].image_key); // the prefix cache keys image tokens by it
      pi.n_tokens = job.images[i].n_tokens;
      // M-RoPE: the grid from the image's size, or (named by key) from its
      // library entry.
      pi.grid = job.images[i].grid;
      if (pi.grid == token_grid{} && im.entries[i])
        pi.grid = im.entries[i]->entry().grid;
      if (im.use_entry[i]) {
        pi.cached = &im.entries[i]->entry();
      } else if (im.fallback[i]) {
        pi.embeddings = im.fallback[i]->data();
      } else if (im.entries[i]) {
        pi.embeddings = im.entries[i]->entry().embeddings.data();
      } else if (job.images[i].embeddings) {
        pi.embeddings = job.images[i].embeddings->data();
      } else {
        return make_error(errc::internal, "image ", std::to_string(i), " has no source");
      }
    }
    auto p = split_prompt(job.ids, tok.image_token_id(), std::move(images));
    if (!p)
      return std::move(p).err();
    int prompt_tokens = 0;
    for (const auto& part : p->parts)
      prompt_tokens += part.kind == segment_kind::text
                           ? static_cast<int>(part.text_ids.size())
                           : p->images[static_cast<size_t>(part.image)].n_tokens;
    const int limit = ctx.options.prefill_max_tokens > 0 ? ctx.options.prefill_max_tokens
                                                         : engine.config().text.context_length();
    if (prompt_tokens > limit)
      return make_error(errc::invalid_argument, "the prompt has ", std::to_string(prompt_tokens),
                        " tokens, over the prefill limit of ", std::to_string(limit),
                        ctx.options.prefill_max_tokens > 0
                            ? "; send fewer images or raise max_tokens of the prefill actor"
                            : " (the model's context; a sliding window bounds it); send fewer "
                              "images or less text");
    int failed = -1;
    prefill_options opt;
    opt.chunk_tokens = ctx.options.prefill_chunk_tokens;
    // Between chunks the lock goes to whoever waits (a decode step), so
    // running streams keep their pace while a long prompt prefills.
    opt.between_chunks = [&lock](int) -> status {
      lock.unlock();
      lock.lock();
      return {};
    };
    if (remote != nullptr) {
      if (remote->stream) // a re-run: the layers sent so far came from the failed pass
        remote->stream->abort("the prefill pass is re-run after a failed library load");
      remote->stream.reset();
      auto stream = remote->target->outbox->open(remote->request_id, job.tenant,
                                                 static_cast<uint32_t>(prompt_tokens), ctx);
      if (!stream)
        return std::move(stream).err();
      remote->stream = std::move(*stream);
      opt.layer_done = [remote, &lock](int layer, const kv_sequence& seq) {
        return remote->stream->send_layer(layer, seq, &lock);
      };
    }
    // Images the plan reads from their entry: one inside the adopted
    // prefix-cache blocks needs no load.
    std::vector<bool> read(n, true);
    opt.on_plan = [&read](const link_plan& pl) {
      std::fill(read.begin(), read.end(), false);
      for (const auto& src : pl.kv)
        if (src.kind == kv_source_kind::image_entry && src.index >= 0 &&
            static_cast<size_t>(src.index) < read.size())
          read[static_cast<size_t>(src.index)] = true;
    };
    // A layer still on its way from the library is waited for without
    // the compute lock: decode steps run meanwhile. The pass's buffers are
    // its own, so another holder between layers changes nothing of it.
    opt.wait_layer = [&](int layer) -> status {
      bool released = false;
      for (size_t i = 0; i < n; ++i) {
        if (!im.use_entry[i] || !read[i])
          continue;
        if (!released && !im.entries[i]->layer_ready(layer)) {
          lock.unlock();
          released = true;
        }
        const auto tw = steady::now();
        auto ok = im.entries[i]->wait_layer(layer);
        wait_us += micros_since(tw);
        if (!ok) {
          failed = static_cast<int>(i);
          if (released)
            lock.lock();
          return ok;
        }
      }
      if (released)
        lock.lock();
      return {};
    };
    const prefix_scope scope{job.tenant, ctx.model_fingerprint, job.cache_salt};
    auto ran =
        engine.prefill_prompt(*p, job.policy, ctx.options.prefix_caching ? &scope : nullptr, opt);
    if (!ran) {
      if (failed < 0)
        return std::move(ran).err();
      MOSAIC_TRY(fall_back(ctx, job, im, size_t(failed), true));
      continue;
    }
    auto* r = &ran->result;
    auto* plan = &ran->plan;
    sampling_params sp = engine_sampling(
        job.sampling, job.sampling.seed.value_or(std::random_device{}()), tok.eos_id());
    MOSAIC_TRY(sp.validate());
    sampler pick{sp};
    if (sp.repetition_penalty != 1.0f)
      pick.set_prompt(job.ids);
    pass_outcome out;
    out.first_token = pick.sample(r->logits);
    if (out.first_token < 0)
      return make_error(errc::internal, "the model produced no finite logits");
    out.first_logprobs = wire_logprobs(r->logits, out.first_token, job.sampling.logprobs, tok);
    out.prompt_tokens = plan->n_tokens();
    out.rope_delta = r->rope_delta;
    out.stats = r->stats;
    out.prefix_cached_tokens = ran->cache_hit_tokens;
    out.sequence = std::move(r->sequence);
    if (job.compression.enabled()) {
      out.plan = std::move(*plan);
      out.plan.prefix = {}; // borrowed; compress_kv reads tokens, segments and embeddings
      out.plan.completion = {};
      for (size_t i = 0; i < n; ++i)
        for (std::shared_ptr<const void> keep :
             {std::shared_ptr<const void>(im.entries[i]),
              std::shared_ptr<const void>(im.fallback[i]),
              std::shared_ptr<const void>(job.images[i].embeddings)})
          if (keep)
            out.inputs.push_back(std::move(keep));
    }
    ctx.counters.prefills++;
    const uint64_t pass_us = micros_since(t0);
    ctx.counters.prefill_us += pass_us;
    ctx.counters.load_wait_us += wait_us;
    ctx.counters.add_stage(request_stage::prefill_load_wait, wait_us);
    ctx.counters.add_stage(request_stage::prefill_compute, pass_us - std::min(wait_us, pass_us));
    return out;
  }
  return make_error(errc::internal, "prefill did not converge");
}

/// A request after its pass: the decode task and where its KV went.
struct prefilled {
  std::shared_ptr<prefill_job> job;
  wire::decode_task task;
  /// Compressed requests: the compress stage's job (not yet published).
  std::shared_ptr<compress_job> compress;
  /// Decode on this node: the sequence (not yet published).
  std::shared_ptr<kv_sequence> sequence;
  std::optional<remote_sink> remote;
  int blocks = 0; ///< pool blocks the request holds now
};

/// Frees what the linker left for request `id`'s job.
void drop_loads(node_context& ctx, prefill_job& job) {
  for (auto& img : job.images)
    ctx.loads.take(img.load_id);
}

/// Takes request `id`'s job and runs its pass; errors are the request's.
result<prefilled> prefill_one(caf::stateful_actor<prefill_state>* self, uint64_t id) {
  auto& st = self->state;
  auto* ctx = st.ctx;
  prefilled p;
  p.job = ctx->jobs.take(id);
  if (!p.job)
    return make_error(errc::not_found, "no prefill job for request ", std::to_string(id));
  auto& job = *p.job;
  // Queue time ends here: work on the request starts (vLLM's "scheduled").
  const uint64_t queue_us = job.admission_wait_us + micros_since(job.handed_over);
  ctx->counters.add_stage_since(request_stage::prefill_queue, job.handed_over);
  if (deadline_passed(job.deadline_unix_ns)) {
    drop_loads(*ctx, job);
    return make_error(errc::timeout, "request ", std::to_string(id),
                      " passed its deadline before prefill");
  }
  if (job.compression.enabled() && !st.peers.compress) {
    drop_loads(*ctx, job);
    return make_error(errc::unsupported,
                      "KV compression needs the decode worker on the prefill worker's node "
                      "(this node hands KV to decode on another node); send the request "
                      "with \"compression\": \"none\" or place decode with prefill");
  }
  // Decode on another node: pick it now, so that the KV streams to it
  // during the pass (and a request nobody can decode fails before it).
  if (st.peers.remote_kv) {
    auto picked = st.peers.remote_kv->pick();
    if (!picked) {
      drop_loads(*ctx, job);
      return std::move(picked).err();
    }
    p.remote.emplace(remote_sink{std::move(*picked), id, nullptr});
  }
  auto out = run_pass(*ctx, job, p.remote ? &*p.remote : nullptr);
  if (!out) {
    if (p.remote && p.remote->stream)
      p.remote->stream->abort(out.err().message);
    return std::move(out).err();
  }
  // Store after use: images this request computed (library misses) that
  // lie outside the prefix it adopted, per the node's store_after_use;
  // not for the baselines `full` and `prefix`, which never link library
  // KV: they do no work that the systems they stand for would not do.
  const auto& store = ctx->options.store_after_use;
  const bool links = links_library_kv(job.policy.kind);
  const int32_t image_id = ctx->engine->tokenizer().image_token_id();
  const std::vector<int> image_tokens = image_token_counts(job);
  const std::vector<int> image_ends = image_end_offsets(job.ids, image_id, image_tokens);
  for (size_t i = 0; i < job.images.size(); ++i) {
    auto& img = job.images[i];
    const bool in_prefix = i < image_ends.size() && image_ends[i] <= out->prefix_cached_tokens;
    if (!links || !img.fresh || !img.embeddings || in_prefix || store == "off" ||
        (store == "repeat" && !img.seen_before))
      continue;
    if (!ctx->compiling.add(job.tenant, img.image_key))
      continue; // an earlier request's store after use compiles it already
    const uint64_t emb_id = ctx->embeddings.put(img.embeddings);
    self->send(st.peers.encoder, store_atom_v,
               make_store_request_msg(id, job.tenant, img.image_key,
                                      static_cast<uint32_t>(img.n_tokens), 0, emb_id, img.grid));
  }
  auto& task = p.task;
  task.request_id = id;
  task.tenant = job.tenant;
  task.deadline_unix_ns = job.deadline_unix_ns;
  task.kv.sequence = id;
  task.kv.n_tokens = static_cast<uint32_t>(out->sequence.length());
  // M-RoPE: the first decoded token turns at the largest position + 1,
  // fewer than the tokens when the prompt has images (0 = kv.n_tokens).
  if (out->rope_delta != 0)
    task.position = static_cast<uint32_t>(out->sequence.length() + out->rope_delta);
  task.kv.n_layers = static_cast<uint32_t>(ctx->engine->config().text.num_layers);
  task.kv.kv_dim = static_cast<uint32_t>(ctx->engine->config().text.kv_dim());
  task.first_token = out->first_token;
  task.prompt_tokens = static_cast<uint32_t>(out->prompt_tokens);
  task.sampling = job.sampling;
  // The decode sampler penalises the prompt too; the client may ask for it.
  if (job.sampling.repetition_penalty != 1.0f || job.sampling.return_token_ids)
    task.prompt_ids = expanded_prompt_ids(job.ids, image_id, image_tokens);
  task.first_logprobs = std::move(out->first_logprobs);
  task.stream = job.stream;
  task.queue_us = queue_us;
  task.reused_tokens = static_cast<uint32_t>(out->stats.reused_image_tokens);
  task.recomputed_tokens = static_cast<uint32_t>(out->stats.recomputed_image_tokens);
  for (int n : image_tokens)
    task.image_tokens += static_cast<uint32_t>(std::max(n, 0));
  task.cached_tokens = static_cast<uint32_t>(out->stats.cached_tokens);
  task.prefix_cached_tokens = static_cast<uint32_t>(out->prefix_cached_tokens);
  p.blocks = static_cast<int>(out->sequence.blocks().size());
  if (job.compression.enabled()) {
    // The compress stage shrinks the KV, frees the original blocks and
    // hands the task on to decode.
    p.compress = std::make_shared<compress_job>();
    p.compress->sequence = std::move(out->sequence);
    p.compress->plan = std::move(out->plan);
    p.compress->inputs = std::move(out->inputs);
    p.compress->compression = job.compression;
  } else if (!p.remote) {
    p.sequence = std::make_shared<kv_sequence>(std::move(out->sequence));
  }
  return p;
}

/// Hands a prefilled request on (compress, local or remote decode),
/// answering `rp` with its last token event. `cleanup` runs when the next
/// worker fails.
template <class Cleanup>
void hand_on(caf::stateful_actor<prefill_state>* self, prefilled p,
             caf::typed_response_promise<token_event_msg> rp, const caf::actor& sink,
             Cleanup cleanup) {
  auto& st = self->state;
  auto* ctx = st.ctx;
  const uint64_t id = p.task.request_id;
  const int64_t deadline = p.job->deadline_unix_ns;
  if (p.compress) {
    if (!ctx->compress_jobs.put_at(id, std::move(p.compress))) {
      cleanup();
      rp.deliver(to_caf_error(make_error(errc::invalid_argument, id_in_use(id))));
      return;
    }
    forward_into(self, rp, st.peers.compress, deadline, compress_atom_v,
                 make_compress_task_msg(p.task, p.job->compression.to_string()), sink,
                 [ctx, id, cleanup] {
                   ctx->compress_jobs.take(id);
                   cleanup();
                 });
    return;
  }
  if (!ctx->sequences.put_at(id, std::move(p.sequence))) {
    cleanup();
    rp.deliver(to_caf_error(make_error(errc::invalid_argument, id_in_use(id))));
    return;
  }
  forward_into(self, rp, st.peers.decode, deadline, decode_atom_v, make_decode_task_msg(p.task),
               sink, [ctx, id, cleanup] {
                 ctx->sequences.take(id);
                 cleanup();
               });
}

/// Without a scheduler: runs the request now.
caf::result<token_event_msg> on_prefill(caf::stateful_actor<prefill_state>* self,
                                        const prefill_task_msg& m, const caf::actor& sink) {
  auto p = prefill_one(self, m->request_id());
  if (!p)
    return to_caf_error(p.err());
  if (p->remote) // decode on another node: the KV is already on its way
    return hand_over_remote(self, std::move(p->remote->target), std::move(p->task),
                            std::move(p->remote->stream), sink);
  auto rp = self->make_response_promise<token_event_msg>();
  // A compress job dropped on failure may unblock held requests.
  hand_on(self, std::move(*p), rp, sink, [self] { self->send(self, wake_atom_v); });
  return rp;
}

/// Runs the requests held back (no scheduler) while the compress stage
/// has no work: later stages first (FastCache), because a request waiting
/// for compression holds its whole uncompressed KV and the device lock is
/// not fair. The compress actor wakes this actor when it finishes a job.
void run_held(caf::stateful_actor<prefill_state>* self) {
  auto& st = self->state;
  while (!st.held.empty() && st.ctx->compress_jobs.size() == 0) {
    auto h = std::move(st.held.front());
    st.held.pop_front();
    auto p = prefill_one(self, h.msg->request_id());
    if (!p) {
      h.rp.deliver(to_caf_error(p.err()));
      continue;
    }
    if (p->remote) {
      // Not reached: compression (and so holding back) needs local decode.
      p->remote->stream->abort("held prefill with remote decode");
      h.rp.deliver(to_caf_error(make_error(errc::internal, "held request with remote decode")));
      continue;
    }
    hand_on(self, std::move(*p), h.rp, h.sink, [self] { self->send(self, wake_atom_v); });
  }
}

/// With a scheduler: runs the prefill batches the stage scheduler forms.
void pump(caf::stateful_actor<prefill_state>* self) {
  auto& st = self->state;
  auto* adm = st.ctx->stages.get();
  for (;;) {
    auto batch = adm->next(stage_kind::prefill);
    if (batch.empty())
      break;
    // The engine runs one pass at a time: a batch is the set admitted
    // together, run back to back while the device is held for prefill.
    for (uint64_t id : batch.requests) {
      auto it = st.waiting.find(id);
      if (it == st.waiting.end()) {
        adm->release(id);
        continue;
      }
      auto w = std::move(it->second);
      st.waiting.erase(it);
      auto p = prefill_one(self, id);
      if (!p) {
        adm->release(id);
        w.rp.deliver(to_caf_error(p.err()));
        continue;
      }
      adm->held(id, p->blocks);
      hand_on(self, std::move(*p), w.rp, w.sink, [adm, id] { adm->release(id); });
    }
    adm->done(batch);
  }
  if (st.waiting.empty())
    return;
  // A wait threshold, or pool blocks held outside the scheduler (a library
  // compile after use): nothing else would wake this stage.
  double in = adm->seconds_until_wake(stage_kind::prefill);
  if (in <= 0) // the threshold fired: only memory coming free lets a batch form
    in = std::numeric_limits<double>::infinity();
  if (adm->blocked_outside())
    in = std::min(in, 0.005);
  if (std::isfinite(in) && in > 0 && !st.timer_armed) {
    st.timer_armed = true;
    self->delayed_send(self,
                       std::chrono::microseconds{static_cast<int64_t>(std::max(in, 0.0) * 1e6) + 1},
                       wake_atom_v);
  }
}

caf::result<token_event_msg> on_task(caf::stateful_actor<prefill_state>* self,
                                     const prefill_task_msg& m, const caf::actor& sink) {
  auto& st = self->state;
  auto* ctx = st.ctx;
  auto* adm = ctx->stages.get();
  const uint64_t id = m->request_id();
  // The scheduler covers requests whose every stage runs here.
  if (adm->scheduled() && !st.peers.remote_kv && st.peers.compress) {
    auto job = ctx->jobs.get(id);
    if (!job)
      return to_caf_error(
          make_error(errc::not_found, "no prefill job for request ", std::to_string(id)));
    if (auto ok = adm->enqueue(adm->request_of(*job)); !ok) {
      if (auto taken = ctx->jobs.take(id))
        drop_loads(*ctx, *taken);
      return to_caf_error(ok.err());
    }
    auto rp = self->make_response_promise<token_event_msg>();
    st.waiting.emplace(id, held_task{m, sink, rp});
    // Pump after the tasks already in the mailbox are queued too: the
    // batch is what arrived while the previous one ran.
    if (!st.pump_pending) {
      st.pump_pending = true;
      self->send(self, wake_atom_v);
    }
    return rp;
  }
  if (ctx->compress_jobs.size() > 0 || !st.held.empty()) {
    auto rp = self->make_response_promise<token_event_msg>();
    st.held.push_back(held_task{m, sink, rp});
    return rp;
  }
  return on_prefill(self, m, sink);
}

caf::behavior prefill_actor(caf::stateful_actor<prefill_state>* self, node_context* ctx,
                            prefill_peers peers) {
  self->state.ctx = ctx;
  self->state.peers = std::move(peers);
  ctx->stages->attach(stage_kind::prefill, self->address());
  return {
      [self](prefill_atom, const prefill_task_msg& m, const caf::actor& sink) {
        return on_task(self, m, sink);
      },
      [self](wake_atom) {
        auto& st = self->state;
        st.timer_armed = false;
        st.pump_pending = false;
        if (st.ctx->stages->scheduled())
          pump(self);
        run_held(self);
      },
  };
}

} // namespace

caf::actor spawn_prefill(caf::actor_system& sys, node_context* ctx, prefill_peers peers) {
  return sys.spawn<caf::detached>(prefill_actor, ctx, std::move(peers));
}

} // namespace mosaic::actors
