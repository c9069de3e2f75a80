// Key files: the API keys file of `mosaic serve --api-keys`
// (server/api_keys.hpp) with an Authorization header checked against it,
// and a node's CURVE key file (kv/transfer/curve_keys.hpp). The input is
// split at its first "\n@@\n": keys text, then the header value.

#include "kv/transfer/curve_keys.hpp"
#include "server/api_keys.hpp"
#include "tests/fuzz/fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto [keys_text, header] = mosaic::fuzz::split_once(mosaic::fuzz::as_text(data, size), "\n@@\n");
  if (auto keys = mosaic::server::api_keys::parse(keys_text, "keys.txt"))
    (void)keys->authenticate(header);
  mosaic::fuzz::memory_file file({data, size});
  if (file.ok())
    (void)mosaic::kv::transfer::read_key_file(file.path());
  return 0;
}
