#include "engine/model/half.hpp"

#include <algorithm>
#include <bit>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace mosaic {

namespace {

inline uint32_t bits(float f) noexcept {
  return std::bit_cast<uint32_t>(f);
}
inline float from_bits(uint32_t u) noexcept {
  return std::bit_cast<float>(u);
}

inline uint16_t to_f16(float f) noexcept {
  // Scaling by 2^112 then 2^-110 rounds the mantissa to f16 precision in
  // the FPU (nearest even) and flushes overflow to inf. Selects are masks
  // so that the loop has no control flow and vectorises.
  const uint32_t w = bits(f);
  float base = (from_bits(w & 0x7FFFFFFFu) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t bias = std::max(shl1_w & 0xFF000000u, 0x71000000u);
  base = from_bits((bias >> 1) + 0x07800000u) + base;
  const uint32_t b = bits(base);
  const uint32_t nonsign = ((b >> 13) & 0x00007C00u) + (b & 0x00000FFFu);
  const uint32_t nan_mask = 0u - uint32_t(shl1_w > 0xFF000000u);
  return static_cast<uint16_t>((sign >> 16) | (0x7E00u & nan_mask) | (nonsign & ~nan_mask));
}

inline float from_f16(uint16_t h) noexcept {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t den_mask = 0u - uint32_t(two_w < (1u << 27));
  return from_bits(sign | (bits(denormalized) & den_mask) | (bits(normalized) & ~den_mask));
}

inline uint16_t to_bf16(float f) noexcept {
  const uint32_t u = bits(f);
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(nan ? ((u >> 16) | 0x40u) : rounded);
}

} // namespace

float f16_to_f32(uint16_t bits) noexcept {
  return from_f16(bits);
}
uint16_t f32_to_f16(float value) noexcept {
  return to_f16(value);
}
float bf16_to_f32(uint16_t bits) noexcept {
  return from_bits(static_cast<uint32_t>(bits) << 16);
}
uint16_t f32_to_bf16(float value) noexcept {
  return to_bf16(value);
}

void f32_to_f16(const float* src, uint16_t* dst, size_t n) noexcept {
  for (size_t i = 0; i < n; ++i)
    dst[i] = to_f16(src[i]);
}

#if defined(__x86_64__)
// The loader's hot path: F16C converts 8 halves per instruction (exactly),
// chosen at run time so that the build needs no -mf16c.
__attribute__((target("avx,f16c"))) void f16_to_f32_f16c(const uint16_t* src, float* dst,
                                                         size_t n) noexcept {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i)
    dst[i] = from_f16(src[i]);
}
#endif

#if defined(__x86_64__)
namespace {
// CPUID leaf 1, ECX bit 29 (Clang 14's __builtin_cpu_supports has no "f16c").
bool cpu_has_f16c() noexcept {
  static const bool yes = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
  }();
  return yes;
}
} // namespace
#endif

void f16_to_f32(const uint16_t* src, float* dst, size_t n) noexcept {
#if defined(__x86_64__)
  if (cpu_has_f16c()) {
    f16_to_f32_f16c(src, dst, n);
    return;
  }
#endif
  for (size_t i = 0; i < n; ++i)
    dst[i] = from_f16(src[i]);
}

void f32_to_bf16(const float* src, uint16_t* dst, size_t n) noexcept {
  for (size_t i = 0; i < n; ++i)
    dst[i] = to_bf16(src[i]);
}

void bf16_to_f32(const uint16_t* src, float* dst, size_t n) noexcept {
  for (size_t i = 0; i < n; ++i)
    dst[i] = from_bits(static_cast<uint32_t>(src[i]) << 16);
}

} // namespace mosaic
