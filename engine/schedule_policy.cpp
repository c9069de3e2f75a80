#include "engine/schedule_policy.hpp"

#include <algorithm>
#include <charconv>

namespace mosaic {

namespace {

constexpr std::string_view policy_forms =
    "expected \"fcfs\", \"dynamic\", \"dynamic:count=N,wait=S,max=B\" or fixed sizes "
    "\"p<P>c<C>d<D>\" (e.g. \"p2c2d8\", optionally \":wait=S\")";

template <typename T>
bool parse_number(std::string_view s, T& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size();
}

error bad_policy(std::string_view text) {
  return make_error(errc::invalid_argument, "bad schedule policy \"", std::string(text), "\"; ",
                    std::string(policy_forms));
}

/// "p2c2d8" → {2, 2, 8}; false when malformed.
bool parse_fixed(std::string_view s, std::array<int, n_stage_kinds>& sizes) {
  constexpr std::string_view letters = "pcd";
  for (size_t i = 0; i < letters.size(); ++i) {
    if (s.empty() || s.front() != letters[i])
      return false;
    s.remove_prefix(1);
    const size_t digits = std::min(s.size(), s.find_first_not_of("0123456789"));
    if (!parse_number(s.substr(0, digits), sizes[i]) || sizes[i] < 1)
      return false;
    s.remove_prefix(digits);
  }
  return s.empty();
}

} // namespace

std::string_view stage_name(stage_kind s) noexcept {
  switch (s) {
  case stage_kind::prefill:
    return "prefill";
  case stage_kind::compress:
    return "compress";
  case stage_kind::decode:
    return "decode";
  }
  return "?";
}

std::string schedule_policy::to_string() const {
  switch (kind) {
  case kind_t::fcfs:
    return "fcfs";
  case kind_t::fixed: {
    std::string s = "p";
    s += std::to_string(batch[0]);
    s += "c";
    s += std::to_string(batch[1]);
    s += "d";
    s += std::to_string(batch[2]);
    s += ":wait=";
    s += std::to_string(max_wait);
    return s;
  }
  case kind_t::dynamic:
    break;
  }
  std::string s = "dynamic:count=";
  s += std::to_string(count);
  s += ",wait=";
  s += std::to_string(max_wait);
  s += ",max=";
  s += std::to_string(batch[0]);
  return s;
}

result<schedule_policy> parse_schedule_policy(std::string_view text) {
  schedule_policy p;
  const auto colon = text.find(':');
  const std::string_view name = text.substr(0, colon);
  if (name == "fcfs") {
    p.kind = schedule_policy::kind_t::fcfs;
    p.batch = {1, 1, 1};
    return colon == std::string_view::npos ? result<schedule_policy>(p) : bad_policy(text);
  }
  if (name == "dynamic") {
    p.kind = schedule_policy::kind_t::dynamic;
  } else if (parse_fixed(name, p.batch)) {
    p.kind = schedule_policy::kind_t::fixed;
    p.max_wait = 0.5;
  } else {
    return bad_policy(text);
  }
  std::string_view rest = colon == std::string_view::npos ? "" : text.substr(colon + 1);
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    const auto eq = item.find('=');
    const std::string_view key = item.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? "" : item.substr(eq + 1);
    const bool dyn = p.kind == schedule_policy::kind_t::dynamic;
    int v = 0;
    // A wait is finite and at most an hour (inf or 1e300 would park a
    // request for ever).
    if (key == "wait" && parse_number(value, p.max_wait) && p.max_wait >= 0.0 &&
        p.max_wait <= 3600.0)
      continue;
    if (dyn && key == "count" && parse_number(value, v) && v >= 1) {
      p.count = v;
      continue;
    }
    if (dyn && key == "max" && parse_number(value, v) && v >= 1) {
      p.batch = {v, v, v};
      continue;
    }
    return bad_policy(text);
  }
  return p;
}

} // namespace mosaic
