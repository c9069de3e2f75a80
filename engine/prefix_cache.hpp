#pragma once

// Automatic prefix caching over the paged KV pool (engine/kv_pool.hpp),
// as vLLM's and SGLang's: a prompt's full blocks are keyed by a SHA-256
// chained over
//
//   root   = H("mosaic-prefix-v1", tenant, model fingerprint, salt)
//   h_i    = H(h_{i-1}, tag_i, the block's tokens)
//
// where a text token is its id and an image token its image key and its
// offset inside the image. Tenants and models start from different
// roots, so no block is ever shared across them.
//
// A block's KV is *exact* when every token up to its end was computed at
// every layer (or came from exact blocks); then tag_i is empty and any
// policy may reuse it. A block whose KV went through an approximate link
// (mpic:k, vlcache:r, cacheblend:r, full_reuse leave some image tokens'
// KV cached at some layers) is published with tag_i = the policy's
// canonical name, and so is every block after it in the chain: only a
// later request of the same policy adopts it. `prefix` looks up exact
// blocks only (the honest baseline: what vLLM's prefix cache holds);
// `full` uses no cache at all.
//
// The longest cached run of full blocks is adopted by reference (no copy)
// and never covers the last prompt token, whose logits are needed: a
// repeated prompt computes at most one block.

#include <string>
#include <string_view>
#include <vector>

#include "engine/decoder_weights.hpp"
#include "engine/kv_pool.hpp"
#include "engine/link_plan.hpp"
#include "engine/model/sha256.hpp"
#include "engine/policies.hpp"
#include "engine/policy_spec.hpp"
#include "engine/prefill.hpp"

namespace mosaic {

/// Whose prefix cache a request uses: one tenant of one model, and within
/// it the requests that give the same salt (vLLM's `cache_salt`; empty for
/// none), so that a client can keep its prompts from being probed through
/// cache timing or start a benchmark run from a cold cache.
struct prefix_scope {
  std::string tenant;
  digest model{};
  std::string salt;
};

/// A prompt's tokens as prefix-cache keys, block by block.
class prompt_blocks {
public:
  /// `p`'s tokens in order (image tokens keyed by prompt_image::key).
  prompt_blocks(const prompt& p, const prefix_scope& scope, int block_size);

  int n_tokens() const noexcept { return static_cast<int>(kinds_.size()); }
  int block_size() const noexcept { return block_size_; }
  /// Full blocks of the prompt.
  int n_full_blocks() const noexcept { return n_tokens() / block_size_; }
  const digest& root() const noexcept { return root_; }
  /// The hash of block `block` under `parent` (the previous block's hash,
  /// or root()) with `tag` (empty: exact KV).
  digest hash(int block, const digest& parent, std::string_view tag) const;

private:
  int block_size_;
  digest root_{};
  std::vector<uint8_t> kinds_;    // [n] 0 text, 1 image
  std::vector<int32_t> values_;   // [n] text id or offset in the image
  std::vector<int32_t> image_of_; // [n] index into keys_ (image tokens)
  std::vector<std::string> keys_; ///< image keys, prompt order
};

/// What a prompt found in the cache.
struct prefix_match {
  kv_sequence sequence;       ///< the adopted blocks; length n_tokens
  int n_tokens = 0;           ///< tokens adopted (whole blocks, < prompt length)
  int exact_tokens = 0;       ///< of which the leading ones with exact KV
  std::vector<digest> hashes; ///< the adopted blocks' hashes, in order
};

/// Takes the longest cached prefix of `blocks` (at most `limit_tokens`
/// tokens): exact blocks first, then, when `tag` is not empty, blocks
/// published under `tag`. Counts the look-up in the pool's statistics.
prefix_match match_prefix(kv_pool& pool, const prompt_blocks& blocks, std::string_view tag,
                          int limit_tokens);

/// How many leading tokens of `blocks` the cache holds now (whole blocks,
/// exact or under `tag`, as match_prefix would take them), without taking
/// or counting anything: a look-ahead for planning (actors/linker_actor).
int cached_prefix_tokens(const kv_pool& pool, const prompt_blocks& blocks, std::string_view tag);

/// The first token whose KV in a run of `plan` is not exact: the end of
/// the adopted exact blocks when approximate ones follow, else the first
/// token after the prefix not computed at every layer; n when none.
int first_inexact_token(const link_plan& plan, const prefix_match& match);

/// Publishes the full blocks of `seq` (the sequence the run of `plan`
/// wrote, which starts with `match`'s blocks) that `match` did not adopt:
/// blocks ending at or before `first_inexact` untagged, the rest under
/// `tag` (none when `tag` is empty). Returns the blocks published.
int publish_prompt(kv_pool& pool, const prompt_blocks& blocks, const kv_sequence& seq,
                   const prefix_match& match, int first_inexact, std::string_view tag);

/// The tag a policy's approximate blocks carry (empty: publishes and
/// adopts exact blocks only); whether the policy uses the cache at all.
std::string prefix_tag(const policy_spec& policy);
bool uses_prefix_cache(const policy_spec& policy);

/// What prefill_with_prefix_cache ran.
struct prompt_prefill {
  prefill_result result;
  link_plan plan;           ///< the plan it ran (prefix.sequence cleared: it was result.sequence)
  int cache_hit_tokens = 0; ///< tokens adopted from the prefix cache
  int published_blocks = 0; ///< blocks of this prompt newly published
};

/// Plans `p` under `policy` on top of the longest prefix `pool`'s cache
/// holds for `scope` (no cache when `scope` is null or the policy is
/// `full`), runs it in one pass (options' chunking and hooks apply;
/// `extend` is set here) and publishes the prompt's new full blocks.
result<prompt_prefill> prefill_with_prefix_cache(backend& be, const decoder_weights& weights,
                                                 kv_pool& pool, const prompt& p,
                                                 const policy_spec& policy,
                                                 const vlcache_profile* profile,
                                                 const prefix_scope* scope,
                                                 prefill_options options = {});

} // namespace mosaic
