#include "server/json_parse.hpp"

#include <cstdint>
#include <optional>
#include <string>

#include <simdjson.h>

namespace mosaic::server {

namespace {

using json = nlohmann::json;

/// Nesting simdjson may go to before the document is left to nlohmann
/// (whose parser keeps its own stack): bounds the recursion below.
constexpr size_t max_fast_depth = 128;

/// The simdjson element as nlohmann::json, typed as nlohmann's parser types
/// it (a non-negative integer is unsigned, "-0" a signed 0); nothing when a
/// number does not fit simdjson's types or is a 0 that may have been "-0"
/// (simdjson keeps no sign for it; `minus_zero`: the body has "-0"
/// somewhere): nlohmann then decides.
std::optional<json> convert(simdjson::dom::element e, bool minus_zero) {
  using simdjson::dom::element_type;
  switch (e.type()) {
  case element_type::OBJECT: {
    json out = json::object();
    const simdjson::dom::object obj = e.get_object().value_unsafe();
    for (auto field : obj) {
      auto v = convert(field.value, minus_zero);
      if (!v)
        return std::nullopt;
      out[std::string{field.key}] = std::move(*v); // a repeated key: the last wins, as nlohmann's
    }
    return out;
  }
  case element_type::ARRAY: {
    json out = json::array();
    const simdjson::dom::array arr = e.get_array().value_unsafe();
    for (auto item : arr) {
      auto v = convert(item, minus_zero);
      if (!v)
        return std::nullopt;
      out.push_back(std::move(*v));
    }
    return out;
  }
  case element_type::STRING:
    return json(std::string{e.get_string().value_unsafe()});
  case element_type::INT64: {
    const int64_t v = e.get_int64().value_unsafe();
    if (v == 0 && minus_zero)
      return std::nullopt;
    return v >= 0 ? json(static_cast<uint64_t>(v)) : json(v);
  }
  case element_type::UINT64:
    return json(e.get_uint64().value_unsafe());
  case element_type::DOUBLE:
    return json(e.get_double().value_unsafe());
  case element_type::BOOL:
    return json(e.get_bool().value_unsafe());
  case element_type::NULL_VALUE:
    return json(nullptr);
  }
  return std::nullopt;
}

} // namespace

json parse_json(std::string_view body) {
  // A parser per call: its buffers are sized to this body and freed with it.
  simdjson::dom::parser parser;
  if (parser.allocate(body.size(), max_fast_depth) == simdjson::SUCCESS) {
    const simdjson::padded_string padded{body};
    simdjson::dom::element root;
    if (parser.parse(padded).get(root) == simdjson::SUCCESS)
      if (auto out = convert(root, body.find("-0") != std::string_view::npos))
        return std::move(*out);
  }
  return json::parse(body, nullptr, /*allow_exceptions=*/false);
}

} // namespace mosaic::server
