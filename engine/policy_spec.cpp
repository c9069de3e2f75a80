#include "engine/policy_spec.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace mosaic {

namespace {

constexpr std::string_view accepted =
    "expected one of: full, prefix, full_reuse, mpic:K (1 <= K <= 4096), cacheblend:R, "
    "cacheblend:R@C, vlcache:R (0 < R <= 1; check layer 0 <= C <= 1024, default 1)";

error bad(std::string_view text) {
  return make_error(errc::invalid_argument, "unknown policy '", text, "'; ", accepted);
}

} // namespace

std::string policy_spec::to_string() const {
  switch (kind) {
  case policy_kind::full:
    return "full";
  case policy_kind::prefix:
    return "prefix";
  case policy_kind::full_reuse:
    return "full_reuse";
  case policy_kind::mpic:
    return "mpic:" + std::to_string(k);
  case policy_kind::cacheblend:
  case policy_kind::vlcache: {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(ratio));
    if (kind == policy_kind::vlcache)
      return std::string{"vlcache:"} + buf;
    std::string out = std::string{"cacheblend:"} + buf;
    if (check_layer != default_check_layer)
      out += "@" + std::to_string(check_layer);
    return out;
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
    const bool blend = name == "cacheblend";
    const auto at = blend ? arg.find('@') : std::string_view::npos;
    const char* ratio_end = at == std::string_view::npos ? last : first + at;
    float r = 0.0f;
    auto [ptr, ec] = std::from_chars(first, ratio_end, r);
    if (ec != std::errc{} || ptr != ratio_end || !std::isfinite(r) || r <= 0.0f || r > 1.0f)
      return bad(text);
    policy_spec spec{blend ? policy_kind::cacheblend : policy_kind::vlcache, 0, r};
    if (at != std::string_view::npos) {
      int c = -1;
      auto [cptr, cec] = std::from_chars(ratio_end + 1, last, c);
      if (cec != std::errc{} || cptr != last || ratio_end + 1 == last || c < 0 ||
          c > policy_spec::max_check_layer)
        return bad(text);
      spec.check_layer = c;
    }
    return spec;
  }
  return bad(text);
}

} // namespace mosaic
