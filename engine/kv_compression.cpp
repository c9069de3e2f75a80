#include "engine/kv_compression.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/decoder_layer.hpp"
#include "engine/kv_compression_scores.hpp"

namespace mosaic {

namespace {

/// Tokens that every layer keeps regardless of score.
std::vector<char> mandatory_tokens(const compression_spec& spec, int n) {
  std::vector<char> m(static_cast<size_t>(n), 0);
  m[static_cast<size_t>(n - 1)] = 1;
  auto keep_range = [&](int begin, int end) {
    for (int t = std::max(0, begin); t < std::min(n, end); ++t)
      m[static_cast<size_t>(t)] = 1;
  };
  if (spec.method == compression_method::snapkv)
    keep_range(n - spec.window, n);
  if (spec.method == compression_method::streaming) {
    keep_range(0, spec.sink);
    keep_range(n - spec.recent, n);
  }
  return m;
}

/// Per modality: the mandatory tokens, then the best-scored others up to
/// the modality's budget. Returns sorted token indices.
std::vector<int32_t> select_tokens(const std::vector<float>& score, const std::vector<char>& must,
                                   const std::vector<char>& is_image,
                                   const compression_spec& spec) {
  const int n = static_cast<int>(score.size());
  std::vector<int32_t> kept;
  for (int modality = 0; modality < 2; ++modality) {
    std::vector<int32_t> pool, forced;
    for (int t = 0; t < n; ++t) {
      if (is_image[static_cast<size_t>(t)] != modality)
        continue;
      (must[static_cast<size_t>(t)] ? forced : pool).push_back(t);
    }
    const int count = static_cast<int>(pool.size() + forced.size());
    const float ratio = modality == 1 ? spec.image_ratio : spec.text_ratio;
    const int budget = std::max(kept_count(count, ratio), static_cast<int>(forced.size()));
    const int extra = budget - static_cast<int>(forced.size());
    std::stable_sort(pool.begin(), pool.end(), [&](int32_t a, int32_t b) {
      return score[static_cast<size_t>(a)] > score[static_cast<size_t>(b)];
    });
    kept.insert(kept.end(), forced.begin(), forced.end());
    kept.insert(kept.end(), pool.begin(), pool.begin() + extra);
  }
  std::sort(kept.begin(), kept.end());
  return kept;
}

status check_inputs(const kv_pool& pool, const kv_sequence& input, const link_plan& plan,
                    const compression_spec& spec) {
  if (spec.method == compression_method::learned)
    return make_error(errc::invalid_argument,
                      "compress_kv: the learned compressor needs its weights; call "
                      "compress_kv_learned (engine/kv_learned_compressor.hpp)");
  if (input.pool() != &pool)
    return make_error(errc::invalid_argument,
                      "compress_kv: the input sequence does not live in this KV pool");
  if (plan.n_tokens() == 0 || input.length() != plan.n_tokens())
    return make_error(errc::invalid_argument, "compress_kv: the sequence holds ",
                      std::to_string(input.length()), " tokens but the plan has ",
                      std::to_string(plan.n_tokens()), "; pass the plan the prefill ran");
  if (!(spec.image_ratio > 0.0f && spec.image_ratio <= 1.0f) ||
      !(spec.text_ratio > 0.0f && spec.text_ratio <= 1.0f))
    return make_error(errc::invalid_argument, "compress_kv: keep ratios must be in (0, 1]");
  if (spec.window < 1 || spec.pool < 1 || spec.sink < 0 || spec.recent < 0)
    return make_error(errc::invalid_argument,
                      "compress_kv: window and pool must be >= 1, sink and recent >= 0");
  return {};
}

/// Copies layer rows `kept[l]` of `src` into rows 0.. of `dst`.
status copy_rows(backend& be, kv_pool& pool, const kv_sequence& src, const kv_sequence& dst,
                 const std::vector<std::vector<int32_t>>& kept) {
  const int kv = pool.kv_dim();
  const int m = static_cast<int>(kept.front().size());
  auto tmp = allocate_floats(be, static_cast<size_t>(m) * kv);
  auto dst_slots = upload_ints(be, dst.slots(0, m));
  if (!tmp)
    return std::move(tmp).err();
  if (!dst_slots)
    return std::move(dst_slots).err();
  for (int l = 0; l < pool.n_layers(); ++l) {
    std::vector<int32_t> src_slots;
    src_slots.reserve(static_cast<size_t>(m));
    for (int32_t t : kept[static_cast<size_t>(l)])
      src_slots.push_back(src.slot(t));
    auto src_d = upload_ints(be, src_slots);
    if (!src_d)
      return std::move(src_d).err();
    for (float* layer : {pool.k_layer(l), pool.v_layer(l)}) {
      be.gather_rows(layer, src_d->i32(), tmp->f32(), m, kv);
      be.scatter_rows(tmp->f32(), dst_slots->i32(), layer, m, kv);
    }
    MOSAIC_TRY(be.synchronize()); // src_d and tmp are reused / freed next
  }
  return {};
}

} // namespace

int kept_count(int count, float ratio) noexcept {
  if (count <= 0)
    return 0;
  const int k = static_cast<int>(std::lround(static_cast<double>(count) * ratio));
  return std::clamp(k, 1, count);
}

result<compressed_kv> compress_kv(backend& be, const decoder_weights& weights, kv_pool& pool,
                                  kv_sequence& input, const link_plan& plan,
                                  const compression_spec& spec) {
  MOSAIC_TRY(check_inputs(pool, input, plan, spec));
  const int n = plan.n_tokens();
  std::vector<char> is_image(static_cast<size_t>(n), 0);
  for (const auto& seg : plan.segments)
    if (seg.kind == segment_kind::image)
      std::fill(is_image.begin() + seg.begin, is_image.begin() + seg.end, 1);

  // Scores per layer (one shared vector where the method is layer-free).
  detail::layer_scores scores;
  if (spec.method == compression_method::snapkv) {
    auto s = detail::snapkv_scores(be, weights, pool, input, plan, spec.window, spec.pool);
    if (!s)
      return std::move(s).err();
    scores = std::move(*s);
  } else if (spec.method == compression_method::keynorm) {
    auto s = detail::keynorm_scores(be, pool, input, n);
    if (!s)
      return std::move(s).err();
    scores = std::move(*s);
  } else {
    std::vector<float> recency(static_cast<size_t>(n));
    std::iota(recency.begin(), recency.end(), 0.0f);
    scores.assign(1, std::move(recency));
  }

  compression_spec effective = spec;
  if (spec.method == compression_method::none)
    effective.image_ratio = effective.text_ratio = 1.0f;
  const auto must = mandatory_tokens(effective, n);
  compressed_kv out;
  out.kept.resize(static_cast<size_t>(pool.n_layers()));
  for (int l = 0; l < pool.n_layers(); ++l) {
    const auto& s = scores.size() == 1 ? scores.front() : scores[static_cast<size_t>(l)];
    out.kept[static_cast<size_t>(l)] = select_tokens(s, must, is_image, effective);
  }
  const int m = static_cast<int>(out.kept.front().size());

  out.sequence = pool.new_sequence();
  MOSAIC_TRY(out.sequence.reserve(m)); // out_of_memory: input untouched
  MOSAIC_TRY(copy_rows(be, pool, input, out.sequence, out.kept));
  MOSAIC_TRY(out.sequence.set_length(m));
  out.next_position = plan.positions.back() + 1;

  const size_t block_bytes = pool.stats().bytes_per_block;
  auto& st = out.stats;
  st.tokens_before = n;
  st.tokens_after = m;
  st.image_before = static_cast<int>(std::count(is_image.begin(), is_image.end(), 1));
  st.text_before = n - st.image_before;
  for (int32_t t : out.kept.front())
    (is_image[static_cast<size_t>(t)] ? st.image_after : st.text_after) += 1;
  st.bytes_before = input.blocks().size() * block_bytes;
  st.bytes_after = out.sequence.blocks().size() * block_bytes;
  input.release();
  return out;
}

} // namespace mosaic
