#include "engine/link_plan.hpp"

#include <algorithm>
#include <string>

#include "engine/kv_pool.hpp"

namespace mosaic {

namespace {

std::string str(long long v) {
  return std::to_string(v);
}

error invalid(std::string_view what) {
  return make_error(errc::invalid_argument, "link plan: ", what);
}

} // namespace

kv_source link_plan::source(int token, int layer) const {
  const auto& s = compute[static_cast<size_t>(layer)];
  if (std::binary_search(s.begin(), s.end(), token))
    return {};
  return kv[static_cast<size_t>(token)];
}

double link_plan::recomputed_fraction() const {
  if (n_layers == 0 || n_tokens() == 0)
    return 0.0;
  size_t total = 0;
  for (const auto& s : compute)
    total += s.size();
  return static_cast<double>(total) / (static_cast<double>(n_layers) * n_tokens());
}

status assign_mrope_positions(link_plan& plan) {
  const int n = plan.n_tokens();
  std::vector<int32_t> t, h, w;
  t.reserve(static_cast<size_t>(n));
  h.reserve(static_cast<size_t>(n));
  w.reserve(static_cast<size_t>(n));
  int64_t next = 0; // the largest position so far + 1
  for (const auto& seg : plan.segments) {
    if (seg.kind == segment_kind::text) {
      for (int i = seg.begin; i < seg.end; ++i, ++next)
        for (auto* v : {&t, &h, &w})
          v->push_back(static_cast<int32_t>(next));
      continue;
    }
    if (seg.image < 0 || static_cast<size_t>(seg.image) >= plan.images.size())
      return invalid("segment [" + str(seg.begin) + ", " + str(seg.end) + ") names no image");
    const auto& g = plan.images[static_cast<size_t>(seg.image)].grid;
    if (g.t <= 0 || g.rows <= 0 || g.cols <= 0 || g.count() != seg.end - seg.begin)
      return invalid("image " + str(seg.image) + " needs a token grid of " +
                     str(seg.end - seg.begin) + " tokens for M-RoPE, not " + str(g.t) + "x" +
                     str(g.rows) + "x" + str(g.cols));
    const int64_t s = next;
    for (int i = 0; i < g.t; ++i)
      for (int j = 0; j < g.rows; ++j)
        for (int k = 0; k < g.cols; ++k) {
          t.push_back(static_cast<int32_t>(s + i));
          h.push_back(static_cast<int32_t>(s + j));
          w.push_back(static_cast<int32_t>(s + k));
        }
    next = s + std::max({g.t, g.rows, g.cols});
  }
  if (t.size() != static_cast<size_t>(n))
    return invalid("the segments cover " + str(static_cast<long long>(t.size())) + " of " + str(n) +
                   " tokens");
  plan.rope_positions = std::move(t);
  plan.rope_positions.insert(plan.rope_positions.end(), h.begin(), h.end());
  plan.rope_positions.insert(plan.rope_positions.end(), w.begin(), w.end());
  plan.rope_delta = static_cast<int32_t>(next - n);
  return {};
}

status link_plan::validate() const {
  const int n = n_tokens();
  if (n == 0)
    return invalid("the plan has no tokens");
  if (n_layers <= 0 || hidden <= 0 || kv_dim <= 0)
    return invalid("n_layers, hidden and kv_dim must be positive");
  if (token_ids.size() != static_cast<size_t>(n) || kv.size() != static_cast<size_t>(n))
    return invalid("token_ids, positions and kv must all have one entry per token");
  if (compute.size() != static_cast<size_t>(n_layers))
    return invalid("compute must hold one set per layer (" + str(compute.size()) + " for " +
                   str(n_layers) + " layers)");
  for (int i = 0; i < n; ++i) {
    if (positions[static_cast<size_t>(i)] < 0)
      return invalid("token " + str(i) + " has a negative position");
    if (i > 0 && positions[static_cast<size_t>(i)] <= positions[static_cast<size_t>(i - 1)])
      return invalid("positions must be strictly increasing (token " + str(i) + ")");
  }

  if (!rope_positions.empty() && rope_positions.size() != 3 * static_cast<size_t>(n))
    return invalid("rope_positions must hold 3 components of " + str(n) + " tokens");
  for (int32_t p : rope_positions)
    if (p < 0)
      return invalid("rope_positions must not be negative");

  // Segments cover [0, n) in order; image segments match their image.
  int next = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const auto& seg = segments[s];
    if (seg.begin != next || seg.end <= seg.begin || seg.end > n)
      return invalid("segment " + str(static_cast<long long>(s)) + " [" + str(seg.begin) + ", " +
                     str(seg.end) + ") does not continue the previous one at " + str(next) +
                     " within " + str(n) + " tokens");
    next = seg.end;
    for (int t = seg.begin; t < seg.end; ++t) {
      const bool is_text = token_ids[static_cast<size_t>(t)] >= 0;
      if (is_text != (seg.kind == segment_kind::text))
        return invalid("token " + str(t) +
                       (is_text ? " has a text id inside an image segment"
                                : " has no text id inside a text segment"));
    }
    if (seg.kind == segment_kind::image) {
      if (seg.image < 0 || static_cast<size_t>(seg.image) >= images.size())
        return invalid("segment " + str(static_cast<long long>(s)) + " names image " +
                       str(seg.image) + " but the plan has " + str(images.size()));
      const auto& img = images[static_cast<size_t>(seg.image)];
      if (img.n_tokens != seg.end - seg.begin)
        return invalid("image " + str(seg.image) + " has " + str(img.n_tokens) +
                       " tokens but its segment spans " + str(seg.end - seg.begin));
      if (img.embeddings == nullptr)
        return invalid("image " + str(seg.image) + " has no input embeddings");
      if (img.entry != nullptr) {
        const auto& e = *img.entry;
        if (e.n_tokens != img.n_tokens || e.n_layers != n_layers || e.hidden != hidden ||
            e.kv_dim != kv_dim)
          return invalid("cached entry of image " + str(seg.image) + " has geometry (tokens " +
                         str(e.n_tokens) + ", layers " + str(e.n_layers) + ", hidden " +
                         str(e.hidden) + ", kv_dim " + str(e.kv_dim) +
                         ") that does not match the model and the prompt; recompile it");
        if (e.k.size() != e.layer_elems() * e.n_layers || e.v.size() != e.k.size())
          return invalid("cached entry of image " + str(seg.image) + " has truncated KV arrays");
      }
    }
  }
  if (next != n)
    return invalid("segments cover " + str(next) + " of " + str(n) + " tokens");

