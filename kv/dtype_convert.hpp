#pragma once

// The storage element type of KV entries on disk (f16 or bf16, chosen per
// library) and the bulk conversions to and from it (engine/model/half.hpp).

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/error.hpp"

namespace mosaic::kv {

/// The element type of KV and embeddings on disk, chosen per library.
enum class storage_dtype : uint8_t {
  f16 = 1,
  bf16 = 2,
};

/// "f16" / "bf16".
const char* to_string(storage_dtype dtype) noexcept;
/// Parses "f16" or "bf16"; anything else is invalid_argument.
result<storage_dtype> parse_storage_dtype(std::string_view text);

/// Converts to / from the given storage type.
void encode(storage_dtype dtype, const float* src, uint16_t* dst, size_t n) noexcept;
void decode(storage_dtype dtype, const uint16_t* src, float* dst, size_t n) noexcept;

} // namespace mosaic::kv
