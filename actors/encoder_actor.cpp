#include "actors/encoder_actor.hpp"

#include <chrono>
#include <list>
#include <map>
#include <mutex>
#include <variant>

#include <caf/all.hpp>

#include "actors/pipeline_messages.hpp"
#include "engine/model/sha256.hpp"
#include "messages/error_convert.hpp"
#include "messages/readers.hpp"

namespace mosaic::actors {

namespace {

using steady = std::chrono::steady_clock;

/// Encoder outputs by image key, least recently used first out.
class encoder_cache {
public:
  explicit encoder_cache(uint64_t budget) : budget_(budget) {}

  std::shared_ptr<const std::vector<float>> find(const digest& key) {
    auto it = items_.find(key);
    if (it == items_.end())
      return nullptr;
    order_.splice(order_.begin(), order_, it->second.second);
    return it->second.first;
  }

  void insert(const digest& key, std::shared_ptr<const std::vector<float>> value) {
    const uint64_t bytes = value->size() * sizeof(float);
    if (bytes > budget_ || items_.count(key) != 0)
      return;
    while (used_ + bytes > budget_ && !order_.empty()) {
      auto victim = items_.find(order_.back());
      used_ -= victim->second.first->size() * sizeof(float);
      items_.erase(victim);
      order_.pop_back();
    }
    order_.push_front(key);
    items_.emplace(key, std::make_pair(std::move(value), order_.begin()));
    used_ += bytes;
  }

private:
  uint64_t budget_;
  uint64_t used_ = 0;
  std::list<digest> order_;
  std::map<digest,
           std::pair<std::shared_ptr<const std::vector<float>>, std::list<digest>::iterator>>
      items_;
};

struct encoder_state {
  node_context* ctx = nullptr;
  caf::actor loader;
  std::unique_ptr<encoder_cache> cache;
  static inline const char* name = "encoder";
};

struct encoded {
  digest key{};
  token_grid grid{}; ///< M-RoPE models: the image's token grid
  std::shared_ptr<const std::vector<float>> embeddings; // [n_tokens, hidden]
  bool cache_hit = false;
  uint64_t encode_us = 0;
};

/// The cache's key for `tenant`'s image: tenants never share an entry,
/// so no tenant can tell from a fast answer that another sent an image.
digest tenant_cache_key(std::string_view tenant, const digest& image) {
  sha256_hasher h;
  h.update(std::string_view{"mosaic-encoder-cache-v1"});
  h.update_u64(tenant.size());
  h.update(tenant);
  h.update(std::span<const uint8_t>{image.data(), image.size()});
  return h.finish();
}

/// The pixels the linker of this node decoded for this request and image
/// (EncodeRequest.decoded), or null: the handle names nothing here, or
/// another request's or tenant's image (a handle from another node's
/// linker: request ids are unique across the cluster and one node links a
/// request, so no entry here can match it). The linker drops the entry
/// when the encode returns.
std::shared_ptr<const decoded_pixels> lent_pixels(node_context& ctx, const msg::EncodeRequest& m,
                                                  std::string_view tenant) {
  if (m.decoded() == 0)
    return nullptr;
  auto d = ctx.decoded.get(m.decoded());
  if (d == nullptr || d->request_id != m.request_id() || d->tenant != tenant || !d->image)
    return nullptr;
  return d;
}

/// Keys and encodes one inline image for `tenant` (or finds it in that
/// tenant's part of the cache): from the pixels the linker lent, else by
/// decoding the bytes.
result<encoded> encode_image(encoder_state& st, const msg::EncodeRequest& m,
                             std::string_view tenant) {
  const msg::ImageSegment* seg = m.image();
  if (seg == nullptr || seg->source_as_ImageData() == nullptr ||
      seg->source_as_ImageData()->encoded() == nullptr)
    return make_error(errc::invalid_argument,
                      "the encoder needs the image's bytes (an image given by key is encoded "
                      "already: it is in a library)");
  encoded out;
  std::shared_ptr<const decoded_image> img;
  if (auto lent = lent_pixels(*st.ctx, m, tenant)) {
    img = lent->image;
    out.key = lent->key;
  } else {
    const auto* bytes = seg->source_as_ImageData()->encoded();
    const auto t_decode = steady::now();
    auto decoded =
        decode_image(std::span<const uint8_t>{bytes->data(), bytes->size()}, image_limits{});
    if (!decoded)
      return std::move(decoded).err();
    st.ctx->counters.image_decodes++;
    img = std::make_shared<const decoded_image>(std::move(*decoded));
    out.key = image_key(*img, st.ctx->engine->config().vision);
    st.ctx->counters.add_stage_since(request_stage::image_decode, t_decode);
  }
  auto grid = st.ctx->engine->config().image_token_grid(img->height, img->width);
  if (!grid)
    return std::move(grid).err();
  out.grid = *grid;
  const digest cache_key = tenant_cache_key(tenant, out.key);
  if (auto hit = st.cache->find(cache_key)) {
    st.ctx->counters.encoder_cache_hits++;
    out.embeddings = std::move(hit);
    out.cache_hit = true;
    return out;
  }
  const auto t0 = steady::now();
  result<std::vector<float>> emb = make_error(errc::internal, "not encoded");
  {
    std::unique_lock lock{st.ctx->compute_mutex};
    st.ctx->counters.add_stage_since(request_stage::encode_lock_wait, t0);
    const auto t1 = steady::now();
    // Anyres: a decode step waiting for the lock goes first between two
    // views (LLaVA-1.6 runs the tower five times an image).
    auto* ctx = st.ctx;
    emb = ctx->encoder->encode(*img, [&lock, ctx]() -> status {
      if (ctx->compute_mutex.decode_waiting()) {
        lock.unlock();
        lock.lock();
      }
      return {};
    });
    st.ctx->counters.add_stage_since(request_stage::vision_encode, t1);
  }
  if (!emb)
    return std::move(emb).err();
  st.ctx->counters.encodes++;
  out.encode_us = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - t0).count());
  out.embeddings = std::make_shared<const std::vector<float>>(std::move(*emb));
  st.cache->insert(cache_key, out.embeddings);
  return out;
}

