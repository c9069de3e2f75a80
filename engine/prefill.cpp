#include "engine/prefill.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "engine/decoder_layer.hpp"

namespace mosaic {

namespace {

std::string str(long long v) {
  return std::to_string(v);
}

/// Backend memory of one pass, sized for the plan's n tokens.
struct pass_buffers {
  device_buffer hidden;       // [n, hidden]   every token's hidden state
  device_buffer hc;           // [n, hidden]   rows of S_l
  device_buffer positions;    // [n] int32
  device_buffer slots;        // [n] int32     pool rows of the new sequence
  device_buffer prefix_slots; // [P] int32     pool rows of the prefix sequence
  device_buffer idx;          // [n] int32     S_l
  device_buffer pos_c;        // [n] int32     positions of S_l
  device_buffer k_work;       // [n, kv_dim]   the layer's K, all tokens
  device_buffer v_work;       // [n, kv_dim]
  device_buffer k_fresh;      // [n, kv_dim]   pre-RoPE fresh K (deviation, capture)
  device_buffer entry_k;      // [max image tokens, kv_dim]  staging (deviation)
  device_buffer deviation;    // [n]
  layer_scratch scratch;      // rows n
};

/// Checks the plan against the model and the pass's own requirements.
status check_plan_for_model(const link_plan& plan, const text_config& cfg, const kv_pool& pool,
                            const prefill_options& options) {
  if (plan.n_layers != cfg.num_layers || plan.hidden != cfg.hidden_size ||
      plan.kv_dim != cfg.kv_dim())
    return make_error(errc::invalid_argument, "link plan was built for (layers ",
                      str(plan.n_layers), ", hidden ", str(plan.hidden), ", kv_dim ",
                      str(plan.kv_dim), ") but the model has (", str(cfg.num_layers), ", ",
                      str(cfg.hidden_size), ", ", str(cfg.kv_dim()), ")");
  if (pool.n_layers() != cfg.num_layers || pool.kv_dim() != cfg.kv_dim())
    return make_error(errc::invalid_argument, "the KV pool's geometry does not match the model");
  for (int i = 0; i < plan.n_tokens(); ++i) {
    const int32_t id = plan.token_ids[static_cast<size_t>(i)];
    if (id >= cfg.vocab_size)
      return make_error(errc::invalid_argument, "token ", str(i), " has id ", str(id),
                        " outside the vocabulary of ", str(cfg.vocab_size));
  }
  if (plan.prefix.n_tokens > 0 && plan.prefix.sequence->pool() != &pool)
    return make_error(errc::invalid_argument,
                      "the prefix sequence lives in another KV pool; copy it first");
  if (options.capture != nullptr) {
    if (plan.completion.layer >= 0)
      return make_error(errc::invalid_argument, "capture needs a complete plan");
    for (const auto& s : plan.compute)
      if (static_cast<int>(s.size()) != plan.n_tokens())
        return make_error(errc::invalid_argument,
                          "capture needs every token computed at every layer");
  }
  return {};
}

result<pass_buffers> allocate_buffers(backend& be, const text_config& cfg, const link_plan& plan) {
  const auto n = static_cast<size_t>(plan.n_tokens());
  const auto h = static_cast<size_t>(cfg.hidden_size);
  const auto kv = static_cast<size_t>(cfg.kv_dim());
  size_t max_image = 1;
  for (const auto& img : plan.images)
    max_image = std::max(max_image, static_cast<size_t>(img.n_tokens));
  pass_buffers b;
  struct field {
    device_buffer* buf;
    size_t n;
  };
  for (auto [buf, count] :
       {field{&b.hidden, n * h}, field{&b.hc, n * h}, field{&b.positions, n}, field{&b.slots, n},
        field{&b.prefix_slots, static_cast<size_t>(plan.prefix.n_tokens)}, field{&b.idx, n},
        field{&b.pos_c, n}, field{&b.k_work, n * kv}, field{&b.v_work, n * kv},
        field{&b.k_fresh, n * kv}, field{&b.entry_k, max_image * kv}, field{&b.deviation, n}}) {
    auto r = allocate_floats(be, count); // int32 and f32 have the same size
    if (!r)
      return std::move(r).err();
    *buf = std::move(*r);
  }
  auto s = layer_scratch::allocate(be, cfg, plan.n_tokens());
  if (!s)
    return std::move(s).err();
  b.scratch = std::move(*s);
  return b;
}

/// Fills the hidden state with every token's input embedding.
status embed_inputs(backend& be, const decoder_weights& w, const link_plan& plan, pass_buffers& b) {
  const int h = w.config.hidden_size;
  std::vector<int32_t> text_ids;
  std::vector<int32_t> text_rows;
  for (int i = 0; i < plan.n_tokens(); ++i) {
    if (plan.token_ids[static_cast<size_t>(i)] >= 0) {
      text_ids.push_back(plan.token_ids[static_cast<size_t>(i)]);
      text_rows.push_back(i);
    }
  }
  if (!text_ids.empty()) {
    const int n_text = static_cast<int>(text_ids.size());
    MOSAIC_TRY(be.upload(b.idx.data(), text_ids.data(), text_ids.size() * sizeof(int32_t)));
    MOSAIC_TRY(be.upload(b.pos_c.data(), text_rows.data(), text_rows.size() * sizeof(int32_t)));
    be.gather_rows(w.embed_tokens.f32(), b.idx.i32(), b.hc.f32(), n_text, h);
    be.scatter_rows(b.hc.f32(), b.pos_c.i32(), b.hidden.f32(), n_text, h);
  }
  for (const auto& seg : plan.segments) {
    if (seg.kind != segment_kind::image)
      continue;
    const auto& img = plan.images[static_cast<size_t>(seg.image)];
    MOSAIC_TRY(be.upload(b.hidden.f32() + static_cast<size_t>(seg.begin) * h, img.embeddings,
                         static_cast<size_t>(img.n_tokens) * h * sizeof(float)));
  }
  // The staging buffers are reused per layer: wait until the uploads of
  // host vectors that die at the end of this function have happened.
  return be.synchronize();
}

/// Image segments whose KV is (at least partly) read from a cached entry.
std::vector<const plan_segment*> cached_segments(const link_plan& plan) {
  std::vector<const plan_segment*> out;
  for (const auto& seg : plan.segments) {
    if (seg.kind != segment_kind::image)
      continue;
    for (int t = seg.begin; t < seg.end; ++t) {
      if (plan.kv[static_cast<size_t>(t)].kind == kv_source_kind::image_entry) {
        out.push_back(&seg);
        break;
      }
    }
  }
  return out;
}

/// Places the cached KV of layer `l` into the working buffers: the prefix
/// rows as they are, image entries with K rotated to the new positions.
status place_cached(backend& be, const text_config& cfg, const link_plan& plan,
                    const std::vector<const plan_segment*>& cached, kv_pool& pool, int l,
                    pass_buffers& b) {
  const int kv = cfg.kv_dim();
  if (plan.prefix.n_tokens > 0) {
    be.gather_rows(pool.k_layer(l), b.prefix_slots.i32(), b.k_work.f32(), plan.prefix.n_tokens, kv);
    be.gather_rows(pool.v_layer(l), b.prefix_slots.i32(), b.v_work.f32(), plan.prefix.n_tokens, kv);
  }
  for (const plan_segment* seg : cached) {
    const auto& entry = *plan.images[static_cast<size_t>(seg->image)].entry;
    const size_t off = static_cast<size_t>(seg->begin) * kv;
    const size_t bytes = entry.layer_elems() * sizeof(float);
    MOSAIC_TRY(be.upload(b.k_work.f32() + off, entry.k_layer(l), bytes));
    MOSAIC_TRY(be.upload(b.v_work.f32() + off, entry.v_layer(l), bytes));
    be.rope(b.k_work.f32() + off, b.positions.i32() + seg->begin, entry.n_tokens, cfg.num_kv_heads,
            cfg.head_dim(), cfg.rope_theta);
  }
  return {};
}

/// CacheBlend's check layer: fresh vs cached pre-RoPE K at layer `l` for
/// the cached-image tokens computed there (-1 for every other token); the
/// completion then decides the later compute sets for exactly the tokens
/// measured (plan_completion's contract: a chunked pass may call it once
/// per chunk with that chunk's tokens).
status complete_plan(backend& be, const text_config& cfg, link_plan& plan,
                     const std::vector<const plan_segment*>& cached, int l, int n_c,
                     pass_buffers& b) {
  const int kv = cfg.kv_dim();
  const int n = plan.n_tokens();
  be.scatter_rows(b.scratch.k.f32(), b.idx.i32(), b.k_fresh.f32(), n_c, kv);
  for (const plan_segment* seg : cached) {
    const auto& entry = *plan.images[static_cast<size_t>(seg->image)].entry;
    MOSAIC_TRY(be.upload(b.entry_k.data(), entry.k_layer(l), entry.layer_elems() * sizeof(float)));
    be.row_sq_diff(b.k_fresh.f32() + static_cast<size_t>(seg->begin) * kv, b.entry_k.f32(),
                   b.deviation.f32() + seg->begin, entry.n_tokens, kv);
    MOSAIC_TRY(be.synchronize()); // entry_k is reused by the next image
  }
  std::vector<float> dev(static_cast<size_t>(n), -1.0f);
  if (!cached.empty())
    MOSAIC_TRY(be.download(dev.data(), b.deviation.data(), dev.size() * sizeof(float)));
  const auto& s = plan.compute[static_cast<size_t>(l)];
  std::vector<float> masked(static_cast<size_t>(n), -1.0f);
  for (int32_t t : s)
    if (plan.kv[static_cast<size_t>(t)].kind == kv_source_kind::image_entry)
      masked[static_cast<size_t>(t)] = dev[static_cast<size_t>(t)];
  MOSAIC_TRY(plan.completion.complete(plan, masked));
  plan.completion.layer = -1;
  if (plan.compute.size() != static_cast<size_t>(plan.n_layers))
    return make_error(errc::internal, "plan completion changed the number of layers");
  for (int later = l + 1; later < plan.n_layers; ++later)
    MOSAIC_TRY(plan.validate_layer(later));
  return {};
}

} // namespace

result<prefill_result> run_prefill(backend& be, const decoder_weights& w, kv_pool& pool,
                                   link_plan& plan, const prefill_options& options) {
  const auto& cfg = w.config;
  MOSAIC_TRY(plan.validate());
  MOSAIC_TRY(check_plan_for_model(plan, cfg, pool, options));
  const int n = plan.n_tokens();
  const int h = cfg.hidden_size;
  const int kv = cfg.kv_dim();
  const int hd = cfg.head_dim();

  prefill_result out;
  out.sequence = pool.new_sequence();
  MOSAIC_TRY(out.sequence.reserve(n));
  auto buffers = allocate_buffers(be, cfg, plan);
  if (!buffers)
    return std::move(buffers).err();
  pass_buffers& b = *buffers;

  const std::vector<int32_t> slots = out.sequence.slots(0, n);
  MOSAIC_TRY(be.upload(b.positions.data(), plan.positions.data(), n * sizeof(int32_t)));
  MOSAIC_TRY(be.upload(b.slots.data(), slots.data(), n * sizeof(int32_t)));
  if (plan.prefix.n_tokens > 0) {
    const auto prefix_slots = plan.prefix.sequence->slots(0, plan.prefix.n_tokens);
    MOSAIC_TRY(be.upload(b.prefix_slots.data(), prefix_slots.data(),
                         prefix_slots.size() * sizeof(int32_t)));
  }
  MOSAIC_TRY(embed_inputs(be, w, plan, b));
  const auto cached = cached_segments(plan);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  std::vector<int32_t> pos_c;
  for (int l = 0; l < cfg.num_layers; ++l) {
    const auto& lw = w.layers[static_cast<size_t>(l)];
    if (options.wait_layer)
      MOSAIC_TRY(options.wait_layer(l));
    MOSAIC_TRY(place_cached(be, cfg, plan, cached, pool, l, b));

    const auto& s = plan.compute[static_cast<size_t>(l)];
    const int n_c = static_cast<int>(s.size());
    pos_c.resize(s.size());
    for (size_t i = 0; i < s.size(); ++i)
      pos_c[i] = plan.positions[static_cast<size_t>(s[i])];
    MOSAIC_TRY(be.upload(b.idx.data(), s.data(), s.size() * sizeof(int32_t)));
    MOSAIC_TRY(be.upload(b.pos_c.data(), pos_c.data(), pos_c.size() * sizeof(int32_t)));

    be.gather_rows(b.hidden.f32(), b.idx.i32(), b.hc.f32(), n_c, h);
    project_qkv(be, cfg, lw, b.hc.f32(), n_c, b.scratch);
    if (options.capture != nullptr) {
      MOSAIC_TRY(be.synchronize());
      const size_t bytes = static_cast<size_t>(n) * kv * sizeof(float);
      MOSAIC_TRY(be.download(options.capture->k_layer(l), b.scratch.k.data(), bytes));
      MOSAIC_TRY(be.download(options.capture->v_layer(l), b.scratch.v.data(), bytes));
    }
    if (plan.completion.layer == l)
      MOSAIC_TRY(complete_plan(be, cfg, plan, cached, l, n_c, b));

    be.rope(b.scratch.q.f32(), b.pos_c.i32(), n_c, cfg.num_heads, hd, cfg.rope_theta);
    be.rope(b.scratch.k.f32(), b.pos_c.i32(), n_c, cfg.num_kv_heads, hd, cfg.rope_theta);
    // Fresh KV of S_l overwrites the cached rows before attention.
    be.scatter_rows(b.scratch.k.f32(), b.idx.i32(), b.k_work.f32(), n_c, kv);
    be.scatter_rows(b.scratch.v.f32(), b.idx.i32(), b.v_work.f32(), n_c, kv);

    attention_args a;
    a.q = b.scratch.q.f32();
    a.k = b.k_work.f32();
    a.v = b.v_work.f32();
    a.out = b.scratch.attn.f32();
    a.q_pos = b.pos_c.i32();
    a.k_pos = b.positions.i32();
    a.nq = n_c;
    a.nk = n;
    a.n_heads = cfg.num_heads;
    a.n_kv_heads = cfg.num_kv_heads;
    a.head_dim = hd;
    a.scale = scale;
    a.causal = true;
    be.attention(a);

    output_and_mlp(be, cfg, lw, b.hc.f32(), n_c, b.scratch);
    be.scatter_rows(b.hc.f32(), b.idx.i32(), b.hidden.f32(), n_c, h);
    be.scatter_rows(b.k_work.f32(), b.slots.i32(), pool.k_layer(l), n, kv);
    be.scatter_rows(b.v_work.f32(), b.slots.i32(), pool.v_layer(l), n, kv);
    // idx and pos_c are re-uploaded next layer from host vectors.
    MOSAIC_TRY(be.synchronize());
    if (options.layer_done)
      MOSAIC_TRY(options.layer_done(l, out.sequence));
  }

  auto logits = compute_logits(be, w, b.hidden.f32() + static_cast<size_t>(n - 1) * h, 1);
  if (!logits)
    return std::move(logits).err();
  out.logits = std::move(*logits);
  MOSAIC_TRY(out.sequence.set_length(n));

  auto& st = out.stats;
  st.n_tokens = n;
  for (const auto& s : plan.compute)
    st.computed_per_layer.push_back(static_cast<int>(s.size()));
  st.recomputed_fraction = plan.recomputed_fraction();
  for (const auto& src : plan.kv) {
    st.reused_image_tokens += src.kind == kv_source_kind::image_entry;
    st.reused_prefix_tokens += src.kind == kv_source_kind::prefix;
  }
  st.note = plan.note;
  return out;
}

link_plan plain_text_plan(const text_config& cfg, const std::vector<int32_t>& ids) {
  link_plan p;
  p.n_layers = cfg.num_layers;
  p.hidden = cfg.hidden_size;
  p.kv_dim = cfg.kv_dim();
  const int n = static_cast<int>(ids.size());
  p.token_ids = ids;
  p.positions.resize(ids.size());
  std::iota(p.positions.begin(), p.positions.end(), 0);
  if (n > 0)
    p.segments.push_back({segment_kind::text, 0, n, -1});
  p.kv.assign(ids.size(), kv_source{});
  p.compute.assign(static_cast<size_t>(cfg.num_layers), p.positions);
  return p;
}

result<compiled_image> compile_image(backend& be, const decoder_weights& w, kv_pool& pool,
                                     const float* embeddings, int n_tokens) {
  const auto& cfg = w.config;
  if (embeddings == nullptr || n_tokens <= 0)
    return make_error(errc::invalid_argument,
                      "compile_image needs the image's projector output (n_tokens > 0)");
  link_plan p;
  p.n_layers = cfg.num_layers;
  p.hidden = cfg.hidden_size;
  p.kv_dim = cfg.kv_dim();
  p.token_ids.assign(static_cast<size_t>(n_tokens), -1);
  p.positions.resize(static_cast<size_t>(n_tokens));
  std::iota(p.positions.begin(), p.positions.end(), 0);
  p.segments.push_back({segment_kind::image, 0, n_tokens, 0});
  p.images.push_back({"", n_tokens, embeddings, nullptr});
  p.kv.assign(static_cast<size_t>(n_tokens), kv_source{});
  p.compute.assign(static_cast<size_t>(cfg.num_layers), p.positions);

  compiled_image img;
  img.resize(n_tokens, cfg.num_layers, cfg.hidden_size, cfg.kv_dim());
  std::copy_n(embeddings, img.embeddings.size(), img.embeddings.begin());
  prefill_options options;
  options.capture = &img;
  auto r = run_prefill(be, w, pool, p, options);
  if (!r)
    return std::move(r).err();
  return img;
}

} // namespace mosaic
