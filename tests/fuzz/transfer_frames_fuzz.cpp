// The KV data plane's frames (kv/transfer/wire.hpp) as a receiver or a
// sender reads them from a peer: the 48-byte header, a begin payload and
// an error payload.

#include "kv/transfer/wire.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mosaic::kv::transfer;
  std::span<const std::byte> bytes{reinterpret_cast<const std::byte*>(data), size};
  if (auto h = decode_header(bytes.first(std::min(size, header_bytes)))) {
    auto payload = bytes.subspan(std::min(size, header_bytes));
    if (h->kind == frame_kind::begin)
      (void)decode_begin(payload);
  }
  (void)decode_begin(bytes);
  (void)decode_error(bytes);
  (void)checksum(bytes);
  return 0;
}
