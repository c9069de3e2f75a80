#include "kv/dtype_convert.hpp"

#include "engine/model/half.hpp"

#include <string>

namespace mosaic::kv {

const char* to_string(storage_dtype dtype) noexcept {
  switch (dtype) {
  case storage_dtype::f16:
    return "f16";
  case storage_dtype::bf16:
    return "bf16";
  }
  return "unknown";
}

result<storage_dtype> parse_storage_dtype(std::string_view text) {
  if (text == "f16")
    return storage_dtype::f16;
  if (text == "bf16")
    return storage_dtype::bf16;
  return make_error(errc::invalid_argument, "unknown KV storage dtype '", std::string{text},
                    "'; use f16 or bf16");
}

void encode(storage_dtype dtype, const float* src, uint16_t* dst, size_t n) noexcept {
  if (dtype == storage_dtype::bf16)
    f32_to_bf16(src, dst, n);
  else
    f32_to_f16(src, dst, n);
}

void decode(storage_dtype dtype, const uint16_t* src, float* dst, size_t n) noexcept {
  if (dtype == storage_dtype::bf16)
    bf16_to_f32(src, dst, n);
  else
    f16_to_f32(src, dst, n);
}

} // namespace mosaic::kv
