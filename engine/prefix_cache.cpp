#include "engine/prefix_cache.hpp"

#include <algorithm>

namespace mosaic {

prompt_blocks::prompt_blocks(const prompt& p, const prefix_scope& scope, int block_size)
  : block_size_(std::max(block_size, 1)) {
  sha256_hasher h;
  h.update(std::string_view{"mosaic-prefix-v1"});
  h.update_u64(scope.tenant.size());
  h.update(scope.tenant);
  h.update(std::span<const uint8_t>{scope.model});
  h.update_u64(scope.salt.size());
  h.update(scope.salt);
  root_ = h.finish();
  for (const auto& img : p.images)
    keys_.push_back(img.key);
  for (const auto& part : p.parts) {
    if (part.kind == segment_kind::text) {
      for (int32_t id : part.text_ids) {
        kinds_.push_back(0);
        values_.push_back(id);
        image_of_.push_back(-1);
      }
      continue;
    }
    if (part.image < 0 || static_cast<size_t>(part.image) >= p.images.size())
      continue; // build_link_plan refuses such a prompt
    const int n = p.images[static_cast<size_t>(part.image)].n_tokens;
    for (int t = 0; t < n; ++t) {
      kinds_.push_back(1);
      values_.push_back(t);
      image_of_.push_back(part.image);
    }
  }
}

digest prompt_blocks::hash(int block, const digest& parent, std::string_view tag) const {
  sha256_hasher h;
  h.update(std::span<const uint8_t>{parent});
  h.update_u64(tag.size());
  h.update(tag);
  const size_t begin = static_cast<size_t>(block) * static_cast<size_t>(block_size_);
  const size_t end = std::min(begin + static_cast<size_t>(block_size_), kinds_.size());
  for (size_t t = begin; t < end; ++t) {
    h.update_u64((uint64_t{kinds_[t]} << 32) | static_cast<uint32_t>(values_[t]));
    if (kinds_[t] == 1) {
      const auto& key = keys_[static_cast<size_t>(image_of_[t])];
      h.update_u64(key.size());
      h.update(key);
    }
  }
  return h.finish();
}

int cached_prefix_tokens(const kv_pool& pool, const prompt_blocks& blocks, std::string_view tag) {
  digest parent = blocks.root();
  bool exact = true;
  int n = 0;
  for (int i = 0; i < blocks.n_full_blocks(); ++i) {
    digest h{};
    bool found = false;
    if (exact) {
      h = blocks.hash(i, parent, {});
      found = pool.is_cached(h);
    }
    if (!found && !tag.empty()) {
      h = blocks.hash(i, parent, tag);
      found = pool.is_cached(h);
      exact = exact && !found;
    }
    if (!found)
      break;
    parent = h;
    n += blocks.block_size();
  }
  return n;
}

prefix_match match_prefix(kv_pool& pool, const prompt_blocks& blocks, std::string_view tag,
                          int limit_tokens) {
  prefix_match m;
  const int bs = blocks.block_size();
  const int max_blocks = std::min(blocks.n_full_blocks(), std::max(limit_tokens, 0) / bs);
  std::vector<int32_t> adopted;
  digest parent = blocks.root();
  bool exact = true;
  for (int i = 0; i < max_blocks; ++i) {
    int32_t b = -1;
    digest h{};
    if (exact) {
      h = blocks.hash(i, parent, {});
      b = pool.acquire_cached(h);
    }
    if (b < 0 && !tag.empty()) {
      h = blocks.hash(i, parent, tag);
      b = pool.acquire_cached(h);
      if (b >= 0)
        exact = false;
    }
    if (b < 0)
      break;
    adopted.push_back(b);
    m.hashes.push_back(h);
    parent = h;
    if (exact)
      m.exact_tokens += bs;
  }
  m.n_tokens = static_cast<int>(adopted.size()) * bs;
  pool.count_lookup(blocks.n_tokens(), m.n_tokens);
  m.sequence = pool.adopt(std::move(adopted), m.n_tokens);
  return m;
}

int first_inexact_token(const link_plan& plan, const prefix_match& match) {
  const int n = plan.n_tokens();
  if (match.exact_tokens < match.n_tokens)
    return match.exact_tokens;
  // The sets are nested (link_plan::validate), so a token is computed at
  // every layer exactly when the deepest set holds it.
  const auto& deepest = plan.compute.back();
  auto it = std::lower_bound(deepest.begin(), deepest.end(), match.n_tokens);
  for (int t = match.n_tokens; t < n; ++t, ++it)
    if (it == deepest.end() || *it != t)
      return t;
  return n;
}

int publish_prompt(kv_pool& pool, const prompt_blocks& blocks, const kv_sequence& seq,
                   const prefix_match& match, int first_inexact, std::string_view tag) {
  const int bs = blocks.block_size();
  const int full = std::min(blocks.n_full_blocks(), seq.length() / bs);
  digest parent = match.hashes.empty() ? blocks.root() : match.hashes.back();
  int published = 0;
  for (int i = static_cast<int>(match.hashes.size()); i < full; ++i) {
    const bool exact = (i + 1) * bs <= first_inexact;
    if (!exact && tag.empty())
      break;
    const digest h = blocks.hash(i, parent, exact ? std::string_view{} : tag);
    published += pool.publish(seq.blocks()[static_cast<size_t>(i)], h) ? 1 : 0;
    parent = h;
  }
  return published;
}

result<prompt_prefill> prefill_with_prefix_cache(backend& be, const decoder_weights& weights,
                                                 kv_pool& pool, const prompt& p,
                                                 const policy_spec& policy,
                                                 const vlcache_profile* profile,
                                                 const prefix_scope* scope,
                                                 prefill_options options) {
  prompt_prefill out;
  const auto& cfg = weights.config;
  if (scope == nullptr || !uses_prefix_cache(policy)) {
    auto plan = build_link_plan(p, policy, cfg, {}, profile);
    if (!plan)
      return std::move(plan).err();
    options.extend = nullptr;
    auto r = run_prefill(be, weights, pool, *plan, options);
    if (!r)
      return std::move(r).err();
    out.result = std::move(*r);
    out.plan = std::move(*plan);
    return out;
  }
  const prompt_blocks blocks{p, *scope, pool.block_size()};
  const std::string tag = prefix_tag(policy);
  // Never the last token: its logits are needed.
  auto match = match_prefix(pool, blocks, tag, blocks.n_tokens() - 1);
  auto plan = build_link_plan(p, policy, cfg, prefix_kv{&match.sequence, match.n_tokens}, profile);
  if (!plan)
    return std::move(plan).err();
  options.extend = &match.sequence;
  auto r = run_prefill(be, weights, pool, *plan, options);
  if (!r)
    return std::move(r).err();
  out.cache_hit_tokens = match.n_tokens;
  out.published_blocks =
      publish_prompt(pool, blocks, r->sequence, match, first_inexact_token(*plan, match), tag);
  out.result = std::move(*r);
  out.plan = std::move(*plan);
  out.plan.prefix.sequence = nullptr; // it pointed at the moved sequence
  return out;
}

std::string prefix_tag(const policy_spec& policy) {
  switch (policy.kind) {
  case policy_kind::full:
  case policy_kind::prefix:
    return {};
  default:
    return policy.to_string();
  }
}

bool uses_prefix_cache(const policy_spec& policy) {
  return policy.kind != policy_kind::full;
}

} // namespace mosaic
