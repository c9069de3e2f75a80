#include "engine/cpu/cpu_backend.hpp"

#include <algorithm>
#include <cblas.h>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>

#include "engine/cpu/attention_ops.hpp"
#include "engine/cpu/blas_threads.hpp"
#include "engine/cpu/elementwise_ops.hpp"
#include "engine/cpu/small_gemm.hpp"
#include "engine/cpu/thread_pool.hpp"

namespace mosaic {

namespace {

constexpr size_t alignment = 64;

class cpu_backend final : public backend {
public:
  explicit cpu_backend(int threads) : pool_(threads) { cpu::blas_register_pool(pool_.size()); }

  std::string_view name() const noexcept override { return "cpu"; }
  bool supports_op(op_kind) const noexcept override { return true; }

  // -- memory -----------------------------------------------------------------

  result<device_buffer> allocate(size_t bytes) override {
    // aligned_alloc wants a multiple of the alignment; 0 bytes still gets a
    // distinct pointer so that every buffer is non-null.
    const size_t rounded = std::max(alignment, (bytes + alignment - 1) / alignment * alignment);
    if (rounded < bytes)
      return make_error(errc::out_of_memory, "cpu backend: cannot allocate ", std::to_string(bytes),
                        " bytes (size overflows)");
    void* ptr = std::aligned_alloc(alignment, rounded);
    if (ptr == nullptr)
      return make_error(errc::out_of_memory, "cpu backend: cannot allocate ", std::to_string(bytes),
                        " bytes of host memory; lower the KV pool size or the batch size");
    return device_buffer{this, ptr, bytes};
  }

  status upload(void* dst, const void* src, size_t bytes) override {
    return move_bytes("upload", dst, src, bytes);
  }
  status download(void* dst, const void* src, size_t bytes) override {
    return move_bytes("download", dst, src, bytes);
  }
  status copy(void* dst, const void* src, size_t bytes) override {
    return move_bytes("copy", dst, src, bytes);
  }
  status synchronize() override { return {}; }

  // -- linear algebra ---------------------------------------------------------

  void matmul(const float* a, const float* b, float* c, int m, int n, int k, bool trans_b,
              float alpha, float beta, int lda, int ldb, int ldc) override {
    if (m <= 0 || n <= 0)
      return;
    ldc = ldc > 0 ? ldc : n;
    if (k <= 0) {
      // An empty sum: OpenBLAS rejects lda = 0, the answer is beta * c.
      for (int i = 0; i < m; ++i) {
        float* row = c + static_cast<int64_t>(i) * ldc;
        for (int j = 0; j < n; ++j)
          row[j] = beta == 0.0f ? 0.0f : beta * row[j];
      }
      return;
    }
    lda = lda > 0 ? lda : k;
    ldb = ldb > 0 ? ldb : (trans_b ? k : n);
    if (trans_b && m <= small_m_rows_) { // a decode step's linear layers
      cpu::small_gemm_nt(pool_, a, lda, b, ldb, c, ldc, m, n, k, alpha, beta);
      return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a,
                lda, b, ldb, beta, c, ldc);
  }

  // -- element-wise -----------------------------------------------------------

  void add(const float* a, const float* b, float* out, size_t n) override {
    cpu::add(pool_, a, b, out, n);
  }
  void add_bias(float* x, const float* bias, int rows, int cols) override {
    cpu::add_bias(pool_, x, bias, rows, cols);
  }
  void scale(float* x, float s, size_t n) override { cpu::scale(pool_, x, s, n); }
  void gelu(float* x, size_t n) override { cpu::gelu(pool_, x, n); }
  void quick_gelu(float* x, size_t n) override { cpu::quick_gelu(pool_, x, n); }
  void silu_mul(const float* gate, const float* up, float* out, size_t n) override {
    cpu::silu_mul(pool_, gate, up, out, n);
  }

  // -- normalisation ----------------------------------------------------------

