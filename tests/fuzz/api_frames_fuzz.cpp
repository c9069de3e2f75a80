// The front door's ZeroMQ API frames (messages/api_frames.hpp): a client's
// request frame as the server reads it, a server's frame as the client
// reads it, and each decoded frame encoded and decoded again unchanged.

#include <cmath>
#include <cstdlib>

#include "messages/api_frames.hpp"

namespace {

// NaN never equals itself; the frame carries it faithfully (the server's
// check_sampling refuses it), so compare NaNs as equal.
mosaic::api::client_frame comparable(mosaic::api::client_frame f) {
  if (auto* c = std::get_if<mosaic::api::chat_request>(&f.body)) {
    if (std::isnan(c->temperature))
      c->temperature = -1.0f;
    if (std::isnan(c->top_p))
      c->top_p = -1.0f;
  }
  return f;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> bytes{data, size};
  if (auto f = mosaic::api::decode_client_frame(bytes)) {
    auto again = mosaic::api::decode_client_frame(mosaic::api::encode(*f));
    if (!again || !(comparable(*again) == comparable(*f)))
      std::abort(); // encode(decode(x)) must read back as the same frame
  }
  if (auto f = mosaic::api::decode_server_frame(bytes)) {
    auto again = mosaic::api::decode_server_frame(mosaic::api::encode(*f));
    if (!again || !(*again == *f))
      std::abort();
  }
  return 0;
}
