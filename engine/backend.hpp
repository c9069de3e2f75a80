#pragma once

// The one compute interface of the engine. The CPU backend (engine/cpu/)
// implements it with OpenBLAS and a thread pool; the CUDA backend (gpu/)
// implements it with cuBLAS and its own kernels. Every pointer an op takes
// is a *device* pointer of that backend (host memory for the CPU backend),
// obtained from `allocate`. All tensors are f32, row-major, contiguous
// unless a stride is given. Ops are enqueued in order; `synchronize` waits
// for all of them (the CPU backend runs them eagerly).
//
// Shape comments use the names of the op's integer arguments.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "engine/error.hpp"

namespace mosaic {

class backend;

/// Operations a backend may or may not support (llama.cpp's supports_op).
enum class op_kind : uint8_t {
  matmul,
  add,
  add_bias,
  scale,
  rms_norm,
  layer_norm,
  rope,
  rope_sectioned,
  gelu,
  quick_gelu,
  silu_mul,
  attention,
  paged_attention,
  gather_rows,
  scatter_rows,
  row_sq_diff,
  im2col_patches,
};

/// Owning handle to backend memory; frees it on destruction (RAII).
class device_buffer {
public:
  device_buffer() = default;
  device_buffer(backend* owner, void* ptr, size_t bytes) noexcept
    : owner_(owner), ptr_(ptr), bytes_(bytes) {}
  device_buffer(device_buffer&& other) noexcept { swap(other); }
  device_buffer& operator=(device_buffer&& other) noexcept {
    device_buffer tmp{std::move(other)};
    swap(tmp);
    return *this;
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer();

  void* data() const noexcept { return ptr_; }
  float* f32() const noexcept { return static_cast<float*>(ptr_); }
  int32_t* i32() const noexcept { return static_cast<int32_t*>(ptr_); }
  size_t bytes() const noexcept { return bytes_; }
  bool empty() const noexcept { return ptr_ == nullptr; }

private:
  void swap(device_buffer& other) noexcept {
    std::swap(owner_, other.owner_);
    std::swap(ptr_, other.ptr_);
    std::swap(bytes_, other.bytes_);
  }
  backend* owner_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

/// How a rotary embedding with several position components (Qwen2-VL's
/// M-RoPE and its vision tower's 2-D RoPE) shares out the head's
/// head_dim / 2 frequency pairs: the first size[0] pairs rotate by
/// component 0, the next size[1] by component 1, then size[2] by
/// component 2 (sizes sum to head_dim / 2; unused sections are 0).
struct rope_sections {
  std::array<int, 3> size{};
  /// false (the decoder's M-RoPE): pair i turns at theta^(-2i / head_dim),
  /// whatever its section. true (the vision tower's 2-D RoPE): each
  /// section has its own ladder, pair j of section s at
  /// theta^(-j / size[s]).
  bool restart = false;

  int components() const { return (size[0] > 0) + (size[1] > 0) + (size[2] > 0); }
  int pairs() const { return size[0] + size[1] + size[2]; }
  friend bool operator==(const rope_sections&, const rope_sections&) = default;
};

/// Parameters of an attention op over a KV view.
///
/// Query row i attends to key row j iff `!causal` or
/// `k_pos[j] <= q_pos[i]` (causality by absolute position, not by row
/// index, so that a link plan can compute any subset of rows).
/// Grouped-query: query head h reads kv head h / (n_heads / n_kv_heads).
struct attention_args {
  const float* q = nullptr;       // [nq, n_heads * head_dim], row stride q_stride
  const float* k = nullptr;       // [nk, n_kv_heads * head_dim], row stride kv_stride
  const float* v = nullptr;       // [nk, n_kv_heads * head_dim], row stride kv_stride
  float* out = nullptr;           // [nq, n_heads * head_dim], contiguous
  const int32_t* q_pos = nullptr; // [nq]  (may be null when !causal)
  const int32_t* k_pos = nullptr; // [nk]  (may be null when !causal)
  int nq = 0;
  int nk = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int q_stride = 0;  ///< elements between query rows; 0 = n_heads*head_dim
  int kv_stride = 0; ///< elements between key rows; 0 = n_kv_heads*head_dim
  float scale = 1.0f;
  bool causal = true;
};

/// Parameters of decode attention over the paged KV pool: one query row per
/// sequence, attending to every one of the sequence's `seq_lens[s]` slots.
struct paged_attention_args {
  const float* q = nullptr;      // [n_seqs, n_heads * head_dim]
  const float* k_pool = nullptr; // [n_blocks * block_size, n_kv_heads * head_dim] (one layer)
  const float* v_pool = nullptr; // [n_blocks * block_size, n_kv_heads * head_dim] (one layer)
  const int32_t* block_tables = nullptr; // [n_seqs, max_blocks_per_seq]
  const int32_t* seq_lens = nullptr;     // [n_seqs]
  float* out = nullptr;                  // [n_seqs, n_heads * head_dim]
  int n_seqs = 0;
  int max_blocks_per_seq = 0;
  int block_size = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 1.0f;
};

/// The compute interface. Errors from the device (CUDA status, OOM) come
/// back as values from `allocate`, the copies and `synchronize`; the ops
/// themselves assume valid arguments (callers validate shapes first).
class backend {
public:
  virtual ~backend() = default;

  /// "cpu", "cuda:0", ...
  virtual std::string_view name() const noexcept = 0;
  virtual bool supports_op(op_kind op) const noexcept = 0;

  // -- memory -----------------------------------------------------------------

  /// Allocates `bytes` of device memory, 64-byte aligned (at least).
  virtual result<device_buffer> allocate(size_t bytes) = 0;
  /// Host → device.
  virtual status upload(void* dst, const void* src, size_t bytes) = 0;
  /// Device → host.
  virtual status download(void* dst, const void* src, size_t bytes) = 0;
  /// Device → device.
  virtual status copy(void* dst, const void* src, size_t bytes) = 0;
  /// Waits for every enqueued op.
  virtual status synchronize() = 0;

  // -- linear algebra ---------------------------------------------------------

  /// c = alpha * a · op(b) + beta * c.
  /// a: [m, k]; b: [n, k] if trans_b (PyTorch Linear weight) else [k, n];
  /// c: [m, n]. Leading dimensions are the natural ones unless given (>0).
  virtual void matmul(const float* a, const float* b, float* c, int m, int n, int k, bool trans_b,
                      float alpha = 1.0f, float beta = 0.0f, int lda = 0, int ldb = 0,
                      int ldc = 0) = 0;

  // -- element-wise -----------------------------------------------------------

  /// out[i] = a[i] + b[i], i < n. out may alias a or b.
  virtual void add(const float* a, const float* b, float* out, size_t n) = 0;
  /// x[r, c] += bias[c]; x: [rows, cols].
  virtual void add_bias(float* x, const float* bias, int rows, int cols) = 0;
  /// x[i] *= s, i < n.
  virtual void scale(float* x, float s, size_t n) = 0;
  /// In place, GELU with erf (PyTorch "gelu").
  virtual void gelu(float* x, size_t n) = 0;
  /// In place, x * sigmoid(1.702 x) (CLIP "quick_gelu").
  virtual void quick_gelu(float* x, size_t n) = 0;
  /// out[i] = silu(gate[i]) * up[i] (Llama MLP). out may alias gate.
  virtual void silu_mul(const float* gate, const float* up, float* out, size_t n) = 0;

  // -- normalisation ----------------------------------------------------------

  /// y = x / rms(x) * w per row. x, y: [rows, dim]; w: [dim]. y may alias x.
  virtual void rms_norm(const float* x, const float* w, float* y, int rows, int dim, float eps) = 0;
  /// y = (x - mean) / std * w + b per row. x, y: [rows, dim]; w, b: [dim].
  virtual void layer_norm(const float* x, const float* w, const float* b, float* y, int rows,
                          int dim, float eps) = 0;

  // -- positions --------------------------------------------------------------

  /// In-place rotary embedding, HF Llama convention (rotate_half: element
  /// i pairs with i + head_dim/2), angle pos * theta^(-2i/head_dim).
  /// x: [rows, n_heads * head_dim] with row stride `stride` (0 = natural);
  /// pos: [rows]. Applying it with pos to a pre-RoPE key is how a cached
  /// key is placed at a new position.
  virtual void rope(float* x, const int32_t* pos, int rows, int n_heads, int head_dim, float theta,
                    int stride = 0) = 0;
  /// In-place rotary embedding with several position components, each
  /// turning its section of the frequency pairs (rotate_half pairing as
  /// `rope`). pos: component c of row r at pos[c * pos_stride + r]
  /// (pos_stride 0 = rows). With one section of head_dim / 2 pairs it is
  /// `rope`.
  virtual void rope_sectioned(float* x, const int32_t* pos, int rows, int n_heads, int head_dim,
                              float theta, const rope_sections& sections, int stride = 0,
                              int pos_stride = 0) = 0;

  // -- attention --------------------------------------------------------------

  virtual void attention(const attention_args& args) = 0;
  virtual void paged_attention(const paged_attention_args& args) = 0;

  // -- data movement ----------------------------------------------------------

  /// dst[i, :] = src[idx[i], :], i < n; rows of `row_len` floats.
  virtual void gather_rows(const float* src, const int32_t* idx, float* dst, int n,
                           int row_len) = 0;
  /// dst[idx[i], :] = src[i, :], i < n.
  virtual void scatter_rows(const float* src, const int32_t* idx, float* dst, int n,
                            int row_len) = 0;
  /// out[r] = sum_c (a[r, c] - b[r, c])^2; a, b: [rows, cols]; out: [rows].
  virtual void row_sq_diff(const float* a, const float* b, float* out, int rows, int cols) = 0;
  /// Unfolds a CHW image into patches for a conv-as-matmul patch embed:
  /// img: [channels, height, width]; out: [(height/patch) * (width/patch),
  /// channels * patch * patch], patch rows in raster order, each row laid
  /// out (channel, dy, dx) to match a PyTorch Conv2d weight flattened.
  virtual void im2col_patches(const float* img, float* out, int channels, int height, int width,
                              int patch) = 0;

protected:
  friend class device_buffer;
  /// Frees memory from `allocate`; never fails.
  virtual void release(void* ptr, size_t bytes) noexcept = 0;
};

inline device_buffer::~device_buffer() {
  if (owner_ != nullptr && ptr_ != nullptr)
    owner_->release(ptr_, bytes_);
}

/// Creates a backend by name: "cpu" (always), "cuda" / "cuda:N" when built
/// with CUDA and a device is present. `threads` = 0 uses every core.
result<std::unique_ptr<backend>> make_backend(std::string_view name, int threads = 0);

} // namespace mosaic
