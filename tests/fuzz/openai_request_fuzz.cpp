// OpenAI JSON request bodies (server/openai_request.hpp): chat
// completions and completions, with the server's default limits. The
// front door's JSON parser (server/json_parse.hpp, simdjson) must give
// exactly what nlohmann's parser gives: the same tree, the same number
// types, and refusal of the same inputs.

#include <cstdlib>

#include "server/json_parse.hpp"
#include "server/openai_request.hpp"
#include "tests/fuzz/fuzz_util.hpp"

namespace {

bool same(const nlohmann::json& a, const nlohmann::json& b) {
  if (a.type() != b.type() || a.size() != b.size())
    return false;
  if (a.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it)
      if (!b.contains(it.key()) || !same(*it, b[it.key()]))
        return false;
    return true;
  }
  if (a.is_array()) {
    for (size_t i = 0; i < a.size(); ++i)
      if (!same(a[i], b[i]))
        return false;
    return true;
  }
  return a == b;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto body = mosaic::fuzz::as_text(data, size);
  const auto fast = mosaic::server::parse_json(body);
  const auto ref = nlohmann::json::parse(body, nullptr, false);
  if (fast.is_discarded() != ref.is_discarded() || (!ref.is_discarded() && !same(fast, ref)))
    std::abort();
  mosaic::server::request_limits limits;
  (void)mosaic::server::parse_chat_request(body, limits);
  (void)mosaic::server::parse_completion_request(body, limits);
  return 0;
}
