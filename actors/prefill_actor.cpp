#include "actors/prefill_actor.hpp"

#include <chrono>
#include <optional>
#include <random>
#include <thread>

#include <caf/all.hpp>

#include "actors/kv_relay.hpp"
#include "actors/forward_request.hpp"
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

struct prefill_state {
  node_context* ctx = nullptr;
  prefill_peers peers;
  static inline const char* name = "prefill";
};

/// What one request's pass produced.
struct pass_outcome {
  kv_sequence sequence;
  int32_t first_token = 0;
  int prompt_tokens = 0;
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
  std::lock_guard lock{ctx.compute_mutex};
  for (size_t i = 0; i < n; ++i) {
    if (!im.use_entry[i])
      continue;
    const auto tw = steady::now();
    auto ok = im.entries[i]->wait_embeddings();
    wait_us += micros_since(tw);
    if (!ok)
      MOSAIC_TRY(fall_back(ctx, job, im, i, false));
  }
  auto& engine = *ctx.engine;
  const auto& tok = engine.tokenizer();
  // One pass; a second only when a load fails mid-pass (that image then
  // computed like a miss). Each retry removes one hit, so this ends.
  for (size_t attempt = 0; attempt <= n; ++attempt) {
    std::vector<prompt_image> images(n);
    for (size_t i = 0; i < n; ++i) {
      auto& pi = images[i];
      pi.key = to_hex(job.images[i].image_key).substr(0, 16);
      pi.n_tokens = job.images[i].n_tokens;
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
    auto plan = engine.plan(*p, job.policy);
    if (!plan)
      return std::move(plan).err();
    if (plan->n_tokens() > ctx.options.prefill_max_tokens)
      return make_error(errc::invalid_argument, "the prompt has ", std::to_string(plan->n_tokens()),
                        " tokens, over the prefill limit of ",
                        std::to_string(ctx.options.prefill_max_tokens),
                        "; send fewer images or raise max_tokens of the prefill actor");
    int failed = -1;
    prefill_options opt;
    if (remote != nullptr) {
      if (remote->stream) // a re-run: the layers sent so far came from the failed pass
        remote->stream->abort("the prefill pass is re-run after a failed library load");
      remote->stream.reset();
      auto stream = remote->target->outbox->open(remote->request_id,
                                                 static_cast<uint32_t>(plan->n_tokens()), ctx);
      if (!stream)
        return std::move(stream).err();
      remote->stream = std::move(*stream);
      opt.layer_done = [remote](int layer, const kv_sequence& seq) {
        return remote->stream->send_layer(layer, seq);
      };
    }
    opt.wait_layer = [&](int layer) -> status {
      for (size_t i = 0; i < n; ++i) {
        if (!im.use_entry[i])
          continue;
        const auto tw = steady::now();
        auto ok = im.entries[i]->wait_layer(layer);
        wait_us += micros_since(tw);
        if (!ok) {
          failed = static_cast<int>(i);
          return ok;
        }
      }
      return {};
    };
    auto r = engine.prefill(*plan, opt);
    if (!r) {
      if (failed < 0)
        return std::move(r).err();
      MOSAIC_TRY(fall_back(ctx, job, im, size_t(failed), true));
      continue;
    }
    sampling_params sp;
    sp.temperature = job.sampling.temperature;
    sp.top_p = job.sampling.top_p;
    sp.seed = job.sampling.seed.value_or(std::random_device{}());
    MOSAIC_TRY(sp.validate());
    sampler pick{sp};
    pass_outcome out;
    out.first_token = pick.sample(r->logits);
    if (out.first_token < 0)
      return make_error(errc::internal, "the model produced no finite logits");
    out.prompt_tokens = plan->n_tokens();
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
    ctx.counters.prefill_us += micros_since(t0);
    ctx.counters.load_wait_us += wait_us;
    return out;
  }
  return make_error(errc::internal, "prefill did not converge");
}

caf::result<token_event_msg> on_prefill(caf::stateful_actor<prefill_state>* self,
                                        const prefill_task_msg& m, const caf::actor& sink) {
  auto& st = self->state;
  auto* ctx = st.ctx;
  const uint64_t id = m->request_id();
  auto job = ctx->jobs.take(id);
  if (!job)
    return to_caf_error(
        make_error(errc::not_found, "no prefill job for request ", std::to_string(id)));
  // Queue time ends here: work on the request starts (vLLM's "scheduled").
  const uint64_t queue_us = job->admission_wait_us + micros_since(job->handed_over);
  if (deadline_passed(job->deadline_unix_ns)) {
    for (auto& img : job->images)
      ctx->loads.take(img.load_id);
    return to_caf_error(make_error(errc::timeout, "request ", std::to_string(id),
                                   " passed its deadline before prefill"));
  }
  // Later stages first (FastCache): a request waiting for the compress
  // stage holds its whole uncompressed KV, and the device lock is not
  // fair, so without this a busy prefill worker runs ahead and the pool
  // fills with uncompressed sequences. Bounded by the request's deadline.
  while (ctx->compress_jobs.size() > 0 && !deadline_passed(job->deadline_unix_ns))
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  if (job->compression.enabled() && !st.peers.compress) {
    for (auto& img : job->images)
      ctx->loads.take(img.load_id);
    return to_caf_error(make_error(
        errc::unsupported, "KV compression needs the decode worker on the prefill worker's node "
                           "(this node hands KV to decode on another node); send the request "
                           "with \"compression\": \"none\" or place decode with prefill"));
  }
  // Decode on another node: pick it now, so that the KV streams to it
  // during the pass (and a request nobody can decode fails before it).
  std::optional<remote_sink> remote;
  if (st.peers.remote_kv) {
    auto picked = st.peers.remote_kv->pick();
    if (!picked) {
      for (auto& img : job->images)
        ctx->loads.take(img.load_id);
      return to_caf_error(picked.err());
    }
    remote.emplace(remote_sink{std::move(*picked), id, nullptr});
  }
  auto out = run_pass(*ctx, *job, remote ? &*remote : nullptr);
  if (!out) {
    if (remote && remote->stream)
      remote->stream->abort(out.err().message);
    return to_caf_error(out.err());
  }
  // Store after use: images first seen in this request.
  for (auto& img : job->images) {
    if (!img.fresh || !img.embeddings)
      continue;
    const uint64_t emb_id = ctx->embeddings.put(img.embeddings);
    self->send(st.peers.encoder, store_atom_v,
               make_store_request_msg(id, job->tenant, img.image_key,
                                      static_cast<uint32_t>(img.n_tokens), 0, emb_id));
  }
  wire::decode_task task;
  task.request_id = id;
  task.tenant = job->tenant;
  task.deadline_unix_ns = job->deadline_unix_ns;
  task.kv.sequence = id;
  task.kv.n_tokens = static_cast<uint32_t>(out->sequence.length());
  task.kv.n_layers = static_cast<uint32_t>(ctx->engine->config().text.num_layers);
  task.kv.kv_dim = static_cast<uint32_t>(ctx->engine->config().text.kv_dim());
  task.first_token = out->first_token;
  task.prompt_tokens = static_cast<uint32_t>(out->prompt_tokens);
  task.sampling = job->sampling;
  task.stream = job->stream;
  task.queue_us = queue_us;
  if (job->compression.enabled()) {
    // The compress stage shrinks the KV, frees the original blocks and
    // hands the task on to decode.
    auto cj = std::make_shared<compress_job>();
    cj->sequence = std::move(out->sequence);
    cj->plan = std::move(out->plan);
    cj->inputs = std::move(out->inputs);
    cj->compression = job->compression;
    ctx->compress_jobs.put_at(id, std::move(cj));
    return forward_request(self, st.peers.compress, job->deadline_unix_ns, compress_atom_v,
                           make_compress_task_msg(task, job->compression.to_string()), sink,
                           [ctx, id] { ctx->compress_jobs.take(id); });
  }
  if (remote) // decode on another node: the KV is already on its way
    return hand_over_remote(self, std::move(remote->target), std::move(task),
                            std::move(remote->stream), sink);
  ctx->sequences.put_at(id, std::make_shared<kv_sequence>(std::move(out->sequence)));
  return forward_request(self, st.peers.decode, job->deadline_unix_ns, decode_atom_v,
                         make_decode_task_msg(task), sink, [ctx, id] { ctx->sequences.take(id); });
}

caf::behavior prefill_actor(caf::stateful_actor<prefill_state>* self, node_context* ctx,
                            prefill_peers peers) {
  self->state.ctx = ctx;
  self->state.peers = std::move(peers);
  return {
      [self](prefill_atom, const prefill_task_msg& m, const caf::actor& sink) {
        return on_prefill(self, m, sink);
      },
  };
}

} // namespace

caf::actor spawn_prefill(caf::actor_system& sys, node_context* ctx, prefill_peers peers) {
  return sys.spawn<caf::detached>(prefill_actor, ctx, std::move(peers));
}

} // namespace mosaic::actors