/// Tokens per step of a compile: between steps (each layer of each chunk)
/// a waiting decode step may run, so a running stream waits at most one
/// step (a quarter of a 576-token image through one layer, not all of it).
constexpr int compile_chunk_tokens = 64;

/// How long a background compile lets other work go first: past it, it
/// yields to decode steps only, so that back-to-back traffic cannot starve
/// store after use (repeats would then keep missing the library).
constexpr auto compile_max_deferral = std::chrono::seconds{2};

/// Compiles `emb` and registers the result in node_context::compiled.
/// Between steps it lets a waiting decode step run (a running stream would
/// otherwise stall for the whole compile) and, while no other image waits
/// for store after use and for up to compile_max_deferral in all, any other
/// waiter too: the next request's encode and prefill need not wait for the
/// previous request's store after use (a chat's next turn came ~150 ms
/// later on builtin:small). With a backlog it yields to decode only, so
/// that the backlog drains and repeats find their entries.
/// `after_use`: the request that sent the image streams its answer now
/// (its decode task may not have reached the decode worker yet).
/// `grid`: M-RoPE models, the image's token grid.
result<uint64_t> compile(encoder_state& st, const std::vector<float>& emb, bool after_use,
                         token_grid grid) {
  result<compiled_image> img = make_error(errc::internal, "not compiled");
  {
    auto* ctx = st.ctx;
    std::unique_lock lock{ctx->compute_mutex};
    std::chrono::steady_clock::duration deferred{};
    const auto started = std::chrono::steady_clock::now();
    img = ctx->engine->compile_image(
        emb,
        [&](int) -> status {
          auto& cl = ctx->compute_mutex;
          if (cl.decode_waiting() || (deferred < compile_max_deferral &&
                                      ctx->compiling.queued() == 0 && cl.others_waiting())) {
            const auto t0 = std::chrono::steady_clock::now();
            lock.unlock();
            lock.lock();
            deferred += std::chrono::steady_clock::now() - t0;
          }
          return {};
        },
        after_use || ctx->counters.decoding > 0 ? compile_chunk_tokens : 0, grid);
    // Its own compute: without the time it let other work go first.
    ctx->counters.add_stage(request_stage::compile,
                            uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(
                                         std::chrono::steady_clock::now() - started - deferred)
                                         .count()));
  }
  if (!img)
    return std::move(img).err();
  return st.ctx->compiled.put(std::make_shared<const compiled_image>(std::move(*img)));
}

