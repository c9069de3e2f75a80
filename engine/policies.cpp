#include "engine/policies.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <numeric>

#include <nlohmann/json.hpp>

#include "engine/kv_pool.hpp"

namespace mosaic {

namespace {

std::string str(long long v) {
  return std::to_string(v);
}

/// Tokens that must be computed at every layer: no cached KV, or last.
std::vector<int32_t> must_compute(const link_plan& plan) {
  std::vector<int32_t> out;
  const int n = plan.n_tokens();
  for (int t = 0; t < n; ++t)
    if (plan.kv[static_cast<size_t>(t)].kind == kv_source_kind::compute || t == n - 1)
      out.push_back(t);
  return out;
}

/// Tokens of `seg` that read a cached image entry, in order.
std::vector<int32_t> cached_tokens(const link_plan& plan, const plan_segment& seg) {
  std::vector<int32_t> out;
  for (int t = seg.begin; t < seg.end; ++t)
    if (plan.kv[static_cast<size_t>(t)].kind == kv_source_kind::image_entry)
      out.push_back(t);
  return out;
}

/// base ∪ extra, sorted and unique.
std::vector<int32_t> merge(std::vector<int32_t> base, const std::vector<int32_t>& extra) {
  base.insert(base.end(), extra.begin(), extra.end());
  std::sort(base.begin(), base.end());
  base.erase(std::unique(base.begin(), base.end()), base.end());
  return base;
}

/// The first `count` tokens of every cached image, counted from the
/// image's first token, added to base where they read the entry (an image
/// that straddles a cached prefix had its leading tokens computed there).
std::vector<int32_t> with_leading(const link_plan& plan, const std::vector<int32_t>& base,
                                  const std::vector<int>& count_per_image) {
  std::vector<int32_t> extra;
  for (const auto& seg : plan.segments) {
    if (seg.kind != segment_kind::image)
      continue;
    const int end = std::min(seg.end, seg.begin + std::max(count_per_image[seg.image], 0));
    for (int t = seg.begin; t < end; ++t)
      if (plan.kv[static_cast<size_t>(t)].kind == kv_source_kind::image_entry)
        extra.push_back(t);
  }
  return merge(base, extra);
}

/// Lays out the tokens, segments, images and KV sources.
result<link_plan> layout(const prompt& p, const policy_spec& policy, const text_config& cfg,
                         const prefix_kv& prefix) {
  link_plan plan;
  plan.n_layers = cfg.num_layers;
  plan.hidden = cfg.hidden_size;
  plan.kv_dim = cfg.kv_dim();
  const bool use_images = policy.kind != policy_kind::full && policy.kind != policy_kind::prefix;
  for (size_t i = 0; i < p.images.size(); ++i) {
    const auto& img = p.images[i];
    const std::string name = "prompt image " + str(static_cast<long long>(i));
    if (img.n_tokens <= 0)
      return make_error(errc::invalid_argument, name, " has no tokens");
    if (img.cached != nullptr && img.cached->n_tokens != img.n_tokens)
      return make_error(errc::invalid_argument, name, " occupies ", str(img.n_tokens),
                        " tokens but its cached entry holds ", str(img.cached->n_tokens));
    const float* emb = img.embeddings;
    if (emb == nullptr && img.cached != nullptr && !img.cached->embeddings.empty())
      emb = img.cached->embeddings.data();
    if (emb == nullptr)
      return make_error(errc::invalid_argument, name,
                        " is a cache miss without embeddings; run the vision encoder first");
    plan.images.push_back(
        {img.key, img.n_tokens, emb, use_images ? img.cached : nullptr, img.grid});
  }
  std::vector<bool> image_used(p.images.size(), false);
  for (size_t i = 0; i < p.parts.size(); ++i) {
    const auto& part = p.parts[i];
    const int begin = static_cast<int>(plan.token_ids.size());
    if (part.kind == segment_kind::text) {
      if (part.text_ids.empty())
        continue;
      for (int32_t id : part.text_ids) {
        if (id < 0 || id >= cfg.vocab_size)
          return make_error(errc::invalid_argument, "prompt part ", str(static_cast<long long>(i)),
                            " has token id ", str(id), " outside the vocabulary of ",
                            str(cfg.vocab_size));
        plan.token_ids.push_back(id);
      }
      plan.segments.push_back(
          {segment_kind::text, begin, static_cast<int>(plan.token_ids.size()), -1});
    } else {
      if (part.image < 0 || static_cast<size_t>(part.image) >= p.images.size())
        return make_error(errc::invalid_argument, "prompt part ", str(static_cast<long long>(i)),
                          " names image ", str(part.image), " but the prompt has ",
                          str(static_cast<long long>(p.images.size())));
      if (image_used[static_cast<size_t>(part.image)])
        return make_error(errc::invalid_argument, "prompt image ", str(part.image),
                          " appears twice; give each occurrence its own prompt_image");
      image_used[static_cast<size_t>(part.image)] = true;
      const int n_img = p.images[static_cast<size_t>(part.image)].n_tokens;
      plan.token_ids.insert(plan.token_ids.end(), static_cast<size_t>(n_img), -1);
      plan.segments.push_back({segment_kind::image, begin, begin + n_img, part.image});
    }
  }
  const int n = static_cast<int>(plan.token_ids.size());
  plan.positions.resize(plan.token_ids.size());
  if (n == 0)
    return make_error(errc::invalid_argument, "the prompt is empty");
  std::iota(plan.positions.begin(), plan.positions.end(), 0);
  if (cfg.mrope())
    MOSAIC_TRY(assign_mrope_positions(plan));

  // Exact prefix reuse (never the last token, whose logits are needed).
  int n_prefix = 0;
  if (policy.kind != policy_kind::full && prefix.n_tokens > 0) {
    if (prefix.sequence == nullptr || prefix.sequence->length() < prefix.n_tokens)
      return make_error(errc::invalid_argument, "prefix match of ", str(prefix.n_tokens),
                        " tokens without a sequence holding them");
    n_prefix = std::min(prefix.n_tokens, n - 1);
  }
  plan.prefix = {n_prefix > 0 ? prefix.sequence : nullptr, n_prefix};
  plan.kv.assign(static_cast<size_t>(n), kv_source{});
  for (int t = 0; t < n_prefix; ++t)
    plan.kv[static_cast<size_t>(t)] = {kv_source_kind::prefix, -1, t};
  for (const auto& seg : plan.segments) {
    if (seg.kind != segment_kind::image || plan.images[seg.image].entry == nullptr)
      continue;
    for (int t = std::max(seg.begin, n_prefix); t < seg.end; ++t)
      plan.kv[static_cast<size_t>(t)] = {kv_source_kind::image_entry, seg.image, t - seg.begin};
  }
  return plan;
}

/// CacheBlend's completion (the contract is plan_completion's): per image,
/// among its tokens measured in this call (deviation >= 0), the
/// round(ratio * measured) largest deviations are computed at every layer
/// after `check`; the others measured here are not. Tokens not measured in
/// this call keep their membership, so chunk-by-chunk calls compose.
status cacheblend_complete(float ratio, int check, link_plan& plan,
                           std::span<const float> deviation) {
  if (deviation.size() != static_cast<size_t>(plan.n_tokens()))
    return make_error(errc::invalid_argument, "cacheblend completion got ",
                      str(static_cast<long long>(deviation.size())), " deviations for ",
                      str(plan.n_tokens()), " tokens");
  const int32_t last = plan.n_tokens() - 1;
  std::vector<int32_t> join;  // measured and selected
  std::vector<int32_t> leave; // measured, not selected (never the last token)
  for (const auto& seg : plan.segments) {
    if (seg.kind != segment_kind::image)
      continue;
    std::vector<int32_t> measured;
    for (int32_t t : cached_tokens(plan, seg))
      if (deviation[static_cast<size_t>(t)] >= 0.0f)
        measured.push_back(t);
    const auto want =
        std::min(measured.size(),
                 static_cast<size_t>(std::lround(ratio * static_cast<float>(measured.size()))));
    // Largest first; ties keep token order.
    std::stable_sort(measured.begin(), measured.end(), [&](int32_t a, int32_t b) {
      return deviation[static_cast<size_t>(a)] > deviation[static_cast<size_t>(b)];
    });
    join.insert(join.end(), measured.begin(), measured.begin() + static_cast<ptrdiff_t>(want));
    for (size_t i = want; i < measured.size(); ++i)
      if (measured[i] != last)
        leave.push_back(measured[i]);
  }
  std::sort(leave.begin(), leave.end());
  for (int l = check + 1; l < plan.n_layers; ++l) {
    auto& s = plan.compute[static_cast<size_t>(l)];
    std::vector<int32_t> kept;
    std::set_difference(s.begin(), s.end(), leave.begin(), leave.end(), std::back_inserter(kept));
    s = merge(std::move(kept), join);
  }
  return {};
}

/// VLCache's leading-fraction sets, nested by construction: the per-layer
/// fractions are non-increasing (vlcache_layer_fractions), so the counts
/// round(f_l * n) are too, and a leading run of an image at layer l+1 is a
/// prefix of the run at layer l.
std::vector<std::vector<int32_t>> vlcache_sets(const link_plan& plan,
                                               const std::vector<int32_t>& base,
                                               const std::vector<float>& fractions) {
  std::vector<std::vector<int32_t>> sets(fractions.size());
  for (size_t l = 0; l < fractions.size(); ++l) {
    std::vector<int> counts;
    for (const auto& img : plan.images)
      counts.push_back(static_cast<int>(std::lround(fractions[l] * img.n_tokens)));
    sets[l] = with_leading(plan, base, counts);
  }
  return sets;
}

} // namespace

result<prompt> split_prompt(std::span<const int32_t> ids, int32_t image_token_id,
                            std::vector<prompt_image> images) {
  prompt p;
  size_t next_image = 0;
  for (int32_t id : ids) {
    if (id != image_token_id) {
      if (p.parts.empty() || p.parts.back().kind != segment_kind::text)
        p.parts.push_back({segment_kind::text, {}, -1});
      p.parts.back().text_ids.push_back(id);
      continue;
    }
    if (next_image == images.size())
      return make_error(errc::invalid_argument, "the prompt marks more images than the ",
                        str(static_cast<long long>(images.size())), " given");
    p.parts.push_back({segment_kind::image, {}, static_cast<int>(next_image++)});
  }
  if (next_image != images.size())
    return make_error(errc::invalid_argument, "the prompt marks ",
                      str(static_cast<long long>(next_image)), " images but ",
                      str(static_cast<long long>(images.size())),
                      " were given; put one <image> in the text per image");
  p.images = std::move(images);
  return p;
}

vlcache_profile uniform_vlcache_profile(int n_layers) {
  vlcache_profile p;
  p.layer_weights.assign(static_cast<size_t>(std::max(n_layers, 0)), 1.0f);
  p.uniform = true;
  p.source = "uniform (no vlcache_profile.json beside the model)";
  return p;
}

result<vlcache_profile> load_vlcache_profile(const std::filesystem::path& model_dir, int n_layers) {
  const auto path = model_dir / "vlcache_profile.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return uniform_vlcache_profile(n_layers);
  std::ifstream in{path};
  if (!in)
    return make_error(errc::io_error, "cannot read ", path.string());
  vlcache_profile p;
  try {
    const auto j = nlohmann::json::parse(in);
    const auto& w = j.at("layer_weights");
    if (!w.is_array() || static_cast<int>(w.size()) != n_layers)
      return make_error(errc::corrupt_data, path.string(),
                        ": \"layer_weights\" must be an array of one weight per layer (",
                        str(n_layers), ")");
    float sum = 0.0f;
    for (const auto& v : w) {
      const float x = v.get<float>();
      if (!std::isfinite(x) || x < 0.0f)
        return make_error(errc::corrupt_data, path.string(),
                          ": layer weights must be finite and non-negative");
      p.layer_weights.push_back(x);
      sum += x;
    }
    if (sum <= 0.0f)
      return make_error(errc::corrupt_data, path.string(), ": every layer weight is zero");
  } catch (const nlohmann::json::exception& e) {
    return make_error(errc::corrupt_data, path.string(), ": ", e.what(),
                      "; expected {\"layer_weights\": [w0, w1, ...]}");
  }
  p.uniform = false;
  p.source = path.string();
  return p;
}

std::vector<float> vlcache_layer_fractions(const vlcache_profile& profile, float r) {
  const size_t L = profile.layer_weights.size();
  std::vector<float> f(L, std::clamp(r, 0.0f, 1.0f));
  // Nested weights: W_l = max over l' >= l of w_l' (suffix maxima), so
  // that W, and with it every fraction below, never grows with depth.
  std::vector<double> w(L, 0.0);
  double run = 0.0;
  for (size_t i = L; i-- > 0;)
    w[i] = run = std::max(run, static_cast<double>(profile.layer_weights[i]));
  const double sum = std::accumulate(w.begin(), w.end(), 0.0);
  if (L == 0 || sum <= 0.0 || r >= 1.0f || r <= 0.0f)
    return f;
  // Water filling: f_l = min(1, c * W_l) with c such that mean f = r.
  // min(1, c * W_l) = max over l' >= l of min(1, c * w_l'): these are the
  // suffix maxima of the calibrated fractions at scale c, with c chosen
  // so that the mean stays r.
  auto mean_at = [&](double c) {
    double m = 0.0;
    for (double x : w)
      m += std::min(1.0, c * x);
    return m / static_cast<double>(L);
  };
  double lo = 0.0;
  double hi = 1.0;
  while (mean_at(hi) < r && hi < 1e30)
    hi *= 2.0;
  for (int it = 0; it < 100; ++it) {
    const double mid = 0.5 * (lo + hi);
    (mean_at(mid) < r ? lo : hi) = mid;
  }
  for (size_t l = 0; l < L; ++l)
    f[l] = static_cast<float>(std::min(1.0, hi * w[l]));
  return f;
}

result<link_plan> build_link_plan(const prompt& p, const policy_spec& policy,
                                  const text_config& cfg, const prefix_kv& prefix,
                                  const vlcache_profile* profile) {
  if (cfg.num_layers <= 0)
    return make_error(errc::invalid_argument, "the model has no decoder layers");
  auto laid = layout(p, policy, cfg, prefix);
  if (!laid)
    return std::move(laid).err();
  link_plan& plan = *laid;
  const auto L = static_cast<size_t>(cfg.num_layers);
  const auto base = must_compute(plan);
  plan.note = "policy " + policy.to_string();

  switch (policy.kind) {
  case policy_kind::full:
  case policy_kind::prefix:
  case policy_kind::full_reuse:
    plan.compute.assign(L, base);
    break;
  case policy_kind::mpic: {
    std::vector<int> k(plan.images.size(), policy.k);
    plan.compute.assign(L, with_leading(plan, base, k));
    break;
  }
  case policy_kind::vlcache: {
    const vlcache_profile fallback = uniform_vlcache_profile(cfg.num_layers);
    const vlcache_profile& prof = profile != nullptr ? *profile : fallback;
    if (prof.layer_weights.size() != L)
      return make_error(errc::invalid_argument, "vlcache profile has ",
                        str(static_cast<long long>(prof.layer_weights.size())),
                        " layer weights for a model of ", str(cfg.num_layers), " layers");
    plan.compute = vlcache_sets(plan, base, vlcache_layer_fractions(prof, policy.ratio));
    plan.note += "; vlcache profile: " + prof.source;
    break;
  }
  case policy_kind::cacheblend: {
    // Every token after the prefix runs layers 0..check; the completion
    // picks the tokens for the layers after it from the K deviation
    // measured at the check layer (nothing to pick when it is the last).
    const int check = std::clamp(policy.check_layer, 0, cfg.num_layers - 1);
    std::vector<int32_t> all;
    for (int t = plan.prefix.n_tokens; t < plan.n_tokens(); ++t)
      all.push_back(t);
    plan.compute.assign(L, base);
    for (int l = 0; l <= check; ++l)
      plan.compute[static_cast<size_t>(l)] = all;
    if (check + 1 < cfg.num_layers) {
      plan.completion.layer = check;
      plan.completion.complete = [ratio = policy.ratio, check](link_plan& pl,
                                                               std::span<const float> dev) {
        return cacheblend_complete(ratio, check, pl, dev);
      };
    }
    plan.note += "; check layer " + str(check);
    break;
  }
  }
  return std::move(*laid);
}

} // namespace mosaic
