#include "actors/linker_actor.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>

#include <caf/all.hpp>

#include "actors/pipeline_messages.hpp"
#include "engine/generation.hpp"
#include "engine/policies.hpp"
#include "engine/prefix_cache.hpp"
#include "messages/error_convert.hpp"
#include "messages/readers.hpp"

namespace mosaic::actors {

namespace {

/// One request while its images are looked up, loaded and encoded.
struct pending_link;

struct linker_state {
  node_context* ctx = nullptr;
  linker_peers peers;
  /// Requests waiting for an image that store after use is compiling, by id.
  std::unordered_map<uint64_t, std::shared_ptr<pending_link>> waiting;
  static inline const char* name = "linker";
};

using linker_actor_ptr = caf::stateful_actor<linker_state>*;

struct pending_link {
  std::shared_ptr<prefill_job> job = std::make_shared<prefill_job>();
  std::vector<wire::image_source> sources; ///< per image, in prompt order
  caf::actor sink;
  caf::response_promise rp;
  int outstanding = 0;
  bool failed = false;
  /// When the first lookup answered: how long the request has waited for
  /// images in store after use.
  std::optional<std::chrono::steady_clock::time_point> first_lookup;
  /// When the last lookup answered and its images were sent for
  /// (request_stage::resolve_images).
  std::optional<std::chrono::steady_clock::time_point> resolving;
};

using link_ptr = std::shared_ptr<pending_link>;

/// Ends the request with `err`; loads already started are released.
void fail(node_context& ctx, const link_ptr& p, const error& err) {
  if (p->failed)
    return;
  p->failed = true;
  for (auto& img : p->job->images)
    if (img.load_id != 0)
      ctx.loads.take(img.load_id);
  p->rp.deliver(to_caf_error(err));
}

/// All images resolved: the job goes to the prefill worker.
void hand_over(linker_actor_ptr self, const link_ptr& p) {
  auto& st = self->state;
  const auto& job = *p->job;
  auto task = make_prefill_task_msg(job, st.ctx->engine->tokenizer().image_token_id());
  p->job->handed_over = std::chrono::steady_clock::now();
  if (p->resolving)
    st.ctx->counters.add_stage_since(request_stage::resolve_images, *p->resolving);
  auto* ctx = st.ctx;
  if (!ctx->jobs.put_at(job.request_id, p->job))
    return fail(*ctx, p, make_error(errc::invalid_argument, id_in_use(job.request_id)));
  const uint64_t id = job.request_id;
  self->request(st.peers.prefill, until_deadline(job.deadline_unix_ns), prefill_atom_v,
                std::move(task), p->sink)
      .then([p](const token_event_msg& last) { p->rp.deliver(last); },
            [p, ctx, id](const caf::error& err) {
              ctx->jobs.take(id);
              p->rp.deliver(err);
            });
}

void one_done(linker_actor_ptr self, const link_ptr& p) {
  if (--p->outstanding == 0 && !p->failed)
    hand_over(self, p);
}

/// Starts the load of a hit (entry_id from the lookup).
void start_load(linker_actor_ptr self, const link_ptr& p, size_t i, uint64_t entry_id) {
  auto& st = self->state;
  auto* ctx = st.ctx;
  const auto& job = *p->job;
  wire::load_request lr;
  lr.request_id = job.request_id;
  lr.tenant = job.tenant;
  lr.deadline_unix_ns = job.deadline_unix_ns;
  lr.key = job.images[i].image_key;
  lr.entry_id = entry_id;
  self->request(st.peers.kv_loader, until_deadline(job.deadline_unix_ns), load_atom_v,
                make_load_request_msg(lr))
      .then(
          [self, p, ctx, i](const layer_ready_msg& r) {
            const uint64_t load_id = r->k() ? r->k()->id() : 0;
            if (p->failed) {
              ctx->loads.take(load_id);
              return;
            }
            if (auto st = to_status(r->error()); !st || load_id == 0)
              return fail(*ctx, p, !st ? st.err() : make_error(errc::internal, "no load handle"));
            p->job->images[i].load_id = load_id;
            one_done(self, p);
          },
          [p, ctx](const caf::error& err) { fail(*ctx, p, from_caf_error(err)); });
}

/// Has the encoder encode a miss.
void start_encode(linker_actor_ptr self, const link_ptr& p, size_t i) {
  auto& st = self->state;
  auto* ctx = st.ctx;
  const auto& job = *p->job;
  const auto* data = std::get_if<wire::image_data_segment>(&p->sources[i]);
  if (data == nullptr)
    return fail(*ctx, p,
                make_error(errc::not_found, "image ", std::to_string(i), " (key ",
                           to_hex(job.images[i].image_key).substr(0, 16), ") is not in tenant '",
                           job.tenant, "''s library; upload it first or send the image bytes"));
  wire::encode_request er;
  er.request_id = job.request_id;
  er.tenant = job.tenant;
  er.deadline_unix_ns = job.deadline_unix_ns;
  er.image = *data;
  // The pixels decoded by prepare(): this node's encoder takes them instead
  // of decoding the bytes again; whatever it leaves is dropped below.
  if (job.images[i].pixels)
    er.decoded = ctx->decoded.put(std::make_shared<const decoded_pixels>(
        decoded_pixels{job.request_id, job.tenant, job.images[i].image_key, job.images[i].pixels}));
  const uint64_t decoded = er.decoded;
  self->request(st.peers.encoder, until_deadline(job.deadline_unix_ns), encode_atom_v,
                make_encode_request_msg(er))
      .then(
          [self, p, ctx, i, decoded](const encode_result_msg& r) {
            ctx->decoded.take(decoded);
            auto emb = ctx->embeddings.take(r->embeddings() ? r->embeddings()->id() : 0);
            if (p->failed)
              return;
            if (auto st = to_status(r->error()); !st)
              return fail(*ctx, p, st.err());
            if (!emb)
              return fail(*ctx, p, make_error(errc::internal, "encoder returned no embeddings"));
            auto& img = p->job->images[i];
            if (emb->size() !=
                size_t(img.n_tokens) * size_t(ctx->engine->config().text.hidden_size))
              return fail(*ctx, p,
                          make_error(errc::internal, "image ", std::to_string(i), ": encoder gave ",
                                     std::to_string(emb->size()), " values for ",
                                     std::to_string(img.n_tokens), " tokens"));
            img.embeddings = std::move(emb);
            img.fresh = true;
            img.seen_before = r->encoder_cache_hit();
            one_done(self, p);
          },
          [p, ctx, decoded](const caf::error& err) {
            ctx->decoded.take(decoded);
            fail(*ctx, p, from_caf_error(err));
          });
}

/// Tokenises the prompt and keys every image.
status prepare(node_context& ctx, const wire::generate_request& req, pending_link& p) {
  auto& job = *p.job;
  job.request_id = req.request_id;
  job.tenant = req.tenant;
  job.cache_salt = req.cache_salt;
  job.deadline_unix_ns = req.deadline_unix_ns;
  job.sampling = req.sampling;
  job.stream = req.stream;
  job.admission_wait_us = req.admission_wait_us;
  job.policy = ctx.options.default_policy;
  if (!req.reuse_policy.empty()) {
    auto pol = parse_policy(req.reuse_policy);
    if (!pol)
      return std::move(pol).err();
    job.policy = *pol;
  }
  job.compression = ctx.options.default_compression;
  if (!req.kv_compression.empty()) {
    auto spec = parse_compression(req.kv_compression);
    if (!spec)
      return std::move(spec).err();
    job.compression = *spec;
  }
  const auto& cfg = ctx.engine->config();
  std::string text;
  for (const auto& seg : req.segments) {
    if (const auto* t = std::get_if<wire::text_segment>(&seg)) {
      text += t->text;
      continue;
    }
    text += image_marker;
    job_image img;
    // Anyres: an image's count follows from its size; for a key, from its
    // library entry (lookup() fills it in).
    img.n_tokens = cfg.variable_image_tokens() ? 0 : cfg.image_tokens();
    if (const auto* k = std::get_if<wire::image_key_segment>(&seg)) {
      img.image_key = k->key;
      p.sources.emplace_back(*k);
    } else {
      const auto& d = std::get<wire::image_data_segment>(seg);
      auto pixels = decode_image(d.encoded, image_limits{});
      ctx.counters.image_decodes++;
      if (!pixels)
        return make_error(pixels.err().code, "image ", std::to_string(job.images.size()), ": ",
                          pixels.err().message);
      img.image_key = image_key(*pixels, cfg.vision);
      auto count = cfg.image_tokens_for(pixels->height, pixels->width);
      if (!count)
        return make_error(count.err().code, "image ", std::to_string(job.images.size()), ": ",
                          count.err().message);
      img.n_tokens = *count;
      auto grid = cfg.image_token_grid(pixels->height, pixels->width);
      if (!grid)
        return make_error(grid.err().code, "image ", std::to_string(job.images.size()), ": ",
                          grid.err().message);
      img.grid = *grid;
      img.pixels = std::make_shared<const decoded_image>(std::move(*pixels));
      p.sources.emplace_back(d);
    }
    job.images.push_back(std::move(img));
  }
  const auto& tok = ctx.engine->tokenizer();
  // Qwen2-VL: a prompt already in ChatML (the OpenAI front door renders
  // whole conversations so) is used as it is; anything else is one user turn.
  if (cfg.qwen_vl() && text.starts_with("<|im_start|>")) {
    job.ids = tok.encode_prompt(text);
    return {};
  }
  auto chat = chat_prompt(tok, text, static_cast<int>(job.images.size()));
  if (!chat)
    return std::move(chat).err();
  job.ids = tok.encode_prompt(*chat);
  return {};
}

/// How long a request waits for images that an earlier request's store
/// after use is compiling (then it computes them itself), and how often it
/// looks again meanwhile.
constexpr auto compile_wait = std::chrono::seconds{3};
constexpr auto compile_poll = std::chrono::milliseconds{10};

/// Per image of `job`: whether all its tokens lie in the prefix that the
/// node's prefix cache holds for the request now (its entry is not read:
/// a chat's earlier turns), as far as a look-ahead can tell.
std::vector<bool> in_cached_prefix(node_context& ctx, const prefill_job& job) {
  std::vector<bool> out(job.images.size(), false);
  if (!ctx.options.prefix_caching || !uses_prefix_cache(job.policy))
    return out;
  auto& engine = *ctx.engine;
  std::vector<prompt_image> images(job.images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    images[i].key = to_hex(job.images[i].image_key);
    images[i].n_tokens = job.images[i].n_tokens;
  }
  auto p = split_prompt(job.ids, engine.tokenizer().image_token_id(), std::move(images));
  if (!p)
    return out;
  const prompt_blocks blocks{*p, prefix_scope{job.tenant, ctx.model_fingerprint, job.cache_salt},
                             engine.pool().block_size()};
  const int covered = cached_prefix_tokens(engine.pool(), blocks, prefix_tag(job.policy));
  const auto ends =
      image_end_offsets(job.ids, engine.tokenizer().image_token_id(), image_token_counts(job));
  // An image whose count is not known yet (anyres, by key, not in the
  // library) and every image after it: their layout is unknown, so not in
  // the prefix.
  for (size_t i = 0; i < ends.size() && i < out.size(); ++i) {
    if (job.images[i].n_tokens <= 0)
      break;
    out[i] = ends[i] <= covered;
  }
  return out;
}

/// Looks the request's images up in the library: hits are loaded, misses
/// encoded, unless store after use is compiling a miss outside the cached
/// prefix right now (not merely queued: a backlog would hold the request
/// up); then the whole lookup is repeated after compile_poll, up to
/// compile_wait.
void lookup(linker_actor_ptr self, const link_ptr& p) {
  auto& st = self->state;
  auto* ctx = st.ctx;
  const auto& job = *p->job;
  wire::library_lookup lk;
  lk.request_id = job.request_id;
  lk.tenant = job.tenant;
  for (const auto& img : job.images)
    lk.keys.push_back(img.image_key);
  const auto sent = std::chrono::steady_clock::now();
  self->request(st.peers.kv_loader, until_deadline(job.deadline_unix_ns), lookup_atom_v,
                make_library_lookup_msg(lk))
      .then(
          [self, p, ctx, sent](const library_lookup_result_msg& r) {
            ctx->counters.add_stage_since(request_stage::library_lookup, sent);
            auto res = read_library_lookup_result(r);
            if (res.err.code != errc::none)
              return fail(*ctx, p, res.err);
            const size_t n = p->job->images.size();
            if (res.entries.size() != n)
              return fail(*ctx, p,
                          make_error(errc::internal, "library lookup answered ",
                                     std::to_string(res.entries.size()), " of ", std::to_string(n),
                                     " images"));
            // A key-only image of an anyres model takes its entry's count
            // (bounded by the most an image can take; else it is a miss).
            const uint32_t most = uint32_t(ctx->engine->config().image_tokens());
            for (size_t i = 0; i < n; ++i)
              if (auto& img = p->job->images[i];
                  img.n_tokens == 0 && !img.pixels && res.entries[i].tier != msg::Tier::miss &&
                  res.entries[i].n_tokens > 0 && res.entries[i].n_tokens <= most)
                img.n_tokens = int(res.entries[i].n_tokens);
            auto hit = [&](size_t i) {
              const auto& e = res.entries[i];
              return e.tier != msg::Tier::miss &&
                     e.n_tokens == uint32_t(p->job->images[i].n_tokens);
            };
            const auto now = std::chrono::steady_clock::now();
            if (!p->first_lookup)
              p->first_lookup = now;
            auto compiling = [&](size_t i) {
              return !hit(i) && ctx->compiling.running(p->job->tenant, p->job->images[i].image_key);
            };
            bool wait = false;
            if (now - *p->first_lookup < compile_wait && !deadline_passed(p->job->deadline_unix_ns))
              for (size_t i = 0; i < n && !wait; ++i)
                wait = compiling(i);
            if (wait) { // unless those images are inside the cached prefix
              const auto in_prefix = in_cached_prefix(*ctx, *p->job);
              wait = false;
              for (size_t i = 0; i < n && !wait; ++i)
                wait = compiling(i) && !in_prefix[i];
            }
            if (wait) {
              self->state.waiting[p->job->request_id] = p;
              self->delayed_send(self, compile_poll, wake_atom_v, p->job->request_id);
              return;
            }
            p->outstanding = static_cast<int>(n);
            p->resolving = std::chrono::steady_clock::now();
            for (size_t i = 0; i < n; ++i) {
              if (hit(i)) {
                ctx->counters.library_hits++;
                start_load(self, p, i, res.entries[i].entry_id);
              } else {
                ctx->counters.library_misses++;
                start_encode(self, p, i);
              }
            }
          },
          [p, ctx](const caf::error& err) { fail(*ctx, p, from_caf_error(err)); });
}

caf::result<token_event_msg> on_generate(linker_actor_ptr self, const generate_request_msg& m,
                                         const caf::actor& sink) {
  auto& st = self->state;
  auto* ctx = st.ctx;
  auto req = read_generate_request(m);
  if (!req)
    return to_caf_error(req.err());
  auto p = std::make_shared<pending_link>();
  p->sink = sink;
  const auto t0 = std::chrono::steady_clock::now();
  if (auto ok = prepare(*ctx, *req, *p); !ok)
    return to_caf_error(ok.err());
  ctx->counters.add_stage_since(request_stage::prepare, t0);
  p->rp = self->make_response_promise();
  const auto& job = *p->job;
  if (job.images.empty()) {
    p->outstanding = 1;
    one_done(self, p);
    return p->rp;
  }
  lookup(self, p);
  return p->rp;
}
caf::behavior linker_actor(caf::stateful_actor<linker_state>* self, node_context* ctx,
                           linker_peers peers) {
  self->state.ctx = ctx;
  self->state.peers = std::move(peers);
  return {
      [self](generate_atom, const generate_request_msg& m, const caf::actor& sink) {
        return on_generate(self, m, sink);
      },
      [self](wake_atom, uint64_t request_id) {
        auto it = self->state.waiting.find(request_id);
        if (it == self->state.waiting.end())
          return;
        auto p = std::move(it->second);
        self->state.waiting.erase(it);
        if (!p->failed)
          lookup(self, p);
      },
  };
}

} // namespace

caf::actor spawn_linker(caf::actor_system& sys, node_context* ctx, linker_peers peers) {
  return sys.spawn(linker_actor, ctx, std::move(peers));
}

} // namespace mosaic::actors
