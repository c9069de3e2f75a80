// safetensors files (model weights from anywhere): the header JSON, its
// offsets and shapes, then every tensor read as f32.

#include "engine/model/safetensors.hpp"
#include "tests/fuzz/fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mosaic::fuzz::memory_file file({data, size});
  if (!file.ok())
    return 0;
  auto st = mosaic::safetensors_file::open(file.path());
  if (!st)
    return 0;
  size_t total = 0;
  for (const auto& t : st->tensors()) {
    total += t.numel();
    if (total > (size_t{1} << 22)) // validated sizes are bounded by the file; keep runs fast
      break;
    auto values = st->read_f32(t.name);
    (void)values;
  }
  return 0;
}
