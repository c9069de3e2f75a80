#include "engine/prefill.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <span>
#include <string>
#include <utility>

#include "engine/decoder_layer.hpp"

namespace mosaic {

namespace {

std::string str(long long v) {
  return std::to_string(v);
}

/// Backend memory of one pass: token-indexed buffers for the plan's n
/// tokens, row buffers for one chunk's compute set.
struct pass_buffers {
  int rows = 0;               ///< the most rows one chunk computes
  device_buffer hidden;       // [n, hidden]   every token's hidden state
  device_buffer hc;           // [rows, hidden] rows of S_l in the chunk
  device_buffer positions;    // [n] int32
  device_buffer slots;        // [n] int32     pool rows of the new sequence
  device_buffer prefix_slots; // [P] int32     pool rows of a separate prefix sequence
  device_buffer idx;          // [rows] int32  S_l in the chunk
  device_buffer pos_c;        // [rows] int32  positions of S_l in the chunk
  device_buffer rope_all;     // [3, n] int32  M-RoPE: the plan's rotary positions
  device_buffer rope_c;       // [3, rows] int32  M-RoPE: those of S_l in the chunk
  device_buffer k_work;       // [n, kv_dim]   the layer's K, all tokens up to the chunk's end
  device_buffer v_work;       // [n, kv_dim]
  device_buffer k_fresh;      // [n, kv_dim]   pre-RoPE fresh K (deviation)
  device_buffer entry_k;      // [max image tokens, kv_dim]  staging (deviation)
  device_buffer deviation;    // [n]
  layer_scratch scratch;      // rows
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
  const int n_prefix = plan.prefix.n_tokens;
  if (n_prefix > 0 && plan.prefix.sequence->pool() != &pool)
    return make_error(errc::invalid_argument,
                      "the prefix sequence lives in another KV pool; copy it first");
  if (n_prefix >= plan.n_tokens())
    return make_error(errc::invalid_argument, "the prefix covers every token; the last token ",
                      "must be computed for its logits");
  for (size_t l = 0; l < plan.compute.size(); ++l)
    if (!plan.compute[l].empty() && plan.compute[l].front() < n_prefix)
      return make_error(errc::invalid_argument, "S_", str(static_cast<long long>(l)),
                        " computes prefix token ", str(plan.compute[l].front()),
                        "; prefix rows are reused as they are");
  if (options.extend != nullptr) {
    if (options.extend->pool() != &pool)
      return make_error(errc::invalid_argument, "the sequence to extend lives in another pool");
    if (n_prefix > 0 && plan.prefix.sequence != options.extend)
      return make_error(errc::invalid_argument,
                        "a pass that extends a sequence takes its prefix from that sequence");
    if (options.extend->length() != n_prefix)
      return make_error(errc::invalid_argument, "the sequence to extend holds ",
                        str(options.extend->length()), " tokens but the plan's prefix is ",
                        str(n_prefix));
  }
  if (options.chunk_tokens < 0)
    return make_error(errc::invalid_argument, "chunk_tokens must be >= 0");
  // Text alone turns the same under M-RoPE and 1-D RoPE; an image does not.
  if (cfg.mrope() && plan.rope_positions.empty() && !plan.images.empty())
    return make_error(errc::invalid_argument,
                      "the model uses M-RoPE: a plan with images needs rope_positions "
                      "(assign_mrope_positions)");
  if (!cfg.mrope() && !plan.rope_positions.empty())
    return make_error(errc::invalid_argument,
                      "the plan has M-RoPE positions but the model uses 1-D RoPE");
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

result<pass_buffers> allocate_buffers(backend& be, const text_config& cfg, const link_plan& plan,
                                      int rows) {
  const auto n = static_cast<size_t>(plan.n_tokens());
  const auto h = static_cast<size_t>(cfg.hidden_size);
  const auto kv = static_cast<size_t>(cfg.kv_dim());
  const auto r = static_cast<size_t>(rows);
  size_t max_image = 1;
  for (const auto& img : plan.images)
    max_image = std::max(max_image, static_cast<size_t>(img.n_tokens));
  pass_buffers b;
  b.rows = rows;
  struct field {
    device_buffer* buf;
    size_t n;
  };
  const bool blend = plan.completion.layer >= 0;
  for (auto [buf, count] :
       {field{&b.hidden, n * h}, field{&b.hc, r * h}, field{&b.positions, n}, field{&b.slots, n},
        field{&b.prefix_slots, static_cast<size_t>(plan.prefix.n_tokens)}, field{&b.idx, r},
        field{&b.pos_c, r}, field{&b.k_work, n * kv}, field{&b.v_work, n * kv},
        field{&b.k_fresh, blend ? n * kv : 1}, field{&b.entry_k, blend ? max_image * kv : 1},
        field{&b.deviation, blend ? n : 1},
        field{&b.rope_all, plan.rope_positions.empty() ? 1 : 3 * n},
        field{&b.rope_c, plan.rope_positions.empty() ? 1 : 3 * r}}) {
    auto a = allocate_floats(be, std::max<size_t>(count, 1)); // int32 and f32 have the same size
    if (!a)
      return std::move(a).err();
    *buf = std::move(*a);
  }
  auto s = layer_scratch::allocate(be, cfg, rows);
  if (!s)
    return std::move(s).err();
  b.scratch = std::move(*s);
  return b;
}

/// Fills the hidden state of tokens [from, n) with their input embeddings
/// (text in batches of b.rows: the row buffers are chunk-sized).
status embed_inputs(backend& be, const decoder_weights& w, const link_plan& plan, int from,
                    pass_buffers& b) {
  const int h = w.config.hidden_size;
  std::vector<int32_t> text_ids;
  std::vector<int32_t> text_rows;
  auto flush = [&]() -> status {
    if (text_ids.empty())
      return {};
    const int n_text = static_cast<int>(text_ids.size());
    MOSAIC_TRY(be.upload(b.idx.data(), text_ids.data(), text_ids.size() * sizeof(int32_t)));
    MOSAIC_TRY(be.upload(b.pos_c.data(), text_rows.data(), text_rows.size() * sizeof(int32_t)));
    be.gather_rows(w.embed_tokens.f32(), b.idx.i32(), b.hc.f32(), n_text, h);
    be.scatter_rows(b.hc.f32(), b.pos_c.i32(), b.hidden.f32(), n_text, h);
    // The host vectors are refilled next: wait for the uploads.
    MOSAIC_TRY(be.synchronize());
    text_ids.clear();
    text_rows.clear();
    return {};
  };
  for (int i = from; i < plan.n_tokens(); ++i) {
    if (plan.token_ids[static_cast<size_t>(i)] >= 0) {
      text_ids.push_back(plan.token_ids[static_cast<size_t>(i)]);
      text_rows.push_back(i);
      if (static_cast<int>(text_ids.size()) == b.rows)
        MOSAIC_TRY(flush());
    }
  }
  MOSAIC_TRY(flush());
  for (const auto& seg : plan.segments) {
    if (seg.kind != segment_kind::image || seg.end <= from)
      continue;
    const auto& img = plan.images[static_cast<size_t>(seg.image)];
    const int first = std::max(seg.begin, from);
    MOSAIC_TRY(be.upload(b.hidden.f32() + static_cast<size_t>(first) * h,
                         img.embeddings + static_cast<size_t>(first - seg.begin) * h,
                         static_cast<size_t>(seg.end - first) * h * sizeof(float)));
  }
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

/// Rows [begin, end) of `seg` that read its cached entry, clipped to the
/// chunk [c0, c1): an image that straddles the prefix keeps its prefix
/// rows, one that straddles a chunk boundary is placed chunk by chunk.
std::pair<int, int> entry_rows(const link_plan& plan, const plan_segment& seg, int c0, int c1) {
  int begin = std::max(seg.begin, c0);
  int end = std::min(seg.end, c1);
  while (begin < end && plan.kv[static_cast<size_t>(begin)].kind != kv_source_kind::image_entry)
    ++begin;
  return {begin, std::max(begin, end)};
}

/// RoPE of `rows` rows of `x` (n_heads heads): by the 1-D positions
/// `pos`, or, for an M-RoPE plan, by the three components at `rope`
/// (component c of row r at rope[c * rope_stride + r]) in the model's
/// sections.
void rotate(backend& be, const text_config& cfg, const link_plan& plan, float* x, int rows,
            int n_heads, const int32_t* pos, const int32_t* rope, int rope_stride) {
  if (plan.rope_positions.empty()) {
    be.rope(x, pos, rows, n_heads, cfg.head_dim(), cfg.rope_theta);
    return;
  }
  be.rope_sectioned(x, rope, rows, n_heads, cfg.head_dim(), cfg.rope_theta,
                    rope_sections{cfg.mrope_section, false}, 0, rope_stride);
}

/// Places the cached KV of layer `l` for the chunk [c0, c1) into the
/// working buffers: every earlier row (prefix, earlier chunks) from the
/// sequence's pool slots as it is, the chunk's image-entry rows with K
/// rotated to their positions.
status place_cached(backend& be, const text_config& cfg, const link_plan& plan,
                    const std::vector<const plan_segment*>& cached, kv_pool& pool, int l, int c0,
                    int c1, pass_buffers& b) {
  const int kv = cfg.kv_dim();
  if (c0 > 0) {
    be.gather_rows(pool.k_layer(l), b.slots.i32(), b.k_work.f32(), c0, kv);
    be.gather_rows(pool.v_layer(l), b.slots.i32(), b.v_work.f32(), c0, kv);
  }
  for (const plan_segment* seg : cached) {
    const auto [begin, end] = entry_rows(plan, *seg, c0, c1);
    if (begin == end)
      continue;
    const auto& entry = *plan.images[static_cast<size_t>(seg->image)].entry;
    const size_t off = static_cast<size_t>(begin) * kv;
    const size_t row0 = static_cast<size_t>(begin - seg->begin) * kv;
    const size_t bytes = static_cast<size_t>(end - begin) * kv * sizeof(float);
    MOSAIC_TRY(be.upload(b.k_work.f32() + off, entry.k_layer(l) + row0, bytes));
    MOSAIC_TRY(be.upload(b.v_work.f32() + off, entry.v_layer(l) + row0, bytes));
    rotate(be, cfg, plan, b.k_work.f32() + off, end - begin, cfg.num_kv_heads,
           b.positions.i32() + begin, b.rope_all.i32() + begin, plan.n_tokens());
  }
  return {};
}

/// Copies a separate prefix sequence's rows into the new sequence's first
/// slots, every layer (the old-style `prefix_kv` of another sequence).
status copy_prefix(backend& be, const text_config& cfg, const link_plan& plan, kv_pool& pool,
                   pass_buffers& b) {
  const int n_prefix = plan.prefix.n_tokens;
  const auto prefix_slots = plan.prefix.sequence->slots(0, n_prefix);
  MOSAIC_TRY(
      be.upload(b.prefix_slots.data(), prefix_slots.data(), prefix_slots.size() * sizeof(int32_t)));
  const int kv = cfg.kv_dim();
  for (int l = 0; l < cfg.num_layers; ++l) {
    be.gather_rows(pool.k_layer(l), b.prefix_slots.i32(), b.k_work.f32(), n_prefix, kv);
    be.gather_rows(pool.v_layer(l), b.prefix_slots.i32(), b.v_work.f32(), n_prefix, kv);
    be.scatter_rows(b.k_work.f32(), b.slots.i32(), pool.k_layer(l), n_prefix, kv);
    be.scatter_rows(b.v_work.f32(), b.slots.i32(), pool.v_layer(l), n_prefix, kv);
  }
  return be.synchronize();
}

/// CacheBlend's check layer: fresh vs cached pre-RoPE K at layer `l` for
/// the cached-image tokens computed there (-1 for every other token); the
/// completion then decides the later compute sets for exactly the tokens
/// measured (plan_completion's contract: a chunked pass may call it once
/// per chunk with that chunk's tokens).
status complete_plan(backend& be, const text_config& cfg, link_plan& plan,
                     const std::vector<const plan_segment*>& cached, int l, int n_c, int c0, int c1,
                     pass_buffers& b) {
  const int kv = cfg.kv_dim();
  const int n = plan.n_tokens();
  be.scatter_rows(b.scratch.k.f32(), b.idx.i32(), b.k_fresh.f32(), n_c, kv);
  std::vector<float> dev(static_cast<size_t>(n), -1.0f);
  bool measured = false;
  for (const plan_segment* seg : cached) {
    const auto [begin, end] = entry_rows(plan, *seg, c0, c1);
    if (begin == end)
      continue;
    const auto& entry = *plan.images[static_cast<size_t>(seg->image)].entry;
    MOSAIC_TRY(be.upload(b.entry_k.data(),
                         entry.k_layer(l) + static_cast<size_t>(begin - seg->begin) * kv,
                         static_cast<size_t>(end - begin) * kv * sizeof(float)));
    be.row_sq_diff(b.k_fresh.f32() + static_cast<size_t>(begin) * kv, b.entry_k.f32(),
                   b.deviation.f32() + begin, end - begin, kv);
    MOSAIC_TRY(be.synchronize()); // entry_k is reused by the next image
    measured = true;
  }
  if (measured)
    MOSAIC_TRY(be.download(dev.data(), b.deviation.data(), dev.size() * sizeof(float)));
  const auto& s = plan.compute[static_cast<size_t>(l)];
  std::vector<float> masked(static_cast<size_t>(n), -1.0f);
  for (int32_t t : s)
    if (t >= c0 && t < c1 && plan.kv[static_cast<size_t>(t)].kind == kv_source_kind::image_entry)
      masked[static_cast<size_t>(t)] = dev[static_cast<size_t>(t)];
  MOSAIC_TRY(plan.completion.complete(plan, masked));
  if (plan.compute.size() != static_cast<size_t>(plan.n_layers))
    return make_error(errc::internal, "plan completion changed the number of layers");
  for (int later = l + 1; later < plan.n_layers; ++later)
    MOSAIC_TRY(plan.validate_layer(later));
  return {};
}

/// The tokens of S_l inside [c0, c1).
std::span<const int32_t> chunk_of(const std::vector<int32_t>& s, int c0, int c1) {
  const auto lo = std::lower_bound(s.begin(), s.end(), c0);
  const auto hi = std::lower_bound(lo, s.end(), c1);
  return {s.data() + (lo - s.begin()), static_cast<size_t>(hi - lo)};
}

} // namespace

result<prefill_result> run_prefill(backend& be, const decoder_weights& w, kv_pool& pool,
                                   link_plan& plan, const prefill_options& options) {
  const auto& cfg = w.config;
  MOSAIC_TRY(plan.validate());
  MOSAIC_TRY(check_plan_for_model(plan, cfg, pool, options));
  if (options.on_plan)
    options.on_plan(plan);
  const int n = plan.n_tokens();
  const int h = cfg.hidden_size;
  const int kv = cfg.kv_dim();
  const int hd = cfg.head_dim();
  const int n_prefix = plan.prefix.n_tokens;
  const bool shared_prefix = options.extend != nullptr;

  prefill_result out;
  out.sequence = shared_prefix ? std::move(*options.extend) : pool.new_sequence();
  if (shared_prefix)
    plan.prefix.sequence = n_prefix > 0 ? &out.sequence : nullptr;
  MOSAIC_TRY(out.sequence.reserve(n));
  const int chunk =
      options.chunk_tokens > 0 ? std::min(options.chunk_tokens, n - n_prefix) : n - n_prefix;
  auto buffers = allocate_buffers(be, cfg, plan, chunk);
  if (!buffers)
    return std::move(buffers).err();
  pass_buffers& b = *buffers;

  const std::vector<int32_t> slots = out.sequence.slots(0, n);
  MOSAIC_TRY(be.upload(b.positions.data(), plan.positions.data(), n * sizeof(int32_t)));
  if (!plan.rope_positions.empty())
    MOSAIC_TRY(be.upload(b.rope_all.data(), plan.rope_positions.data(),
                         plan.rope_positions.size() * sizeof(int32_t)));
  MOSAIC_TRY(be.upload(b.slots.data(), slots.data(), n * sizeof(int32_t)));
  if (n_prefix > 0 && !shared_prefix)
    MOSAIC_TRY(copy_prefix(be, cfg, plan, pool, b));
  MOSAIC_TRY(embed_inputs(be, w, plan, n_prefix, b));
  const auto cached = cached_segments(plan);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  std::vector<int32_t> pos_c;
  std::vector<int32_t> rope_c;
  for (int c0 = n_prefix; c0 < n;) {
    const int c1 = std::min(n, c0 + chunk);
    const bool last_chunk = c1 == n;
    for (int l = 0; l < cfg.num_layers; ++l) {
      const auto& lw = w.layers[static_cast<size_t>(l)];
      if (options.wait_layer)
        MOSAIC_TRY(options.wait_layer(l));
      MOSAIC_TRY(place_cached(be, cfg, plan, cached, pool, l, c0, c1, b));

      const auto s = chunk_of(plan.compute[static_cast<size_t>(l)], c0, c1);
      const int n_c = static_cast<int>(s.size());
      if (n_c > 0) {
        pos_c.resize(s.size());
        for (size_t i = 0; i < s.size(); ++i)
          pos_c[i] = plan.positions[static_cast<size_t>(s[i])];
        MOSAIC_TRY(be.upload(b.idx.data(), s.data(), s.size() * sizeof(int32_t)));
        MOSAIC_TRY(be.upload(b.pos_c.data(), pos_c.data(), pos_c.size() * sizeof(int32_t)));
        if (!plan.rope_positions.empty()) {
          rope_c.resize(3 * s.size());
          for (size_t c = 0; c < 3; ++c)
            for (size_t i = 0; i < s.size(); ++i)
              rope_c[c * s.size() + i] =
                  plan.rope_positions[c * static_cast<size_t>(n) + static_cast<size_t>(s[i])];
          MOSAIC_TRY(be.upload(b.rope_c.data(), rope_c.data(), rope_c.size() * sizeof(int32_t)));
        }

        be.gather_rows(b.hidden.f32(), b.idx.i32(), b.hc.f32(), n_c, h);
        project_qkv(be, cfg, lw, b.hc.f32(), n_c, b.scratch);
        if (options.capture != nullptr) { // every token computed: s is rows c0..c1
          MOSAIC_TRY(be.synchronize());
          const size_t bytes = static_cast<size_t>(n_c) * kv * sizeof(float);
          const size_t at = static_cast<size_t>(c0) * kv;
          MOSAIC_TRY(be.download(options.capture->k_layer(l) + at, b.scratch.k.data(), bytes));
          MOSAIC_TRY(be.download(options.capture->v_layer(l) + at, b.scratch.v.data(), bytes));
        }
        if (plan.completion.layer == l)
          MOSAIC_TRY(complete_plan(be, cfg, plan, cached, l, n_c, c0, c1, b));

        rotate(be, cfg, plan, b.scratch.k.f32(), n_c, cfg.num_kv_heads, b.pos_c.i32(),
               b.rope_c.i32(), n_c);
        // Fresh KV of S_l overwrites the cached rows before attention.
        be.scatter_rows(b.scratch.k.f32(), b.idx.i32(), b.k_work.f32(), n_c, kv);
        be.scatter_rows(b.scratch.v.f32(), b.idx.i32(), b.v_work.f32(), n_c, kv);

        // The last layer's outputs feed only the logits: its K and V are
        // kept for every token, but attention, o_proj and the MLP run for
        // the last token alone (in the last chunk; in earlier chunks not
        // at all).
        const bool last_layer = l == cfg.num_layers - 1;
        const int first_row = last_layer ? n_c - 1 : 0;
        const int rows = last_layer ? (last_chunk ? 1 : 0) : n_c;
        if (rows > 0) {
          const size_t q_dim = static_cast<size_t>(cfg.num_heads) * hd;
          float* q = b.scratch.q.f32() + static_cast<size_t>(first_row) * q_dim;
          rotate(be, cfg, plan, q, rows, cfg.num_heads, b.pos_c.i32() + first_row,
                 b.rope_c.i32() + first_row, n_c);
          attention_args a;
          a.q = q;
          a.k = b.k_work.f32();
          a.v = b.v_work.f32();
          a.out = b.scratch.attn.f32();
          a.q_pos = b.pos_c.i32() + first_row;
          a.k_pos = b.positions.i32();
          a.nq = rows;
          a.nk = c1;
          a.n_heads = cfg.num_heads;
          a.n_kv_heads = cfg.num_kv_heads;
          a.head_dim = hd;
          a.scale = scale;
          a.causal = true;
          be.attention(a);

          float* hc = b.hc.f32() + static_cast<size_t>(first_row) * h;
          output_and_mlp(be, cfg, lw, hc, rows, b.scratch);
          be.scatter_rows(hc, b.idx.i32() + first_row, b.hidden.f32(), rows, h);
        }
      }
      // The chunk's rows only: earlier rows (and shared prefix blocks)
      // are final already and never written again.
      const size_t off = static_cast<size_t>(c0) * kv;
      be.scatter_rows(b.k_work.f32() + off, b.slots.i32() + c0, pool.k_layer(l), c1 - c0, kv);
      be.scatter_rows(b.v_work.f32() + off, b.slots.i32() + c0, pool.v_layer(l), c1 - c0, kv);
      // idx and pos_c are re-uploaded next layer from host vectors.
      MOSAIC_TRY(be.synchronize());
      if (last_chunk && options.layer_done)
        MOSAIC_TRY(options.layer_done(l, out.sequence));
    }
    c0 = c1;
    if (!last_chunk && options.between_chunks)
      MOSAIC_TRY(options.between_chunks(c1));
  }
  plan.completion.layer = -1;

  auto logits = compute_logits(be, w, b.hidden.f32() + static_cast<size_t>(n - 1) * h, 1);
  if (!logits)
    return std::move(logits).err();
  out.logits = std::move(*logits);
  out.rope_delta = plan.rope_delta;
  MOSAIC_TRY(out.sequence.set_length(n));

  auto& st = out.stats;
  st.n_tokens = n;
  st.chunks = (n - n_prefix + chunk - 1) / chunk;
  for (const auto& s : plan.compute)
    st.computed_per_layer.push_back(static_cast<int>(s.size()));
  st.recomputed_fraction = plan.recomputed_fraction();
  // The sets are nested (validated): S_0 holds every token computed at
  // some layer, the deepest set those computed at every layer.
  std::vector<uint8_t> at_some(static_cast<size_t>(n), 0), at_all(static_cast<size_t>(n), 0);
  for (int32_t t : plan.compute.front())
    at_some[static_cast<size_t>(t)] = 1;
  for (int32_t t : plan.compute.back())
    at_all[static_cast<size_t>(t)] = 1;
  for (int t = 0; t < n; ++t) {
    const auto kind = plan.kv[static_cast<size_t>(t)].kind;
    st.reused_image_tokens += kind == kv_source_kind::image_entry;
    st.reused_prefix_tokens += kind == kv_source_kind::prefix;
    if (kind == kv_source_kind::image_entry && at_some[static_cast<size_t>(t)] != 0)
      ++st.recomputed_image_tokens;
    if (kind != kv_source_kind::compute && at_all[static_cast<size_t>(t)] == 0)
      ++st.cached_tokens;
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
                                     const float* embeddings, int n_tokens,
                                     const std::function<status(int layer)>& between_steps,
                                     int chunk_tokens, token_grid grid) {
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
  p.images.push_back({"", n_tokens, embeddings, nullptr, grid});
  p.kv.assign(static_cast<size_t>(n_tokens), kv_source{});
  p.compute.assign(static_cast<size_t>(cfg.num_layers), p.positions);
  // M-RoPE: the image's own positions from the origin (s = 0), so that
  // placing it later moves every component by the same amount.
  if (cfg.mrope())
    MOSAIC_TRY(assign_mrope_positions(p));

  compiled_image img;
  img.resize(n_tokens, cfg.num_layers, cfg.hidden_size, cfg.kv_dim());
  img.grid = cfg.mrope() ? grid : token_grid{};
  std::copy_n(embeddings, img.embeddings.size(), img.embeddings.begin());
  prefill_options options;
  options.capture = &img;
  options.chunk_tokens = chunk_tokens;
  // Before each layer of each chunk the backend is idle (the previous
  // step ended with a synchronize): the caller may lend the device there.
  if (between_steps)
    options.wait_layer = between_steps;
  auto r = run_prefill(be, w, pool, p, options);
  if (!r)
    return std::move(r).err();
  return img;
}

} // namespace mosaic
