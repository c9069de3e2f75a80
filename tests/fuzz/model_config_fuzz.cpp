// A model directory's JSON files: config.json and preprocessor_config.json
// (split at the first "\n@@\n" of the input), parsed and validated.

#include "engine/model/model_config.hpp"
#include "tests/fuzz/fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto [config, preprocessor] =
      mosaic::fuzz::split_once(mosaic::fuzz::as_text(data, size), "\n@@\n");
  auto cfg = mosaic::parse_model_config(config, preprocessor);
  if (cfg)
    (void)mosaic::validate_model_config(*cfg);
  return 0;
}
