#pragma once

// Reuse policies as link-plan builders (DESIGN.md §4): each one is only a
// function that chooses S_0..S_{L-1} (and which cached sources to use).
//
// | policy         | S_l                                                   |
// |----------------|-------------------------------------------------------|
// | full           | every token, every layer (no reuse)                   |
// | prefix         | tokens after the prefix match (exact)                 |
// | full_reuse     | text tokens (+ the last token)                        |
// | mpic:k         | text + the first k tokens of each cached image        |
// | cacheblend:r   | every token at layers 0..c (check layer c, default 1, |
// | cacheblend:r@c | clamped to L-1); after c: text + per cached image the |
// |                | round(r * n) tokens whose fresh pre-RoPE K deviates   |
// |                | most from the cached K at layer c (measured in-pass)  |
// | vlcache:r      | text + a leading fraction f_l of each cached image;   |
// |                | f_l non-increasing with depth (nested sets), budget   |
// |                | from the calibrated profile, mean fraction r          |
//
// Every plan's sets are nested, S_0 ⊇ S_1 ⊇ … (link_plan::validate).
//
// Every policy except `full` reuses a prefix match exactly; `prefix` uses
// nothing else (a prompt whose images are cached standalone but not as a
// prefix gets no reuse from them). Images without a cached entry (misses)
// are computed at every layer under every policy. Positions are 0..n-1.

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "engine/compiled_image.hpp"
#include "engine/error.hpp"
#include "engine/link_plan.hpp"
#include "engine/model/model_config.hpp"
#include "engine/policy_spec.hpp"

namespace mosaic {

/// One image of a prompt.
struct prompt_image {
  std::string key; ///< library key (informational)
  int n_tokens = 0;
  /// The library's entry, or nullptr for a miss.
  const compiled_image* cached = nullptr;
  /// Fresh encoder output for a miss (host; may be null for a hit, whose
  /// entry carries the embeddings).
  const float* embeddings = nullptr; // [n_tokens, hidden]
  /// M-RoPE models (Qwen2-VL): the image's token grid; the plan's rotary
  /// positions come from it.
  token_grid grid{};
};

/// One run of the prompt: text ids, or one image.
struct prompt_part {
  segment_kind kind = segment_kind::text;
  std::vector<int32_t> text_ids; ///< text parts
  int image = -1;                ///< image parts: index into prompt::images
};

/// A prompt, segment by segment (BOS is the caller's first text id).
struct prompt {
  std::vector<prompt_part> parts;
  std::vector<prompt_image> images;
};

/// Splits tokenizer output in which each `image_token_id` marks one image
/// (tokenizer::encode_prompt) into a prompt: the i-th marker becomes an
/// image part for images[i]. Errors when the counts differ.
result<prompt> split_prompt(std::span<const int32_t> ids, int32_t image_token_id,
                            std::vector<prompt_image> images);

/// VLCache's per-layer sensitivity: larger weight = more recompute budget.
struct vlcache_profile {
  std::vector<float> layer_weights; // [n_layers], >= 0, not all zero
  bool uniform = true;
  std::string source; ///< where it came from, for stats and logs
};

/// A uniform profile (every layer the same budget).
vlcache_profile uniform_vlcache_profile(int n_layers);

/// Reads `<model_dir>/vlcache_profile.json` ({"layer_weights": [...]} with
/// one non-negative weight per layer). A missing file gives the uniform
/// profile with a source saying so; a malformed one is an error.
result<vlcache_profile> load_vlcache_profile(const std::filesystem::path& model_dir, int n_layers);

/// Per-layer recompute fractions f_l in [0, 1], non-increasing with depth,
/// with mean r. The weights are first made non-increasing by suffix
/// maxima, W_l = max over l' >= l of w_l' (a layer gets at least the
/// budget of any deeper layer, since a token recomputed deep must be
/// recomputed at every layer above it); then f_l = min(1, c * W_l) with c
/// such that mean f = r (water filling: a capped layer's excess goes to
/// the others). Equivalently: the suffix maxima of the calibrated
/// fractions min(1, c * w_l), rescaled so that the mean stays r. The mean
/// is exactly r (up to bisection) unless r exceeds the share of layers
/// with W_l > 0; those layers then get 1, the rest 0. A non-increasing
/// profile is used as it is.
std::vector<float> vlcache_layer_fractions(const vlcache_profile& profile, float r);

/// Builds the plan of `policy` for `p`. `prefix` (optional) is a previous
/// sequence holding the exact KV of the first prefix.n_tokens tokens;
/// `profile` is used by vlcache (uniform when null). Errors name the
/// part or image at fault.
result<link_plan> build_link_plan(const prompt& p, const policy_spec& policy,
                                  const text_config& cfg, const prefix_kv& prefix = {},
                                  const vlcache_profile* profile = nullptr);

} // namespace mosaic
