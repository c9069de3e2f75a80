#pragma once

// The link plan (DESIGN.md §4): everything one prefill pass needs to know
// about where each token's input and KV come from and which tokens are
// computed at which layer. Every reuse policy is a function that builds
// one (engine/policies.hpp); the prefill executor (engine/prefill.hpp)
// runs any of them in ONE pass:
//
//   for l in 0..L-1:
//     place cached KV of layer l (image entries: pre-RoPE K rotated to the
//       token's position; prefix: KV copied as is, same positions)
//     tokens in S_l: norm → Q,K,V (RoPE at the token's position) → their
//       fresh K,V overwrite their slots → attention over every slot,
//       causal by position → o_proj, residual, MLP, residual
//     tokens not in S_l: hidden state unchanged, slot keeps the cached KV
//
// The sets are nested, S_0 ⊇ S_1 ⊇ … (validate() enforces it): a token
// not computed at layer l has no layer-l output, so it may stop being
// computed with depth but never start.
//
// A plan borrows its inputs (image embeddings, compiled images, the
// prefix sequence): they must outlive the prefill that runs it.

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "engine/compiled_image.hpp"
#include "engine/error.hpp"
#include "engine/model/token_grid.hpp"

namespace mosaic {

class kv_sequence;

enum class segment_kind : uint8_t { text, image };

/// A contiguous run of tokens of one kind.
struct plan_segment {
  segment_kind kind = segment_kind::text;
  int begin = 0;  ///< first token index
  int end = 0;    ///< one past the last token index
  int image = -1; ///< index into link_plan::images for image segments
};

/// One image of the prompt.
struct plan_image {
  std::string key;  ///< library key (informational; may be empty)
  int n_tokens = 0; ///< tokens the image occupies
  /// The image tokens' input embeddings (projector output), host memory:
  /// the cached entry's embeddings for a hit, the fresh encoder output
  /// for a miss.
  const float* embeddings = nullptr; // [n_tokens, hidden]
  /// The cached standalone KV (K pre-RoPE), or nullptr for a miss.
  const compiled_image* entry = nullptr;
  /// M-RoPE models: the image's token grid (count() == n_tokens).
  token_grid grid{};
};

/// Where a token's KV comes from at a layer where it is not computed.
enum class kv_source_kind : uint8_t {
  compute,     ///< no cache: the token must be computed at every layer
  image_entry, ///< row `row` of images[index].entry (pre-RoPE K, rotated at link time)
  prefix,      ///< row `row` of the prefix sequence (K already rotated, same position)
};

struct kv_source {
  kv_source_kind kind = kv_source_kind::compute;
  int32_t index = -1; ///< image index (image_entry)
  int32_t row = -1;   ///< row inside the entry or the prefix sequence
};

/// A previous sequence's KV, reused exactly for the first `n_tokens`
/// tokens (identical tokens at identical positions: the caller's prefix
/// match guarantees that).
struct prefix_kv {
  const kv_sequence* sequence = nullptr;
  int n_tokens = 0;
};

class link_plan;

/// Fills plan.rope_positions and plan.rope_delta from the segments and the
/// images' grids, as HF Qwen2-VL's get_rope_index: a text token takes the
/// next position in all three components; an image starting where the
/// largest position so far + 1 is s gives its token (i, j, k) the
/// components (s + i, s + j, s + k) and the text after it continues from
/// s + max(t, rows, cols). An image without a grid, or whose grid does not
/// count its tokens → invalid_argument.
status assign_mrope_positions(link_plan& plan);

/// A plan whose compute sets past `layer` are decided during the pass
/// (CacheBlend's check layer): after projecting layer `layer`'s Q/K/V, the
/// executor measures for tokens with an image_entry source that were
/// computed there the squared L2 distance between their fresh and their
/// cached pre-RoPE K (`k_deviation[token]`, one entry per token) and calls
/// `complete`, which decides compute[layer+1 ..].
///
/// Contract (so that a chunked pass can measure chunk by chunk):
/// - `complete` may be called more than once during one pass, each time
///   with the deviations of a SUBSET of the tokens; `k_deviation[t] < 0`
///   (the executor passes -1) means "not measured in this call".
/// - Each call decides only for the tokens it measured: it may add or
///   remove a measured token in compute[layer+1 ..]; every token not
///   measured keeps its current membership. Calling it with disjoint
///   subsets therefore gives the union of the per-subset decisions.
/// - It must keep compute[layer+1 ..] valid (sorted, nested, every
///   must-compute token present) and must not read `layer` from the plan
///   (the executor clears it once the pass no longer needs the hook).
struct plan_completion {
  int layer = -1; ///< -1: the plan is complete
  std::function<status(link_plan& plan, std::span<const float> k_deviation)> complete;
};

/// The plan. Build with a policy (engine/policies.hpp) or by hand; check
/// with validate() (the executor does).
class link_plan {
public:
  // -- geometry ---------------------------------------------------------------

  int n_layers = 0;
  int hidden = 0; ///< decoder hidden size
  int kv_dim = 0; ///< n_kv_heads * head_dim

  // -- tokens -----------------------------------------------------------------

  std::vector<int32_t> token_ids; // [n] text token id; -1 for image tokens
  std::vector<int32_t> positions; // [n] absolute positions, strictly increasing
  /// M-RoPE models (Qwen2-VL): the rotary positions, component-major
  /// [3, n] (temporal, height, width), as HF's get_rope_index makes them
  /// (assign_mrope_positions); empty for plain RoPE, which rotates by
  /// `positions`. `positions` stays the token order attention is causal in.
  std::vector<int32_t> rope_positions;
  /// M-RoPE: the largest rotary position + 1 minus n (HF's rope_deltas); a
  /// token decoded at index i after the prompt turns by i + rope_delta.
  int32_t rope_delta = 0;
  std::vector<plan_segment> segments; ///< cover [0, n) in order
  std::vector<plan_image> images;
  std::vector<kv_source> kv; // [n]
  prefix_kv prefix;

  // -- recompute sets ---------------------------------------------------------

  /// compute[l] = S_l: sorted token indices computed at layer l;
  /// compute[l+1] ⊆ compute[l].
  std::vector<std::vector<int32_t>> compute; // [n_layers][|S_l|]
  plan_completion completion;

  /// Free-form note from the policy (e.g. which vlcache profile was used).
  std::string note;

  // -- queries ----------------------------------------------------------------

  int n_tokens() const noexcept { return static_cast<int>(positions.size()); }
  /// Where token `token`'s KV comes from at layer `layer` (compute if the
  /// token is in S_l).
  kv_source source(int token, int layer) const;
  /// Tokens computed at all layers, summed, over n_layers * n_tokens.
  double recomputed_fraction() const;
  /// Checks every invariant; errors name the token/layer and the rule.
  /// Layers past a pending completion are checked only once completed.
  status validate() const;
  /// Checks the compute set of one layer, including S_layer ⊆ S_{layer-1}
  /// (a token may stop being computed, never start: its hidden state at
  /// a layer exists only if it was computed at every layer before).
  status validate_layer(int layer) const;
};

} // namespace mosaic
