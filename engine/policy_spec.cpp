#include "engine/policy_spec.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace mosaic {

namespace {

constexpr std::string_view accepted =
  "expected one of: full, prefix, full_reuse, mpic:K (1 <= K <= 4096), cacheblend:R, "
  "vlcache:R (0 < R <= 1)";

error bad(std::string_view text) {
  return make_error(errc::invalid_argument, "unknown policy '", text, "'; ", accepted);
}

} // namespace

std::string policy_spec::to_string() const {
  switch (kind) {
    case policy_kind::full: return "full";
    case policy_kind::prefix: return "prefix";
    case policy_kind::full_reuse: return "full_reuse";
    case policy_kind::mpic: return "mpic:" + std::to_string(k);
    case policy_kind::cacheblend:
    case policy_kind::vlcache: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", static_cast<double>(ratio));
      return std::string{kind == policy_kind::cacheblend ? "cacheblend:" : "vlcache:"} + buf;
    }
  }
  return "full";
}

result<policy_spec> parse_policy(std::string_view text) {
  if (text == "full")
    return policy_spec{policy_kind::full};
  if (text == "prefix")
    return policy_spec{policy_kind::prefix};
  if (text == "full_reuse")
    return policy_spec{policy_kind::full_reuse};
  auto colon = text.find(':');
  if (colon == std::string_view::npos)
    return bad(text);
  auto name = text.substr(0, colon);
  auto arg = text.substr(colon + 1);
  const char* first = arg.data();
  const char* last = arg.data() + arg.size();
  if (name == "mpic") {
    int k = 0;
    auto [ptr, ec] = std::from_chars(first, last, k);
    if (ec != std::errc{} || ptr != last || k < 1 || k > 4096)
      return bad(text);
    return policy_spec{policy_kind::mpic, k, 0.0f};
  }
  if (name == "cacheblend" || name == "vlcache") {
    float r = 0.0f;
    auto [ptr, ec] = std::from_chars(first, last, r);
    if (ec != std::errc{} || ptr != last || !std::isfinite(r) || r <= 0.0f || r > 1.0f)
      return bad(text);
    return policy_spec{name == "vlcache" ? policy_kind::vlcache : policy_kind::cacheblend, 0, r};
  }
  return bad(text);
}

} // namespace mosaic
