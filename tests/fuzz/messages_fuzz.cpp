// FlatBuffers messages from peers: every actor message type through the
// verifier (fb_message::from_bytes), and the readers that turn verified
// buffers into plain structs.

#include "messages/messages.hpp"
#include "messages/readers.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> bytes{data, size};
  using namespace mosaic;
#define MOSAIC_FUZZ_VERIFY_(table, alias, ident) (void)alias::from_bytes(bytes);
  MOSAIC_MESSAGE_TYPES(MOSAIC_FUZZ_VERIFY_)
#undef MOSAIC_FUZZ_VERIFY_
  if (auto m = generate_request_msg::from_bytes(bytes))
    (void)read_generate_request(*m);
  if (auto m = encode_request_msg::from_bytes(bytes))
    (void)read_encode_request(*m);
  if (auto m = token_event_msg::from_bytes(bytes))
    (void)read_token_event(*m);
  if (auto m = library_lookup_result_msg::from_bytes(bytes))
    (void)read_library_lookup_result(*m);
  if (auto m = prefill_done_msg::from_bytes(bytes))
    (void)read_prefill_done(*m);
  if (auto m = decode_task_msg::from_bytes(bytes))
    (void)read_decode_task(m->root());
  return 0;
}
