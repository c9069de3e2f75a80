#pragma once

// The yardstick of the CPU benchmarks: what OpenBLAS sgemm reaches on this
// machine, measured in the same process as the numbers compared with it.

namespace mosaic::bench {

/// Best-of-`runs` GFLOP/s of an OpenBLAS sgemm of `size`^3 (row-major,
/// C = A B) with OpenBLAS's current thread count.
double measure_sgemm_peak_gflops(int size = 2048, int runs = 5);

} // namespace mosaic::bench
