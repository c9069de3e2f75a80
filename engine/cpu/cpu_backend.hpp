#pragma once

// The CPU backend: OpenBLAS sgemm for matrix products, vectorised loops for
// the rest, a thread pool sized to the machine.

#include <memory>

#include "engine/backend.hpp"

namespace mosaic {

/// Creates the CPU backend with `threads` workers (0 = every core).
std::unique_ptr<backend> make_cpu_backend(int threads = 0);

} // namespace mosaic
