#include "messages/messages.hpp"

#include <algorithm>

namespace mosaic {

// The verifier code of every message is compiled once, here.
#define MOSAIC_MESSAGE_INSTANTIATE_(table, alias, ident) template class fb_message<msg::table>;
MOSAIC_MESSAGE_TYPES(MOSAIC_MESSAGE_INSTANTIATE_)
#undef MOSAIC_MESSAGE_INSTANTIATE_

msg::LibraryKey to_msg_key(const library_key_bytes& key) {
  return msg::LibraryKey{flatbuffers::span<const uint8_t, 32>(key.data(), key.size())};
}

library_key_bytes from_msg_key(const msg::LibraryKey& key) {
  library_key_bytes out{};
  std::copy(key.bytes()->begin(), key.bytes()->end(), out.begin());
  return out;
}

} // namespace mosaic
