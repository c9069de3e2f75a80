// Images from clients: a data URL (`data:image/png;base64,...`) parsed as
// a request's image part, then its bytes (or the raw input, when it is not
// a data URL) probed for their header and decoded with the server's checks
// (limits smaller than the server's so that runs stay fast), then
// preprocessed as the vision tower would see them.

#include "engine/model/image.hpp"
#include "engine/model/model_config.hpp"
#include "server/image_probe.hpp"
#include "server/openai_request.hpp"
#include "tests/fuzz/fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mosaic::server::request_limits limits;
  std::span<const uint8_t> bytes{data, size};
  auto part = mosaic::server::parse_image_url(mosaic::fuzz::as_text(data, size), limits,
                                              "messages[0].content[0].image_url");
  if (part && !part.value->is_reference())
    bytes = part.value->bytes;
  (void)mosaic::server::probe_image(bytes);
  mosaic::image_limits small{.max_width = 1024, .max_height = 1024, .max_bytes = 1u << 20};
  auto img = mosaic::decode_image(bytes, small);
  if (img) {
    mosaic::vision_config vc;
    vc.image_size = 32;
    vc.patch_size = 16;
    (void)mosaic::preprocess_image(*img, vc);
  }
  return 0;
}
