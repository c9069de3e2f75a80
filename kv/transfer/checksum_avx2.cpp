#include "kv/transfer/checksum_avx2.hpp"

#include <algorithm>
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
// Header-only xxHash (static, XXH_INLINE_-prefixed symbols) built with
// AVX2 accumulators; the shared libxxhash is built for baseline x86-64
// (SSE2), which perf showed at half the speed.
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>
#endif

namespace mosaic::kv::transfer::avx2 {

#if defined(__AVX2__)

bool built() noexcept {
  return true;
}

uint64_t xxh3(const void* data, size_t n) noexcept {
  return XXH3_64bits(data, n);
}

namespace {

/// Copies `n` bytes (a multiple of 128) to a 32-byte aligned `dst` with
/// streaming stores.
void stream_copy(std::byte* dst, const std::byte* src, size_t n) noexcept {
  for (size_t i = 0; i < n; i += 128) {
    const auto* s = reinterpret_cast<const __m256i*>(src + i);
    auto* d = reinterpret_cast<__m256i*>(dst + i);
    __m256i a = _mm256_loadu_si256(s), b = _mm256_loadu_si256(s + 1);
    __m256i c = _mm256_loadu_si256(s + 2), e = _mm256_loadu_si256(s + 3);
    _mm256_stream_si256(d, a);
    _mm256_stream_si256(d + 1, b);
    _mm256_stream_si256(d + 2, c);
    _mm256_stream_si256(d + 3, e);
  }
}

} // namespace

uint64_t copy_and_xxh3(std::byte* dst, const std::byte* src, size_t n, bool stream) noexcept {
  constexpr size_t block = size_t(16) << 10;
  if (n <= block) {
    if (n != 0) // memcpy with a null pointer is undefined even for 0 bytes (UBSan)
      std::memcpy(dst, src, n);
    return XXH3_64bits(dst, n);
  }
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  if (!stream) {
    for (size_t off = 0; off < n; off += block) {
      const size_t m = std::min(block, n - off);
      std::memcpy(dst + off, src + off, m);
      XXH3_64bits_update(&state, dst + off, m);
    }
    return XXH3_64bits_digest(&state);
  }
  // Head: plain stores up to a 32-byte boundary of `dst`.
  size_t head = std::min(n, size_t((32 - reinterpret_cast<uintptr_t>(dst) % 32) % 32));
  std::memcpy(dst, src, head);
  XXH3_64bits_update(&state, src, head);
  size_t off = head;
  while (n - off >= 128) {
    const size_t m = std::min(block, (n - off) / 128 * 128);
    XXH3_64bits_update(&state, src + off, m); // brings the block into L1; the copy reads it there
    stream_copy(dst + off, src + off, m);
    off += m;
  }
  std::memcpy(dst + off, src + off, n - off);
  XXH3_64bits_update(&state, src + off, n - off);
  _mm_sfence();
  return XXH3_64bits_digest(&state);
}

#else

bool built() noexcept {
  return false;
}
uint64_t xxh3(const void*, size_t) noexcept {
  return 0;
}
uint64_t copy_and_xxh3(std::byte*, const std::byte*, size_t, bool) noexcept {
  return 0;
}

#endif

} // namespace mosaic::kv::transfer::avx2
