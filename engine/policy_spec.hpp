#pragma once

// The reuse-policy grammar shared by topology files, the CLI and HTTP
// requests: "full", "prefix", "full_reuse", "mpic:K", "cacheblend:R",
// "vlcache:R". Parsing lives here (no dependencies) so that every front
// end rejects the same strings with the same message.

#include <string>
#include <string_view>

#include "engine/error.hpp"

namespace mosaic {

enum class policy_kind : uint8_t { full, prefix, full_reuse, mpic, cacheblend, vlcache };

/// A parsed policy. `k` is set for mpic (tokens recomputed at the start of
/// each image), `ratio` for cacheblend/vlcache (fraction in (0, 1]).
struct policy_spec {
  policy_kind kind = policy_kind::full;
  int k = 0;
  float ratio = 0.0f;

  /// Canonical text form, parseable again ("mpic:32", "vlcache:0.05").
  std::string to_string() const;
  bool operator==(const policy_spec&) const = default;
};

/// Parses a policy string; errors say which forms are accepted.
result<policy_spec> parse_policy(std::string_view text);

} // namespace mosaic
