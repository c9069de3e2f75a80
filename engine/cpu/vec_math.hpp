#pragma once

// Branch-free scalar math that GCC/Clang vectorise inside simple loops
// (glibc's expf is a call the vectoriser cannot see through without
// -ffast-math). Internal to the CPU backend.

#include <bit>
#include <cstdint>

// Hand-written AVX2+FMA kernels (intrinsics in functions marked
// target("avx2,fma")) are compiled where MOSAIC_HAVE_AVX2_PATH is defined
// and taken at run time when have_avx2_fma().
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MOSAIC_HAVE_AVX2_PATH 1
#endif

namespace mosaic::cpu {

/// Marks a hot loop function for an AVX2+FMA clone next to the baseline
/// one; the loader picks the clone on CPUs that have it (GNU ifunc). Not
/// under ThreadSanitizer: the ifunc resolver is instrumented too and runs
/// during relocation, before TSan's runtime is up (a crash at load).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define MOSAIC_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MOSAIC_CPU_CLONES
#endif

/// Whether this CPU runs the AVX2+FMA kernels.
inline bool have_avx2_fma() {
#ifdef MOSAIC_HAVE_AVX2_PATH
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

/// e^x for f32 within ~2 ulp on [-87.3, 88.3] (Cephes polynomial); below
/// that it returns exactly 0 (so masked scores of -inf vanish), above it
/// saturates at e^88.3.
inline float exp_f32(float x) {
  const float xc = x > 88.3f ? 88.3f : (x < -87.3f ? -87.3f : x);
  // Round to nearest by adding 1.5 * 2^23 (exact for |v| < 2^22; the
  // compiler may not fold it without -ffast-math).
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  const float y = p * std::bit_cast<float>(bits);
  return x < -87.3f ? 0.0f : y;
}

} // namespace mosaic::cpu