  void rms_norm(const float* x, const float* w, float* y, int rows, int dim, float eps) override {
    cpu::rms_norm(pool_, x, w, y, rows, dim, eps);
  }
  void layer_norm(const float* x, const float* w, const float* b, float* y, int rows, int dim,
                  float eps) override {
    cpu::layer_norm(pool_, x, w, b, y, rows, dim, eps);
  }

  // -- positions --------------------------------------------------------------

  void rope(float* x, const int32_t* pos, int rows, int n_heads, int head_dim, float theta,
            int stride) override {
    std::lock_guard guard{scratch_mtx_};
    cpu::rope(pool_, rope_table_, x, pos, rows, n_heads, head_dim, theta, stride);
  }
  void rope_sectioned(float* x, const int32_t* pos, int rows, int n_heads, int head_dim,
                      float theta, const rope_sections& sections, int stride,
                      int pos_stride) override {
    std::lock_guard guard{scratch_mtx_};
    cpu::rope_sectioned(pool_, rope_table_, x, pos, rows, n_heads, head_dim, theta, sections,
                        stride, pos_stride);
  }

  // -- attention --------------------------------------------------------------

  void attention(const attention_args& args) override {
    std::lock_guard guard{scratch_mtx_};
    // Pool threads call sgemm on their own tiles: OpenBLAS must not fan
    // out as well, or 2 x threads would fight for the cores. The setting
    // is process-wide; blas_threads.hpp arbitrates between backends.
    cpu::blas_single_threaded single;
    cpu::attention(pool_, workspace_, args);
  }
  void paged_attention(const paged_attention_args& args) override {
    cpu::paged_attention(pool_, args);
  }

  // -- data movement ----------------------------------------------------------

  void gather_rows(const float* src, const int32_t* idx, float* dst, int n, int row_len) override {
    cpu::gather_rows(pool_, src, idx, dst, n, row_len);
  }
  void scatter_rows(const float* src, const int32_t* idx, float* dst, int n, int row_len) override {
    cpu::scatter_rows(pool_, src, idx, dst, n, row_len);
  }
  void row_sq_diff(const float* a, const float* b, float* out, int rows, int cols) override {
    cpu::row_sq_diff(pool_, a, b, out, rows, cols);
  }
  void im2col_patches(const float* img, float* out, int channels, int height, int width,
                      int patch) override {
    cpu::im2col_patches(pool_, img, out, channels, height, width, patch);
  }

protected:
  void release(void* ptr, size_t) noexcept override { std::free(ptr); }

private:
  static status move_bytes(const char* what, void* dst, const void* src, size_t bytes) {
    if (bytes == 0)
      return {};
    if (dst == nullptr || src == nullptr)
      return make_error(errc::invalid_argument, "cpu backend: ", what, " of ",
                        std::to_string(bytes), " bytes with a null pointer");
    std::memmove(dst, src, bytes);
    return {};
  }

  cpu::thread_pool pool_;
  /// Rows up to which matmul takes cpu::small_gemm_nt (MOSAIC_SMALL_GEMM_ROWS
  /// overrides it, 0 = never, for benchmarks against OpenBLAS).
  const int small_m_rows_ = [] {
    const char* env = std::getenv("MOSAIC_SMALL_GEMM_ROWS");
    return env != nullptr ? std::atoi(env) : cpu::small_gemm_max_rows;
  }();
  std::mutex scratch_mtx_; ///< guards the two below should two threads share a backend
  /// MOSAIC_ATTENTION_TILES=0 runs attention's tiles on sgemm instead of
  /// the register-tile kernels (for benchmarks against OpenBLAS).
  cpu::attention_workspace workspace_ = [] {
    cpu::attention_workspace ws;
    const char* env = std::getenv("MOSAIC_ATTENTION_TILES");
    ws.tile_kernels = env == nullptr || std::string_view{env} != "0";
    return ws;
  }();
  cpu::rope_table rope_table_;
};

} // namespace

std::unique_ptr<backend> make_cpu_backend(int threads) {
  return std::make_unique<cpu_backend>(threads);
}

} // namespace mosaic
