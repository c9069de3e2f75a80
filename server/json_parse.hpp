#pragma once

// The front door's JSON parser. Request bodies carry images as data URLs,
// so they are megabytes long, nearly all of it inside a few strings:
// nlohmann's lexer reads them at ~70 MB/s (19 ms for three 336 px PNGs,
// docs/profile.md). simdjson (Debian's libsimdjson) reads them at GB/s;
// its tree is then copied into nlohmann::json, which the request readers
// use. Whatever simdjson refuses is handed to nlohmann's own parser, so
// that what is accepted, and how it reads, stays nlohmann's.

#include <string_view>

#include <nlohmann/json.hpp>

namespace mosaic::server {

/// `body` as nlohmann::json, or a discarded value (is_discarded()) when it
/// is not valid JSON. Equal to nlohmann::json::parse(body, nullptr, false)
/// for every input (tests/fuzz/openai_request_fuzz.cpp checks it).
nlohmann::json parse_json(std::string_view body);

} // namespace mosaic::server
