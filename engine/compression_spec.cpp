#include "engine/compression_spec.hpp"

#include <algorithm>
#include <charconv>
#include <string>
#include <vector>

namespace mosaic {

namespace {

constexpr std::string_view forms =
    "expected \"none\" or \"<snapkv|keynorm|streaming>[:key=value,...]\" with keys img, txt "
    "(keep ratios in (0, 1]), window, pool (snapkv), sink, recent (streaming); or \"learned\"";

std::string_view method_name(compression_method m) {
  switch (m) {
  case compression_method::none:
    return "none";
  case compression_method::snapkv:
    return "snapkv";
  case compression_method::keynorm:
    return "keynorm";
  case compression_method::streaming:
    return "streaming";
  case compression_method::learned:
    return "learned";
  }
  return "none";
}

std::string ratio_text(float r) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), r);
  return ec == std::errc{} ? std::string(buf, end) : std::to_string(r);
}

template <typename T>
bool parse_number(std::string_view s, T& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size();
}

} // namespace

std::string compression_spec::to_string() const {
  if (method == compression_method::none || method == compression_method::learned)
    return std::string(method_name(method));
  std::string s(method_name(method));
  s += ":img=" + ratio_text(image_ratio) + ",txt=" + ratio_text(text_ratio);
  if (method == compression_method::snapkv)
    s += ",window=" + std::to_string(window) + ",pool=" + std::to_string(pool);
  if (method == compression_method::streaming)
    s += ",sink=" + std::to_string(sink) + ",recent=" + std::to_string(recent);
  return s;
}

result<compression_spec> parse_compression(std::string_view text) {
  compression_spec spec;
  const auto colon = text.find(':');
  const std::string_view name = text.substr(0, colon);
  if (name == "none")
    spec.method = compression_method::none;
  else if (name == "snapkv")
    spec.method = compression_method::snapkv;
  else if (name == "keynorm")
    spec.method = compression_method::keynorm;
  else if (name == "streaming")
    spec.method = compression_method::streaming;
  else if (name == "learned")
    spec.method = compression_method::learned;
  else
    return make_error(errc::invalid_argument, "unknown compression method \"", std::string(name),
                      "\"; ", std::string(forms));
  if (colon == std::string_view::npos)
    return spec;
  if (spec.method == compression_method::none || spec.method == compression_method::learned)
    return make_error(errc::invalid_argument, "compression \"", std::string(name),
                      "\" takes no options (learned: the compressor file fixes its group sizes)");
  std::string_view rest = text.substr(colon + 1);
  if (rest.empty())
    return make_error(errc::invalid_argument, "compression \"", std::string(text),
                      "\" has a ':' but no options; drop the ':' or name options, ",
                      std::string(forms));
  std::vector<std::string_view> seen;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    const auto eq = item.find('=');
    const std::string_view key = item.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? "" : item.substr(eq + 1);
    if (std::find(seen.begin(), seen.end(), key) != seen.end())
      return make_error(errc::invalid_argument, "compression option \"", std::string(key),
                        "\" is given twice in \"", std::string(text), "\"");
    seen.push_back(key);
    bool ok = false;
    if (key == "img" || key == "txt") {
      float r = 0.0f;
      ok = parse_number(value, r) && r > 0.0f && r <= 1.0f;
      (key == "img" ? spec.image_ratio : spec.text_ratio) = r;
    } else if (key == "window" || key == "pool" || key == "sink" || key == "recent") {
      int v = 0;
      ok = parse_number(value, v) && v >= (key == "window" || key == "pool" ? 1 : 0);
      (key == "window" ? spec.window
       : key == "pool" ? spec.pool
       : key == "sink" ? spec.sink
                       : spec.recent) = v;
    }
    if (!ok)
      return make_error(errc::invalid_argument, "bad compression option \"", std::string(item),
                        "\" in \"", std::string(text), "\"; ", std::string(forms));
  }
  return spec;
}

} // namespace mosaic
