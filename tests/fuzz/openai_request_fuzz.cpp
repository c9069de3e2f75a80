// OpenAI JSON request bodies (server/openai_request.hpp): chat
// completions and completions, with the server's default limits.

#include "server/openai_request.hpp"
#include "tests/fuzz/fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto body = mosaic::fuzz::as_text(data, size);
  mosaic::server::request_limits limits;
  (void)mosaic::server::parse_chat_request(body, limits);
  (void)mosaic::server::parse_completion_request(body, limits);
  return 0;
}
