#pragma once

// AVX2 builds of the data plane's two byte loops (kv/transfer/wire.hpp
// picks them at run time when the CPU has AVX2). Declared here, defined
// in checksum_avx2.cpp, the one file compiled with -mavx2: call them only
// where __builtin_cpu_supports("avx2").

#include <cstddef>
#include <cstdint>

namespace mosaic::kv::transfer::avx2 {

/// True when this build has the AVX2 versions (x86-64 with GCC or Clang).
bool built() noexcept;
/// XXH3-64 of [data, data + n) with AVX2 accumulators (same value as the
/// scalar or SSE2 code: XXH3 is defined by its output, not its vectors).
uint64_t xxh3(const void* data, size_t n) noexcept;
/// Copies `n` bytes from `src` to `dst` 16 KiB at a time, hashing each
/// block while it is in L1; returns XXH3-64 of the bytes. With `stream`,
/// the source block is hashed and then written with non-temporal stores
/// (no read for ownership of the destination, no eviction of the
/// cache-hot source), and a store fence ends the copy so that a lock
/// released afterwards publishes the bytes; without it, the block is
/// copied with memcpy and hashed in the destination.
uint64_t copy_and_xxh3(std::byte* dst, const std::byte* src, size_t n, bool stream) noexcept;

} // namespace mosaic::kv::transfer::avx2
