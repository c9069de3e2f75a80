#pragma once

// The paged KV pool: per layer one K and one V array of fixed-size blocks
// in backend memory, a block allocator (free list: O(1) alloc and free, no
// fragmentation because every block has the same size) and per-sequence
// block tables. Prefill writes a sequence's KV into its blocks; decode
// appends to them and reads them with paged attention; the state of a
// sequence moves as a handle move (FastCache's pointer-move pool).
//
// Lifetime: the pool must outlive every `kv_sequence` it hands out. The
// allocator is thread-safe (one mutex); a single sequence must not be
// grown from two threads at once.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "engine/backend.hpp"
#include "engine/error.hpp"

namespace mosaic {

class kv_pool;

/// Geometry of a pool.
struct kv_pool_options {
  int n_blocks = 256;  ///< blocks in the pool (shared by K and V, all layers)
  int block_size = 16; ///< tokens per block
};

/// Usage of a pool at one instant.
struct kv_pool_stats {
  int blocks_total = 0;
  int blocks_used = 0;
  int blocks_free = 0;
  int blocks_high_water = 0; ///< the most blocks ever in use at once
  int block_size = 0;
  size_t bytes_per_block = 0; ///< K and V of every layer for block_size tokens
  size_t bytes_total = 0;
  size_t bytes_used = 0;
  int sequences = 0; ///< live (not released) sequence handles
};

/// One sequence's KV in the pool: its block table and length. Move-only;
/// destroying it (or `release()`) returns all its blocks to the pool at
/// once.
class kv_sequence {
public:
  kv_sequence() = default;
  kv_sequence(kv_sequence&& other) noexcept { swap(other); }
  kv_sequence& operator=(kv_sequence&& other) noexcept {
    kv_sequence tmp{std::move(other)};
    swap(tmp);
    return *this;
  }
  kv_sequence(const kv_sequence&) = delete;
  kv_sequence& operator=(const kv_sequence&) = delete;
  ~kv_sequence() { release(); }

  /// Tokens whose KV the sequence holds (slots 0..length-1 are valid).
  int length() const noexcept { return length_; }
  /// Tokens the allocated blocks can hold.
  int capacity() const noexcept;
  /// Block indices in token order.
  const std::vector<int32_t>& blocks() const noexcept { return blocks_; }
  /// Row in the pool's per-layer arrays of the sequence's token `token`
  /// (block * block_size + offset). Requires token < capacity().
  int32_t slot(int token) const noexcept;
  /// Slots of tokens [begin, end).
  std::vector<int32_t> slots(int begin, int end) const;
  /// The pool this sequence lives in (nullptr for a default-constructed
  /// or released handle).
  kv_pool* pool() const noexcept { return pool_; }
  bool valid() const noexcept { return pool_ != nullptr; }

  /// Ensures capacity for `n_tokens` tokens, allocating blocks as needed.
  /// Allocates all or nothing: out_of_memory leaves the sequence as it was.
  status reserve(int n_tokens);
  /// Sets the length (<= capacity()). Callers set it after writing KV.
  status set_length(int n_tokens);
  /// Returns every block to the pool; the handle becomes invalid.
  void release() noexcept;

private:
  friend class kv_pool;
  kv_sequence(kv_pool* pool) noexcept : pool_(pool) {}
  void swap(kv_sequence& other) noexcept {
    std::swap(pool_, other.pool_);
    std::swap(blocks_, other.blocks_);
    std::swap(length_, other.length_);
  }

  kv_pool* pool_ = nullptr;
  std::vector<int32_t> blocks_;
  int length_ = 0;
};

/// The pool. Create it with `create`; it owns the backend memory.
class kv_pool {
public:
  /// Allocates the K and V arrays of every layer on `be`:
  /// 2 * n_layers * n_blocks * block_size * kv_dim floats.
  static result<std::unique_ptr<kv_pool>> create(backend& be, int n_layers, int kv_dim,
                                                 kv_pool_options options);

  kv_pool(const kv_pool&) = delete;
  kv_pool& operator=(const kv_pool&) = delete;

  /// A new, empty sequence (no blocks yet).
  kv_sequence new_sequence();

  /// K of layer `layer`: [n_blocks * block_size, kv_dim] (device memory).
  float* k_layer(int layer) const noexcept { return k_[static_cast<size_t>(layer)].f32(); }
  /// V of layer `layer`: [n_blocks * block_size, kv_dim] (device memory).
  float* v_layer(int layer) const noexcept { return v_[static_cast<size_t>(layer)].f32(); }

  int n_layers() const noexcept { return n_layers_; }
  int kv_dim() const noexcept { return kv_dim_; }
  int block_size() const noexcept { return options_.block_size; }
  int n_blocks() const noexcept { return options_.n_blocks; }
  backend& owner() const noexcept { return *be_; }
  kv_pool_stats stats() const;
  /// Blocks needed to hold `n_tokens` tokens.
  int blocks_for(int n_tokens) const noexcept {
    return (n_tokens + options_.block_size - 1) / options_.block_size;
  }

  struct private_tag {};
  /// Use `create`.
  kv_pool(private_tag, backend& be, int n_layers, int kv_dim, kv_pool_options options);

private:
  friend class kv_sequence;

  /// Appends `n` blocks to `out`, all or nothing.
  status allocate_blocks(int n, std::vector<int32_t>& out);
  void free_blocks(std::span<const int32_t> blocks) noexcept;
  void sequence_closed() noexcept;

  backend* be_;
  int n_layers_;
  int kv_dim_;
  kv_pool_options options_;
  std::vector<device_buffer> k_; // n_layers x [n_blocks * block_size, kv_dim]
  std::vector<device_buffer> v_; // n_layers x [n_blocks * block_size, kv_dim]

  mutable std::mutex mutex_;
  std::vector<int32_t> free_; // stack of free block indices
  int high_water_ = 0;
  int sequences_ = 0;
};

} // namespace mosaic