  // KV sources point at rows that exist.
  if (prefix.n_tokens < 0 || prefix.n_tokens >= n + 1)
    return invalid("prefix of " + str(prefix.n_tokens) + " tokens for a plan of " + str(n));
  if (prefix.n_tokens > 0 &&
      (prefix.sequence == nullptr || prefix.sequence->length() < prefix.n_tokens))
    return invalid("the prefix sequence holds fewer than " + str(prefix.n_tokens) + " tokens");
  for (const auto& seg : segments) {
    for (int t = seg.begin; t < seg.end; ++t) {
      const auto& src = kv[static_cast<size_t>(t)];
      switch (src.kind) {
      case kv_source_kind::compute:
        break;
      case kv_source_kind::image_entry:
        if (seg.kind != segment_kind::image || src.index != seg.image ||
            images[static_cast<size_t>(seg.image)].entry == nullptr || src.row != t - seg.begin)
          return invalid("token " + str(t) +
                         " reads a cached image row that is not its own row of its "
                         "segment's cached entry");
        break;
      case kv_source_kind::prefix:
        if (t >= prefix.n_tokens || src.row != t)
          return invalid("token " + str(t) + " reads prefix row " + str(src.row) +
                         " but the prefix covers tokens [0, " + str(prefix.n_tokens) +
                         ") at identical rows");
        break;
      }
    }
  }

  const int checked = completion.layer >= 0 ? completion.layer + 1 : n_layers;
  if (completion.layer >= n_layers)
    return invalid("completion layer " + str(completion.layer) + " is past the last layer");
  if (completion.layer >= 0 && !completion.complete)
    return invalid("a pending completion needs a complete function");
  for (int l = 0; l < checked; ++l)
    MOSAIC_TRY(validate_layer(l));
  return {};
}

status link_plan::validate_layer(int layer) const {
  const int n = n_tokens();
  const auto& s = compute[static_cast<size_t>(layer)];
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] < 0 || s[i] >= n)
      return invalid("S_" + str(layer) + " holds token " + str(s[i]) + " outside [0, " + str(n) +
                     ")");
    if (i > 0 && s[i] <= s[i - 1])
      return invalid("S_" + str(layer) + " must be sorted without duplicates (token " + str(s[i]) +
                     ")");
  }
  if (s.empty() || s.back() != n - 1)
    return invalid("the last token must be computed at every layer; S_" + str(layer) +
                   " misses it");
  // Every token without cached KV is computed (two-pointer walk).
  size_t j = 0;
  for (int t = 0; t < n; ++t) {
    while (j < s.size() && s[j] < t)
      ++j;
    const bool in = j < s.size() && s[j] == t;
    if (!in && kv[static_cast<size_t>(t)].kind == kv_source_kind::compute)
      return invalid("token " + str(t) + " has no cached KV but is not in S_" + str(layer) +
                     "; text tokens and image misses must be computed at every layer");
  }
  // Nested sets: a token's hidden state at layer l exists only if it was
  // computed at every layer before, so S_l must lie inside S_{l-1}.
  if (layer > 0) {
    const auto& prev = compute[static_cast<size_t>(layer - 1)];
    size_t k = 0;
    for (int32_t t : s) {
      while (k < prev.size() && prev[k] < t)
        ++k;
      if (k == prev.size() || prev[k] != t)
        return invalid("token " + str(t) + " is computed at layer " + str(layer) +
                       " but not at layer " + str(layer - 1) +
                       "; its hidden state would be stale (S_" + str(layer) +
                       " must be a subset of S_" + str(layer - 1) + ")");
    }
  }
  return {};
}

} // namespace mosaic
