#pragma once

// The reuse-policy grammar shared by topology files, the CLI and HTTP
// requests: "full", "prefix", "full_reuse", "mpic:K", "cacheblend:R",
// "cacheblend:R@C" (C: CacheBlend's check layer, default 1),
// "vlcache:R". Parsing lives here (no dependencies) so that every front
// end rejects the same strings with the same message.

#include <string>
#include <string_view>

#include "engine/error.hpp"

namespace mosaic {

enum class policy_kind : uint8_t { full, prefix, full_reuse, mpic, cacheblend, vlcache };

/// Whether a policy links images' KV from the library. `full` and `prefix`
/// (the baselines: no cache, and the prefix cache alone, as vLLM's) do not,
/// so requests under them do no library work beyond reusing an entry's
/// encoder output: no store after use (actors/prefill_actor.cpp).
constexpr bool links_library_kv(policy_kind k) {
  return k != policy_kind::full && k != policy_kind::prefix;
}

/// A parsed policy. `k` is set for mpic (tokens recomputed at the start of
/// each image), `ratio` for cacheblend/vlcache (fraction in (0, 1]),
/// `check_layer` for cacheblend (the layer whose K deviation selects the
/// tokens; a model with fewer layers clamps it to its last layer).
struct policy_spec {
  static constexpr int default_check_layer = 1;
  static constexpr int max_check_layer = 1024;

  policy_kind kind = policy_kind::full;
  int k = 0;
  float ratio = 0.0f;
  int check_layer = default_check_layer;

  /// Canonical text form, parseable again ("mpic:32", "vlcache:0.05",
  /// "cacheblend:0.15", "cacheblend:0.15@2"; the default check layer is
  /// not written).
  std::string to_string() const;
  bool operator==(const policy_spec&) const = default;
};

/// Parses a policy string; errors say which forms are accepted.
result<policy_spec> parse_policy(std::string_view text);

} // namespace mosaic
