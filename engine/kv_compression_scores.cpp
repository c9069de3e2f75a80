#include "engine/kv_compression_scores.hpp"

#include <algorithm>
#include <cmath>

#include "engine/decoder_layer.hpp"

namespace mosaic::detail {

namespace {

/// Gathers layer `l`'s K (or V) rows of tokens [0, n) into `dst` [n, kv].
void gather_layer(backend& be, const float* layer, const device_buffer& slots, float* dst, int n,
                  int kv) {
  be.gather_rows(layer, slots.i32(), dst, n, kv);
}

/// Softmax attention mass each key receives from the window queries,
/// summed over queries and heads (host). q: [W, n_heads*hd] post-RoPE;
/// k: [n, n_kv*hd] post-RoPE.
void add_attention_mass(const text_config& cfg, const std::vector<float>& q,
                        const std::vector<float>& k, const std::vector<int32_t>& q_pos,
                        const std::vector<int32_t>& k_pos, std::vector<float>& score) {
  const int hd = cfg.head_dim();
  const int group = cfg.num_heads / cfg.num_kv_heads;
  const int n = static_cast<int>(k_pos.size());
  const int qd = cfg.num_heads * hd;
  const int kvd = cfg.kv_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<double> logit(static_cast<size_t>(n));
  for (size_t i = 0; i < q_pos.size(); ++i) {
    for (int head = 0; head < cfg.num_heads; ++head) {
      const float* qi = q.data() + i * static_cast<size_t>(qd) + static_cast<size_t>(head) * hd;
      const int g = head / group;
      double max_logit = -1e300;
      int visible = 0;
      for (int j = 0; j < n && k_pos[static_cast<size_t>(j)] <= q_pos[i]; ++j) {
        const float* kj = k.data() + static_cast<size_t>(j) * kvd + static_cast<size_t>(g) * hd;
        double dot = 0.0;
        for (int d = 0; d < hd; ++d)
          dot += static_cast<double>(qi[d]) * kj[d];
        logit[static_cast<size_t>(j)] = dot * scale;
        max_logit = std::max(max_logit, logit[static_cast<size_t>(j)]);
        visible = j + 1;
      }
      double sum = 0.0;
      for (int j = 0; j < visible; ++j) {
        logit[static_cast<size_t>(j)] = std::exp(logit[static_cast<size_t>(j)] - max_logit);
        sum += logit[static_cast<size_t>(j)];
      }
      for (int j = 0; j < visible; ++j)
        score[static_cast<size_t>(j)] += static_cast<float>(logit[static_cast<size_t>(j)] / sum);
    }
  }
}

/// Centered moving average with a `kernel`-wide window (truncated at ends).
std::vector<float> avg_pool(const std::vector<float>& x, int kernel) {
  if (kernel <= 1)
    return x;
  const int n = static_cast<int>(x.size());
  const int half = kernel / 2;
  std::vector<float> out(x.size());
  for (int i = 0; i < n; ++i) {
    const int lo = std::max(0, i - half);
    const int hi = std::min(n, i + half + 1);
    double s = 0.0;
    for (int j = lo; j < hi; ++j)
      s += x[static_cast<size_t>(j)];
    out[static_cast<size_t>(i)] = static_cast<float>(s / (hi - lo));
  }
  return out;
}

/// Input embeddings of tokens [first, n) into `hidden` [n - first, h].
status window_embeddings(backend& be, const decoder_weights& w, const link_plan& plan, int first,
                         float* hidden) {
  const int n = plan.n_tokens();
  const int h = w.config.hidden_size;
  std::vector<int32_t> ids;
  for (int t = first; t < n; ++t)
    ids.push_back(std::max(0, plan.token_ids[static_cast<size_t>(t)]));
  auto ids_d = upload_ints(be, ids);
  if (!ids_d)
    return std::move(ids_d).err();
  be.gather_rows(w.embed_tokens.f32(), ids_d->i32(), hidden, n - first, h);
  for (const auto& seg : plan.segments) {
    if (seg.kind != segment_kind::image || seg.end <= first)
      continue;
    const auto& img = plan.images[static_cast<size_t>(seg.image)];
    if (img.embeddings == nullptr)
      return make_error(errc::invalid_argument, "snapkv's observation window covers image ",
                        std::to_string(seg.image),
                        " whose embeddings the plan does not carry; use a smaller window");
    for (int t = std::max(first, seg.begin); t < seg.end; ++t)
      MOSAIC_TRY(be.upload(hidden + static_cast<size_t>(t - first) * h,
                           img.embeddings + static_cast<size_t>(t - seg.begin) * h,
                           sizeof(float) * static_cast<size_t>(h)));
  }
  return {};
}

} // namespace

result<layer_scores> snapkv_scores(backend& be, const decoder_weights& w, kv_pool& pool,
                                   const kv_sequence& seq, const link_plan& plan, int window,
                                   int pool_kernel) {
  const auto& cfg = w.config;
  const int n = plan.n_tokens();
  const int W = std::min(window, n);
  const int first = n - W;
  const int h = cfg.hidden_size;
  const int kv = cfg.kv_dim();
  const int qd = cfg.num_heads * cfg.head_dim();

  auto hidden = allocate_floats(be, static_cast<size_t>(W) * h);
  auto kbuf = allocate_floats(be, static_cast<size_t>(n) * kv);
  auto vbuf = allocate_floats(be, static_cast<size_t>(n) * kv);
  auto slots = upload_ints(be, seq.slots(0, n));
  auto k_pos_d = upload_ints(be, plan.positions);
  const std::vector<int32_t> q_pos(plan.positions.begin() + first, plan.positions.end());
  auto q_pos_d = upload_ints(be, q_pos);
  // M-RoPE (Qwen2-VL): the window's queries turn by their three rotary
  // components, as the prefill turned them; q_pos stays the causal order.
  std::vector<int32_t> q_rope;
  if (!plan.rope_positions.empty())
    for (size_t c = 0; c < 3; ++c)
      q_rope.insert(q_rope.end(),
                    plan.rope_positions.begin() + static_cast<std::ptrdiff_t>(c * n + first),
                    plan.rope_positions.begin() + static_cast<std::ptrdiff_t>((c + 1) * n));
  auto q_rope_d = upload_ints(be, q_rope);
  auto scratch = layer_scratch::allocate(be, cfg, W);
  for (auto* r : {&hidden, &kbuf, &vbuf, &slots, &k_pos_d, &q_pos_d, &q_rope_d})
    if (!*r)
      return std::move(*r).err();
  if (!scratch)
    return std::move(scratch).err();
  MOSAIC_TRY(window_embeddings(be, w, plan, first, hidden->f32()));

  layer_scratch& sc = *scratch;
  attention_args a;
  a.q = sc.q.f32();
  a.k = kbuf->f32();
  a.v = vbuf->f32();
  a.out = sc.attn.f32();
  a.q_pos = q_pos_d->i32();
  a.k_pos = k_pos_d->i32();
  a.nq = W;
  a.nk = n;
  a.n_heads = cfg.num_heads;
  a.n_kv_heads = cfg.num_kv_heads;
  a.head_dim = cfg.head_dim();
  a.scale = 1.0f / std::sqrt(static_cast<float>(cfg.head_dim()));
  a.causal = true;

  layer_scores scores(static_cast<size_t>(cfg.num_layers));
  std::vector<float> q_host(static_cast<size_t>(W) * qd);
  std::vector<float> k_host(static_cast<size_t>(n) * kv);
  for (int l = 0; l < cfg.num_layers; ++l) {
    const auto& lw = w.layers[static_cast<size_t>(l)];
    gather_layer(be, pool.k_layer(l), *slots, kbuf->f32(), n, kv);
    gather_layer(be, pool.v_layer(l), *slots, vbuf->f32(), n, kv);
    project_qkv(be, cfg, lw, hidden->f32(), W, sc);
    if (q_rope.empty())
      be.rope(sc.q.f32(), q_pos_d->i32(), W, cfg.num_heads, cfg.head_dim(), cfg.rope_theta);
    else
      be.rope_sectioned(sc.q.f32(), q_rope_d->i32(), W, cfg.num_heads, cfg.head_dim(),
                        cfg.rope_theta, rope_sections{cfg.mrope_section, false});
    MOSAIC_TRY(be.download(q_host.data(), sc.q.f32(), sizeof(float) * q_host.size()));
    MOSAIC_TRY(be.download(k_host.data(), kbuf->f32(), sizeof(float) * k_host.size()));
    std::vector<float> score(static_cast<size_t>(n), 0.0f);
    add_attention_mass(cfg, q_host, k_host, q_pos, plan.positions, score);
    scores[static_cast<size_t>(l)] = avg_pool(score, pool_kernel);
    if (l + 1 < cfg.num_layers) {
      be.attention(a);
      output_and_mlp(be, cfg, lw, hidden->f32(), W, sc);
    }
  }
  MOSAIC_TRY(be.synchronize());
  return scores;
}

result<layer_scores> keynorm_scores(backend& be, kv_pool& pool, const kv_sequence& seq,
                                    int n_tokens) {
  const int kv = pool.kv_dim();
  auto slots = upload_ints(be, seq.slots(0, n_tokens));
  auto kbuf = allocate_floats(be, static_cast<size_t>(n_tokens) * kv);
  if (!slots)
    return std::move(slots).err();
  if (!kbuf)
    return std::move(kbuf).err();
  layer_scores scores(static_cast<size_t>(pool.n_layers()));
  std::vector<float> k_host(static_cast<size_t>(n_tokens) * kv);
  for (int l = 0; l < pool.n_layers(); ++l) {
    gather_layer(be, pool.k_layer(l), *slots, kbuf->f32(), n_tokens, kv);
    MOSAIC_TRY(be.download(k_host.data(), kbuf->f32(), sizeof(float) * k_host.size()));
    auto& s = scores[static_cast<size_t>(l)];
    s.resize(static_cast<size_t>(n_tokens));
    for (int t = 0; t < n_tokens; ++t) {
      double sq = 0.0;
      for (int d = 0; d < kv; ++d) {
        const double x = k_host[static_cast<size_t>(t) * kv + static_cast<size_t>(d)];
        sq += x * x;
      }
      s[static_cast<size_t>(t)] = -static_cast<float>(std::sqrt(sq));
    }
  }
  return scores;
}

} // namespace mosaic::detail
