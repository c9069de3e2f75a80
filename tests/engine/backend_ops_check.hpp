#pragma once

// Backend-ops checks (llama.cpp's test-backend-ops): every op of a
// mosaic::backend against the naive double-precision references of
// backend_ops_reference.hpp, on fresh random inputs over shapes that hit the
// edges (n = 1, odd sizes, GQA ratios 1/2/4, strided rows, query rows at any
// subset of positions, unsorted keys, the paged pool's block tables).
//
// Any backend plugs in: `run_op_checks(backend)` runs every op it supports,
// or run one entry of `op_checks()` per test. Failures are gtest failures;
// the seed is in the trace so a failure can be replayed.
//
// Error measure and stated tolerances: backend_ops_check_util.hpp
// (1e-5 element-wise, 1e-4 for matmul and attention).

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/backend.hpp"
#include "tests/engine/backend_ops_check_attention.hpp"
#include "tests/engine/backend_ops_check_util.hpp"
#include "tests/engine/backend_ops_reference.hpp"

namespace mosaic::testing {

// -- linear algebra -------------------------------------------------------------

inline void check_matmul(backend& be, std::mt19937& rng) {
  struct shape {
    int m, n, k;
  };
  // Up to 24 rows with trans_b the CPU backend takes its own kernel
  // (cpu/small_gemm.hpp): 3-column and 4-row tiles with tails, k not a
  // multiple of 8, columns split over threads.
  for (auto [m, n, k] :
       {shape{1, 1, 1}, shape{1, 17, 9}, shape{7, 13, 5}, shape{33, 17, 65}, shape{64, 96, 128},
        shape{5, 3, 0}, shape{4, 1000, 515}, shape{24, 131, 64}, shape{25, 50, 33}, shape{2, 7, 8}})
    for (bool trans_b : {false, true})
      for (bool padded : {false, true}) {
        const float alpha = padded ? 0.5f : 1.0f;
        const float beta = padded ? 2.0f : 0.0f;
        const int lda = std::max(k, 1) + (padded ? 3 : 0);
        const int ldb = (trans_b ? std::max(k, 1) : n) + (padded ? 2 : 0);
        const int ldc = n + (padded ? 5 : 0);
        auto a = random_vec(rng, static_cast<size_t>(m) * lda);
        auto b = random_vec(rng, static_cast<size_t>(trans_b ? n : std::max(k, 1)) * ldb);
        auto c = random_vec(rng, static_cast<size_t>(m) * ldc);
        auto da = to_device(be, a);
        auto db = to_device(be, b);
        auto dc = to_device(be, c);
        be.matmul(da.f32(), db.f32(), dc.f32(), m, n, k, trans_b, alpha, beta, padded ? lda : 0,
                  padded ? ldb : 0, padded ? ldc : 0);
        ref::matmul(a, b, c, m, n, k, trans_b, alpha, beta, lda, ldb, ldc);
        expect_close(to_host(be, dc, c.size()), c, gemm_tolerance,
                     "matmul m=" + std::to_string(m) + " n=" + std::to_string(n) +
                         " k=" + std::to_string(k) + " trans_b=" + std::to_string(trans_b) +
                         " padded=" + std::to_string(padded));
      }
}

// -- element-wise -----------------------------------------------------------------

inline const std::vector<size_t>& elementwise_sizes() {
  static const std::vector<size_t> sizes{1, 7, 1000, 100003};
  return sizes;
}

inline void check_add(backend& be, std::mt19937& rng) {
  for (size_t n : elementwise_sizes())
    for (bool in_place : {false, true}) {
      auto a = random_vec(rng, n);
      auto b = random_vec(rng, n);
      auto da = to_device(be, a);
      auto db = to_device(be, b);
      auto dout = to_device(be, vec(n));
      float* out = in_place ? da.f32() : dout.f32();
      be.add(da.f32(), db.f32(), out, n);
      vec want(n);
      for (size_t i = 0; i < n; ++i)
        want[i] = a[i] + b[i];
      expect_close(to_host(be, in_place ? da : dout, n), want, elementwise_tolerance,
                   "add n=" + std::to_string(n) + " in_place=" + std::to_string(in_place));
    }
}

inline void check_add_bias(backend& be, std::mt19937& rng) {
  for (auto [rows, cols] : {std::pair{1, 1}, std::pair{3, 7}, std::pair{17, 130}, {300, 513}}) {
    auto x = random_vec(rng, static_cast<size_t>(rows) * cols);
    auto bias = random_vec(rng, static_cast<size_t>(cols));
    auto dx = to_device(be, x);
    auto dbias = to_device(be, bias);
    be.add_bias(dx.f32(), dbias.f32(), rows, cols);
    for (size_t i = 0; i < x.size(); ++i)
      x[i] += bias[i % static_cast<size_t>(cols)];
    expect_close(to_host(be, dx, x.size()), x, elementwise_tolerance,
                 "add_bias " + std::to_string(rows) + "x" + std::to_string(cols));
  }
}

inline void check_scale(backend& be, std::mt19937& rng) {
  for (size_t n : elementwise_sizes()) {
    auto x = random_vec(rng, n);
    const float s = random_vec(rng, 1, -3.0f, 3.0f)[0];
    auto dx = to_device(be, x);
    be.scale(dx.f32(), s, n);
    for (auto& v : x)
      v *= s;
    expect_close(to_host(be, dx, n), x, elementwise_tolerance, "scale n=" + std::to_string(n));
  }
}

/// Checks an in-place unary activation against `f` on [lo, hi] plus the
/// extremes where exp over/underflows.
template <class Op, class Ref>
void check_unary(backend& be, std::mt19937& rng, const char* name, Op op, Ref f, float lo,
                 float hi) {
  for (size_t n : elementwise_sizes()) {
    auto x = random_vec(rng, n, lo, hi);
    if (n >= 4) {
      x[0] = -100.0f;
      x[1] = 100.0f;
      x[2] = 0.0f;
      x[3] = -1e-6f;
    }
    auto dx = to_device(be, x);
    op(be, dx.f32(), n);
    vec want(n);
    for (size_t i = 0; i < n; ++i)
      want[i] = static_cast<float>(f(static_cast<double>(x[i])));
    expect_close(to_host(be, dx, n), want, elementwise_tolerance,
                 std::string{name} + " n=" + std::to_string(n));
  }
}

inline void check_gelu(backend& be, std::mt19937& rng) {
  check_unary(
      be, rng, "gelu", [](backend& b, float* x, size_t n) { b.gelu(x, n); }, ref::gelu, -6.0f,
      6.0f);
}

inline void check_quick_gelu(backend& be, std::mt19937& rng) {
  check_unary(
      be, rng, "quick_gelu", [](backend& b, float* x, size_t n) { b.quick_gelu(x, n); },
      ref::quick_gelu, -10.0f, 10.0f);
}

inline void check_silu_mul(backend& be, std::mt19937& rng) {
  for (size_t n : elementwise_sizes())
    for (bool in_place : {false, true}) {
      auto gate = random_vec(rng, n, -10.0f, 10.0f);
      auto up = random_vec(rng, n, -2.0f, 2.0f);
      auto dgate = to_device(be, gate);
      auto dup = to_device(be, up);
      auto dout = to_device(be, vec(n));
      float* out = in_place ? dgate.f32() : dout.f32();
      be.silu_mul(dgate.f32(), dup.f32(), out, n);
      vec want(n);
      for (size_t i = 0; i < n; ++i)
        want[i] = static_cast<float>(ref::silu(gate[i]) * up[i]);
      expect_close(to_host(be, in_place ? dgate : dout, n), want, elementwise_tolerance,
                   "silu_mul n=" + std::to_string(n) + " in_place=" + std::to_string(in_place));
    }
}

// -- normalisation ------------------------------------------------------------------

inline void check_rms_norm(backend& be, std::mt19937& rng) {
  for (auto [rows, dim] : {std::pair{1, 1}, std::pair{3, 7}, std::pair{17, 64}, {5, 4096}})
    for (bool in_place : {false, true}) {
      auto x = random_vec(rng, static_cast<size_t>(rows) * dim, -3.0f, 3.0f);
      auto w = random_vec(rng, static_cast<size_t>(dim), 0.5f, 1.5f);
      const float eps = in_place ? 1e-5f : 1e-6f;
      auto dx = to_device(be, x);
      auto dw = to_device(be, w);
      auto dy = to_device(be, vec(x.size()));
      float* y = in_place ? dx.f32() : dy.f32();
      be.rms_norm(dx.f32(), dw.f32(), y, rows, dim, eps);
      expect_close(to_host(be, in_place ? dx : dy, x.size()), ref::rms_norm(x, w, rows, dim, eps),
                   elementwise_tolerance,
                   "rms_norm " + std::to_string(rows) + "x" + std::to_string(dim));
    }
}

inline void check_layer_norm(backend& be, std::mt19937& rng) {
  for (auto [rows, dim] : {std::pair{1, 2}, std::pair{3, 7}, std::pair{17, 64}, {5, 4096}})
    for (bool in_place : {false, true}) {
      // An offset mean makes a one-pass variance formula visibly wrong; each
      // row holds 2 and 4 so that its spread keeps f32 well-conditioned
      // (x - mean of two nearly equal values would lose digits in any f32
      // implementation).
      auto x = random_vec(rng, static_cast<size_t>(rows) * dim, 2.0f, 4.0f);
      for (int r = 0; r < rows; ++r) {
        x[static_cast<size_t>(r) * dim] = 2.0f;
        x[static_cast<size_t>(r) * dim + 1] = 4.0f;
      }
      auto w = random_vec(rng, static_cast<size_t>(dim), 0.5f, 1.5f);
      auto b = random_vec(rng, static_cast<size_t>(dim));
      auto dx = to_device(be, x);
      auto dw = to_device(be, w);
      auto db = to_device(be, b);
      auto dy = to_device(be, vec(x.size()));
      float* y = in_place ? dx.f32() : dy.f32();
      be.layer_norm(dx.f32(), dw.f32(), db.f32(), y, rows, dim, 1e-5f);
      expect_close(to_host(be, in_place ? dx : dy, x.size()),
                   ref::layer_norm(x, w, b, rows, dim, 1e-5f), elementwise_tolerance,
                   "layer_norm " + std::to_string(rows) + "x" + std::to_string(dim));
    }
}

// -- positions ------------------------------------------------------------------------

inline void check_rope(backend& be, std::mt19937& rng) {
  struct rope_case {
    int rows, n_heads, head_dim;
    float theta;
    int extra; // floats past the heads in each row (0 = natural stride)
    int max_pos;
  };
  for (auto c : {rope_case{1, 1, 2, 10000.0f, 0, 1}, rope_case{5, 3, 8, 10000.0f, 0, 100},
                 rope_case{7, 2, 64, 10000.0f, 24, 32767}, rope_case{4, 4, 128, 1e6f, 0, 32767},
                 rope_case{9, 1, 64, 500000.0f, 128, 4096}}) {
    const int stride = c.n_heads * c.head_dim + c.extra;
    auto x = random_vec(rng, static_cast<size_t>(c.rows) * stride);
    ivec pos(static_cast<size_t>(c.rows));
    for (auto& p : pos)
      p = random_int(rng, 0, c.max_pos);
    pos.back() = c.max_pos;
    auto dx = to_device(be, x);
    auto dpos = to_device(be, pos);
    be.rope(dx.f32(), dpos.i32(), c.rows, c.n_heads, c.head_dim, c.theta, c.extra > 0 ? stride : 0);
    ref::rope(x, pos, c.rows, c.n_heads, c.head_dim, c.theta, stride);
    expect_close(to_host(be, dx, x.size()), x, elementwise_tolerance,
                 "rope rows=" + std::to_string(c.rows) + " heads=" + std::to_string(c.n_heads) +
                     " head_dim=" + std::to_string(c.head_dim) +
                     " max_pos=" + std::to_string(c.max_pos));
  }
  // Consecutive calls that share positions (q then k) and calls that
  // change them in place or change theta: a backend that caches its
  // sines must notice each change.
  const int rows = 6;
  const int heads = 2;
  const int head_dim = 16;
  ivec pos(static_cast<size_t>(rows));
  for (auto& p : pos)
    p = random_int(rng, 0, 5000);
  auto dpos = to_device(be, pos);
  for (int step = 0; step < 4; ++step) {
    if (step == 2) { // same buffer, new content
      for (auto& p : pos)
        p = random_int(rng, 0, 5000);
      if (auto st = be.upload(dpos.data(), pos.data(), pos.size() * sizeof(int32_t)); !st)
        throw std::runtime_error("upload: " + st.err().to_string());
    }
    const float theta = step == 3 ? 1e6f : 10000.0f;
    auto x = random_vec(rng, static_cast<size_t>(rows) * heads * head_dim);
    auto dx = to_device(be, x);
    be.rope(dx.f32(), dpos.i32(), rows, heads, head_dim, theta);
    ref::rope(x, pos, rows, heads, head_dim, theta, heads * head_dim);
    expect_close(to_host(be, dx, x.size()), x, elementwise_tolerance,
                 "rope repeated call, step " + std::to_string(step));
  }
}

inline void check_rope_sectioned(backend& be, std::mt19937& rng) {
  struct sectioned_case {
    int rows, n_heads, head_dim;
    rope_sections sections;
    float theta;
    int extra;
  };
  // Qwen2-VL's M-RoPE (16/24/24 of a 128-wide head; 2/3/3 of 16), its
  // vision tower's 2-D RoPE (two restarting halves), and one section
  // (= rope).
  for (auto c : {sectioned_case{7, 4, 128, {{16, 24, 24}, false}, 1e6f, 0},
                 sectioned_case{5, 2, 16, {{2, 3, 3}, false}, 1e6f, 8},
                 sectioned_case{9, 3, 80, {{20, 20, 0}, true}, 10000.0f, 0},
                 sectioned_case{3, 2, 64, {{32, 0, 0}, false}, 10000.0f, 0}}) {
    const int stride = c.n_heads * c.head_dim + c.extra;
    auto x = random_vec(rng, static_cast<size_t>(c.rows) * stride);
    ivec pos(static_cast<size_t>(c.rows) * c.sections.components());
    for (auto& p : pos)
      p = random_int(rng, 0, 30000);
    auto dx = to_device(be, x);
    auto dpos = to_device(be, pos);
    auto plain = x;
    be.rope_sectioned(dx.f32(), dpos.i32(), c.rows, c.n_heads, c.head_dim, c.theta, c.sections,
                      c.extra > 0 ? stride : 0);
    ref::rope_sectioned(x, pos, c.rows, c.n_heads, c.head_dim, c.theta, c.sections, stride);
    const std::string what = "rope_sectioned head_dim=" + std::to_string(c.head_dim) +
                             " sections=" + std::to_string(c.sections.size[0]) + "/" +
                             std::to_string(c.sections.size[1]) + "/" +
                             std::to_string(c.sections.size[2]) +
                             (c.sections.restart ? " restart" : "");
    expect_close(to_host(be, dx, x.size()), x, elementwise_tolerance, what);
    if (c.sections.components() == 1) { // one section is plain rope
      ref::rope(plain, pos, c.rows, c.n_heads, c.head_dim, c.theta, stride);
      expect_close(x, plain, elementwise_tolerance, what + " vs rope");
    }
  }
  // rope then rope_sectioned on the same positions buffer: a backend
  // that caches its sines must key them by the sections too.
  const int rows = 4;
  ivec pos(static_cast<size_t>(rows) * 3);
  for (auto& p : pos)
    p = random_int(rng, 0, 500);
  auto dpos = to_device(be, pos);
  auto x = random_vec(rng, static_cast<size_t>(rows) * 16);
  auto dx = to_device(be, x);
  be.rope(dx.f32(), dpos.i32(), rows, 1, 16, 1e6f);
  ref::rope(x, ivec(pos.begin(), pos.begin() + rows), rows, 1, 16, 1e6f, 16);
  const rope_sections mrope{{2, 3, 3}, false};
  be.rope_sectioned(dx.f32(), dpos.i32(), rows, 1, 16, 1e6f, mrope);
  ref::rope_sectioned(x, pos, rows, 1, 16, 1e6f, mrope, 16);
  expect_close(to_host(be, dx, x.size()), x, elementwise_tolerance, "rope then rope_sectioned");
  // Components pos_stride apart (a plan's [3, n] positions, rows of it).
  const int pos_stride = rows + 3;
  ivec wide(static_cast<size_t>(pos_stride) * 3);
  for (auto& p : wide)
    p = random_int(rng, 0, 500);
  ivec packed;
  for (int c = 0; c < 3; ++c)
    packed.insert(packed.end(), wide.begin() + c * pos_stride,
                  wide.begin() + c * pos_stride + rows);
  auto dwide = to_device(be, wide);
  be.rope_sectioned(dx.f32(), dwide.i32(), rows, 1, 16, 1e6f, mrope, 0, pos_stride);
  ref::rope_sectioned(x, packed, rows, 1, 16, 1e6f, mrope, 16);
  expect_close(to_host(be, dx, x.size()), x, elementwise_tolerance, "rope_sectioned pos_stride");
}

// -- data movement ------------------------------------------------------------------

inline void check_gather_rows(backend& be, std::mt19937& rng) {
  for (int row_len : {1, 7, 256})
    for (int n : {1, 30}) {
      const int src_rows = 50;
      auto src = random_vec(rng, static_cast<size_t>(src_rows) * row_len);
      ivec idx(static_cast<size_t>(n));
      for (auto& i : idx)
        i = random_int(rng, 0, src_rows - 1); // repeats allowed
      auto dsrc = to_device(be, src);
      auto didx = to_device(be, idx);
      auto ddst = to_device(be, vec(static_cast<size_t>(n) * row_len));
      be.gather_rows(dsrc.f32(), didx.i32(), ddst.f32(), n, row_len);
      vec want;
      for (int i : idx)
        want.insert(want.end(), src.begin() + static_cast<ptrdiff_t>(i) * row_len,
                    src.begin() + static_cast<ptrdiff_t>(i + 1) * row_len);
      EXPECT_EQ(to_host(be, ddst, want.size()), want) << "gather_rows n=" << n;
    }
}

inline void check_scatter_rows(backend& be, std::mt19937& rng) {
  for (int row_len : {1, 7, 256})
    for (int n : {1, 20}) {
      const int dst_rows = 50;
      auto src = random_vec(rng, static_cast<size_t>(n) * row_len);
      auto dst = random_vec(rng, static_cast<size_t>(dst_rows) * row_len);
      ivec perm(static_cast<size_t>(dst_rows));
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      ivec idx(perm.begin(), perm.begin() + n); // distinct targets
      auto dsrc = to_device(be, src);
      auto didx = to_device(be, idx);
      auto ddst = to_device(be, dst);
      be.scatter_rows(dsrc.f32(), didx.i32(), ddst.f32(), n, row_len);
      for (int i = 0; i < n; ++i)
        std::copy_n(src.begin() + static_cast<ptrdiff_t>(i) * row_len, row_len,
                    dst.begin() + static_cast<ptrdiff_t>(idx[static_cast<size_t>(i)]) * row_len);
      EXPECT_EQ(to_host(be, ddst, dst.size()), dst) << "scatter_rows n=" << n;
    }
}

inline void check_row_sq_diff(backend& be, std::mt19937& rng) {
  for (auto [rows, cols] : {std::pair{1, 1}, std::pair{5, 7}, std::pair{33, 4096}}) {
    auto a = random_vec(rng, static_cast<size_t>(rows) * cols);
    auto b = random_vec(rng, a.size());
    auto da = to_device(be, a);
    auto db = to_device(be, b);
    auto dout = to_device(be, vec(static_cast<size_t>(rows)));
    be.row_sq_diff(da.f32(), db.f32(), dout.f32(), rows, cols);
    vec want(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) {
      double s = 0.0;
      for (int c = 0; c < cols; ++c) {
        const double d = static_cast<double>(a[static_cast<size_t>(r) * cols + c]) -
                         b[static_cast<size_t>(r) * cols + c];
        s += d * d;
      }
      want[static_cast<size_t>(r)] = static_cast<float>(s);
    }
    expect_close(to_host(be, dout, want.size()), want, elementwise_tolerance,
                 "row_sq_diff " + std::to_string(rows) + "x" + std::to_string(cols));
  }
}

inline void check_im2col_patches(backend& be, std::mt19937& rng) {
  struct image_case {
    int channels, height, width, patch;
  };
  for (auto c : {image_case{3, 12, 12, 4}, image_case{3, 14, 10, 4}, image_case{1, 4, 4, 4},
                 image_case{2, 9, 15, 3}}) {
    auto img = random_vec(rng, static_cast<size_t>(c.channels) * c.height * c.width);
    auto want = ref::im2col_patches(img, c.channels, c.height, c.width, c.patch);
    auto dimg = to_device(be, img);
    auto dout = to_device(be, vec(want.size()));
    be.im2col_patches(dimg.f32(), dout.f32(), c.channels, c.height, c.width, c.patch);
    EXPECT_EQ(to_host(be, dout, want.size()), want)
        << "im2col_patches " << c.channels << "x" << c.height << "x" << c.width << " patch "
        << c.patch;
  }
}

// -- registry -----------------------------------------------------------------------

/// One op's check.
struct op_check {
  op_kind op;
  const char* name;
  void (*run)(backend&, std::mt19937&);
};

/// Prints a check by its op's name (gtest parameter names and messages).
inline void PrintTo(const op_check& check, std::ostream* os) {
  *os << check.name;
}

/// Every op of the interface, in op_kind order.
inline const std::vector<op_check>& op_checks() {
  static const std::vector<op_check> checks{
      {op_kind::matmul, "matmul", check_matmul},
      {op_kind::add, "add", check_add},
      {op_kind::add_bias, "add_bias", check_add_bias},
      {op_kind::scale, "scale", check_scale},
      {op_kind::rms_norm, "rms_norm", check_rms_norm},
      {op_kind::layer_norm, "layer_norm", check_layer_norm},
      {op_kind::rope, "rope", check_rope},
      {op_kind::rope_sectioned, "rope_sectioned", check_rope_sectioned},
      {op_kind::gelu, "gelu", check_gelu},
      {op_kind::quick_gelu, "quick_gelu", check_quick_gelu},
      {op_kind::silu_mul, "silu_mul", check_silu_mul},
      {op_kind::attention, "attention", check_attention},
      {op_kind::paged_attention, "paged_attention", check_paged_attention},
      {op_kind::gather_rows, "gather_rows", check_gather_rows},
      {op_kind::scatter_rows, "scatter_rows", check_scatter_rows},
      {op_kind::row_sq_diff, "row_sq_diff", check_row_sq_diff},
      {op_kind::im2col_patches, "im2col_patches", check_im2col_patches},
  };
  return checks;
}

/// Runs one check with a fresh seed (in the trace of any failure).
inline void run_op_check(backend& candidate, const op_check& check) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(std::string{candidate.name()} + " " + check.name + " seed=" + std::to_string(seed));
  std::mt19937 rng{seed};
  try {
    check.run(candidate, rng);
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
}

/// Runs the check of every op `candidate` supports.
inline void run_op_checks(backend& candidate) {
  for (const auto& check : op_checks())
    if (candidate.supports_op(check.op))
      run_op_check(candidate, check);
}

} // namespace mosaic::testing
