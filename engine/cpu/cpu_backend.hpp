#pragma once

// The CPU backend: OpenBLAS sgemm for matrix products and attention,
// vectorised loops on a thread pool sized to the machine for the rest.
//
// Threads: the backend's pool and OpenBLAS each get `threads` threads, but
// they never run at the same time: matmul calls sgemm from the calling
// thread (OpenBLAS then fans out on its own threads); every other op runs
// on the pool. Attention runs its tiles' sgemms on the pool threads, with
// OpenBLAS switched to one thread for the duration. The OpenBLAS thread
// count is process-wide: the last backend created (or running attention)
// sets it, so backends in one process should share a thread count.
//
// A cpu backend is used by one thread at a time, like a CUDA stream.

#include <memory>

#include "engine/backend.hpp"

namespace mosaic {

/// Creates the CPU backend with `threads` workers (0 = every core).
std::unique_ptr<backend> make_cpu_backend(int threads = 0);

} // namespace mosaic