int n_tokens_of(const node_context& ctx, const std::vector<float>& emb) {
  return static_cast<int>(emb.size() / static_cast<size_t>(ctx.engine->config().text.hidden_size));
}

caf::result<encode_result_msg> on_encode(caf::stateful_actor<encoder_state>* self,
                                         const encode_request_msg& m) {
  auto& st = self->state;
  wire::encode_result res;
  res.request_id = m->request_id();
  auto enc =
      encode_image(st, *m.root(), m->tenant() ? m->tenant()->string_view() : std::string_view{});
  if (!enc) {
    res.err = enc.err();
    return make_encode_result_msg(res);
  }
  res.key = enc->key;
  res.n_tokens = static_cast<uint32_t>(n_tokens_of(*st.ctx, *enc->embeddings));
  res.encoder_cache_hit = enc->cache_hit;
  res.encode_us = enc->encode_us;
  if (!m->compile()) {
    res.embeddings.id = st.ctx->embeddings.put(enc->embeddings);
    res.embeddings.shape = {res.n_tokens,
                            static_cast<uint32_t>(st.ctx->engine->config().text.hidden_size)};
    return make_encode_result_msg(res);
  }
  if (m->shared()) {
    res.err = make_error(errc::permission_denied,
                         "uploads go to the tenant's own library; shared libraries are written "
                         "with `mosaic cache build`");
    return make_encode_result_msg(res);
  }
  auto compiled = compile(st, *enc->embeddings, false, enc->grid);
  if (!compiled) {
    res.err = compiled.err();
    return make_encode_result_msg(res);
  }
  const std::string tenant = m->tenant() ? m->tenant()->str() : std::string{};
  auto rp = self->make_response_promise<encode_result_msg>();
  self->request(st.loader, until_deadline(m->deadline_unix_ns()), store_atom_v,
                make_store_request_msg(res.request_id, tenant, res.key, res.n_tokens, *compiled))
      .then(
          [rp, res](const store_result_msg& r) mutable {
            res.err = r->error() ? to_error(*r->error()) : error{};
            res.compiled = res.err.code == errc::none;
            rp.deliver(make_encode_result_msg(res));
          },
          [rp, res](const caf::error& err) mutable {
            res.err = from_caf_error(err);
            rp.deliver(make_encode_result_msg(res));
          });
  return rp;
}

void on_store_after_use(caf::stateful_actor<encoder_state>* self, const store_request_msg& m) {
  auto& st = self->state;
  auto* ctx = st.ctx;
  const std::string tenant = m->tenant() ? m->tenant()->str() : std::string{};
  const digest image_key = from_key(m->key());
  // Registered by the prefill worker when it sent this; requests that
  // miss the image wait until the entry is stored or this gives up.
  auto done = [ctx, tenant, image_key] { ctx->compiling.remove(tenant, image_key); };
  const uint64_t emb_id = m->embeddings() ? m->embeddings()->id() : 0;
  auto emb = ctx->embeddings.take(emb_id);
  if (!emb)
    return done();
  ctx->compiling.start(tenant, image_key);
  auto compiled = compile(st, *emb, true, grid_of(*m.root()));
  if (!compiled)
    return done(); // the image stays a miss; the next request computes it again
  self->request(
          st.loader, std::chrono::seconds{60}, store_atom_v,
          make_store_request_msg(m->request_id(), tenant, image_key, m->n_tokens(), *compiled))
      .then([done](const store_result_msg&) { done(); }, [done](const caf::error&) { done(); });
}

caf::behavior encoder_actor(caf::stateful_actor<encoder_state>* self, node_context* ctx,
                            caf::actor loader) {
  self->state.ctx = ctx;
  self->state.loader = std::move(loader);
  self->state.cache = std::make_unique<encoder_cache>(ctx->options.encoder_cache_bytes);
  return {
      [self](encode_atom, const encode_request_msg& m) { return on_encode(self, m); },
      [self](store_atom, const store_request_msg& m) { on_store_after_use(self, m); },
  };
}

} // namespace

caf::actor spawn_encoder(caf::actor_system& sys, node_context* ctx, caf::actor kv_loader) {
  return sys.spawn<caf::detached>(encoder_actor, ctx, std::move(kv_loader));
}

} // namespace mosaic::actors
