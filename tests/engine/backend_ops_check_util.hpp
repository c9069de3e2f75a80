#pragma once

// Helpers of the backend-ops checks (backend_ops_check.hpp): the error
// measure and its stated tolerances, host <-> backend copies, random data.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/backend.hpp"
#include "tests/engine/backend_ops_reference.hpp"

namespace mosaic::testing {

/// Tolerance of element-wise, normalisation, RoPE and reduction ops.
inline constexpr double elementwise_tolerance = 1e-5;
/// Tolerance of matmul, attention and paged attention (f32 accumulation).
inline constexpr double gemm_tolerance = 1e-4;

using ref::ivec;
using ref::vec;

// -- helpers --------------------------------------------------------------------

/// err = max_i |got_i - want_i| / (|want_i| + rms(want)): relative for
/// large entries, relative to the tensor's scale for entries near zero
/// (where f32 cancellation in an op's own formula is not the backend's
/// fault). A NaN or Inf in `got` is an infinite error.
inline double rel_error(const vec& got, const vec& want) {
  if (got.size() != want.size())
    return std::numeric_limits<double>::infinity();
  double sq = 0.0;
  for (float w : want)
    sq += static_cast<double>(w) * w;
  const double rms = want.empty() ? 0.0 : std::sqrt(sq / static_cast<double>(want.size()));
  double err = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::abs(static_cast<double>(got[i]) - want[i]);
    const double denom = std::abs(static_cast<double>(want[i])) + rms;
    if (std::isnan(got[i]) || std::isinf(got[i]))
      return std::numeric_limits<double>::infinity();
    err = std::max(err, denom > 0.0 ? d / denom : d);
  }
  return err;
}

/// Copies host data into a fresh buffer of `be`; throws (a test failure)
/// when the backend reports an error.
template <class T>
device_buffer to_device(backend& be, const std::vector<T>& host) {
  auto buf = be.allocate(std::max<size_t>(1, host.size()) * sizeof(T));
  if (!buf)
    throw std::runtime_error("allocate: " + buf.err().to_string());
  if (auto st = be.upload(buf->data(), host.data(), host.size() * sizeof(T)); !st)
    throw std::runtime_error("upload: " + st.err().to_string());
  return std::move(buf).value();
}

/// Waits for the backend, then copies `n` floats back to the host.
inline vec to_host(backend& be, const device_buffer& buf, size_t n) {
  if (auto st = be.synchronize(); !st)
    throw std::runtime_error("synchronize: " + st.err().to_string());
  vec host(n);
  if (auto st = be.download(host.data(), buf.data(), n * sizeof(float)); !st)
    throw std::runtime_error("download: " + st.err().to_string());
  return host;
}

inline vec random_vec(std::mt19937& rng, size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist{lo, hi};
  vec v(n);
  for (auto& x : v)
    x = dist(rng);
  return v;
}

inline int random_int(std::mt19937& rng, int lo, int hi) {
  return std::uniform_int_distribution<int>{lo, hi}(rng);
}

inline void expect_close(const vec& got, const vec& want, double tol, const std::string& what) {
  const double err = rel_error(got, want);
  EXPECT_LE(err, tol) << what << ": error " << err << " over " << want.size() << " values";
}

} // namespace mosaic::testing
