#pragma once

// IEEE half (f16) and bfloat16 (bf16) conversions, used by safetensors I/O
// and the KV library files. f32 → f16/bf16 round to nearest even; NaN
// stays NaN, overflow gives inf. The bulk forms are branch-free loops the
// compiler vectorises (f16 → f32 uses F16C when the CPU has it).

#include <cstddef>
#include <cstdint>

namespace mosaic {

/// f16 bits → f32 (exact; subnormals, inf and NaN preserved).
float f16_to_f32(uint16_t bits) noexcept;
/// f32 → f16 bits, round to nearest even.
uint16_t f32_to_f16(float value) noexcept;
/// bf16 bits → f32 (exact).
float bf16_to_f32(uint16_t bits) noexcept;
/// f32 → bf16 bits, round to nearest even.
uint16_t f32_to_bf16(float value) noexcept;

/// dst[i] = f16(src[i]), i < n.
void f32_to_f16(const float* src, uint16_t* dst, size_t n) noexcept;
/// dst[i] = f32(src[i]), i < n (exact).
void f16_to_f32(const uint16_t* src, float* dst, size_t n) noexcept;
/// dst[i] = bf16(src[i]), i < n.
void f32_to_bf16(const float* src, uint16_t* dst, size_t n) noexcept;
/// dst[i] = f32(src[i]), i < n (exact).
void bf16_to_f32(const uint16_t* src, float* dst, size_t n) noexcept;

} // namespace mosaic
