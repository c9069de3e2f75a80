#pragma once

// The paged KV pool: per layer one K and one V array of fixed-size blocks
// in backend memory, a block allocator (free list: O(1) alloc and free, no
// fragmentation because every block has the same size) and per-sequence
// block tables. Prefill writes a sequence's KV into its blocks; decode
// appends to them and reads them with paged attention; the state of a
// sequence moves as a handle move (FastCache's pointer-move pool).
//
// Automatic prefix caching (vLLM's and SGLang's): a full block whose KV a
// prompt produced can be published under the hash of everything its KV
// depends on (engine/prefix_cache.hpp chains it over the tenant, the
// model, the parent block and the block's tokens). Blocks are reference
// counted: a later sequence that starts with the same tokens adopts the
// published blocks instead of computing them. A published block whose
// last reference goes stays cached (evictable) and is reclaimed, least
// recently used first, only when an allocation finds no free block; an
// unpublished block goes straight back to the free list. Published
// blocks are never written again: sequences append only past their
// full, shared blocks.
//
// Lifetime: the pool must outlive every `kv_sequence` it hands out. The
// allocator is thread-safe (one mutex); a single sequence must not be
// grown from two threads at once.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/backend.hpp"
#include "engine/error.hpp"
#include "engine/model/sha256.hpp"

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
  int blocks_used = 0;         ///< referenced by a sequence
  int blocks_free = 0;         ///< allocatable: never used, or cached and unreferenced
  int blocks_cached = 0;       ///< published in the prefix cache (referenced or not)
  int blocks_evictable = 0;    ///< cached and unreferenced (counted in blocks_free)
  uint64_t prefix_queries = 0; ///< prompt tokens looked up in the prefix cache
  uint64_t prefix_hits = 0;    ///< of which found (adopted)
  uint64_t evictions = 0;      ///< cached blocks reclaimed for an allocation
  int blocks_high_water = 0;   ///< the most blocks ever in use at once
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
  /// Returns every block to the pool (drops this sequence's reference;
  /// published blocks stay cached); the handle becomes invalid.
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

  // -- prefix cache -------------------------------------------------------------

  /// The block published under `hash`, with a reference taken for the
  /// caller (who must hand it to `adopt` or `release_blocks`), or -1.
  int32_t acquire_cached(const digest& hash);
  /// Whether a block is published under `hash` now (takes no reference:
  /// it may be evicted right after).
  bool is_cached(const digest& hash) const;
  /// A sequence whose first blocks are `blocks` (references the caller
  /// holds, e.g. from acquire_cached, passed to the sequence) and whose
  /// length is `n_tokens` (<= blocks.size() * block_size).
  kv_sequence adopt(std::vector<int32_t> blocks, int n_tokens);
  /// Publishes `block` (referenced, holding final KV) under `hash`. False
  /// when the hash is already cached (another block holds the same KV) or
  /// the block is published already; the block is then left as it is.
  bool publish(int32_t block, const digest& hash);
  /// Counts a prefix-cache look-up of `queried` tokens, `hit` of them found.
  void count_lookup(int queried, int hit) noexcept;
  /// Drops references taken by acquire_cached that were not adopted.
  void release_blocks(std::span<const int32_t> blocks) noexcept { free_blocks(blocks); }
  /// Unpublishes every unreferenced cached block (returns them to the
  /// free list); referenced ones stay published.
  void clear_cache() noexcept;

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
  /// Drops one reference of each block, the last first (so a sequence's
  /// tail is evicted before its head).
  void free_blocks(std::span<const int32_t> blocks) noexcept;
  void sequence_closed() noexcept;
  /// Records the blocks in use now if it is the most so far (caller holds mutex_).
  void note_high_water() noexcept;
  // LRU list of evictable blocks (caller holds mutex_).
  void lru_push(int32_t b) noexcept;
  void lru_remove(int32_t b) noexcept;
  void unpublish(int32_t b) noexcept;

  struct digest_hash {
    size_t operator()(const digest& d) const noexcept {
      size_t h;
      std::memcpy(&h, d.data(), sizeof h);
      return h;
    }
  };

  backend* be_;
  int n_layers_;
  int kv_dim_;
  kv_pool_options options_;
  std::vector<device_buffer> k_; // n_layers x [n_blocks * block_size, kv_dim]
  std::vector<device_buffer> v_; // n_layers x [n_blocks * block_size, kv_dim]

  mutable std::mutex mutex_;
  std::vector<int32_t> free_;      // stack of free (unpublished, unreferenced) block indices
  std::vector<int32_t> refs_;      // [n_blocks] sequences (and pending adopters) holding each block
  std::vector<digest> hash_;       // [n_blocks] the published hash (valid when published_)
  std::vector<uint8_t> published_; // [n_blocks]
  std::vector<int32_t> lru_prev_, lru_next_; // [n_blocks] -1: none
  int32_t lru_head_ = -1;                    // least recently used
  int32_t lru_tail_ = -1;                    // most recently used
  int evictable_ = 0;
  int cached_ = 0;
  std::unordered_map<digest, int32_t, digest_hash> by_hash_;
  uint64_t prefix_queries_ = 0;
  uint64_t prefix_hits_ = 0;
  uint64_t evictions_ = 0;
  int high_water_ = 0;
  int sequences_ = 0;
};

} // namespace mosaic
