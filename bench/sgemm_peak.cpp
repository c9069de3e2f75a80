#include "bench/sgemm_peak.hpp"

#include <algorithm>
#include <cblas.h>
#include <chrono>
#include <vector>

namespace mosaic::bench {

double measure_sgemm_peak_gflops(int size, int runs) {
  const size_t n = static_cast<size_t>(size) * size;
  std::vector<float> a(n, 0.5f);
  std::vector<float> b(n, 0.25f);
  std::vector<float> c(n, 0.0f);
  const double flops = 2.0 * size * static_cast<double>(size) * size;
  double best = 0.0;
  // One untimed run warms the caches and OpenBLAS's threads.
  for (int r = 0; r <= runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, size, size, size, 1.0f, a.data(), size,
                b.data(), size, 0.0f, c.data(), size);
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    if (r > 0)
      best = std::max(best, flops / dt.count() * 1e-9);
  }
  return best;
}

} // namespace mosaic::bench
