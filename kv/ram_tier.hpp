#pragma once

// Host-RAM tier of a KV library: decoded entries (f32) under a byte budget,
// least recently used first out, pinned entries never. Thread-safe. A hit
// hands out a shared_ptr, so an entry being copied out is never freed
// under its reader.

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "engine/compiled_image.hpp"
#include "engine/model/sha256.hpp"

namespace mosaic::kv {

/// Hash of a digest for unordered containers (its first 8 bytes: the
/// digest is already uniformly distributed; identity stays the full key).
struct digest_hash {
  size_t operator()(const digest& d) const noexcept;
};

/// Bytes a compiled image takes in RAM.
uint64_t ram_bytes(const compiled_image& img);

class ram_tier {
public:
  explicit ram_tier(uint64_t budget_bytes) : budget_(budget_bytes) {}

  /// Inserts or replaces; evicts LRU unpinned entries to fit. Returns
  /// false (and stores nothing) when the entry cannot fit the budget.
  bool insert(const digest& key, std::shared_ptr<const compiled_image> img, bool pinned);
  /// The entry, marked most recently used; null on a miss.
  std::shared_ptr<const compiled_image> find(const digest& key);
  bool contains(const digest& key) const;
  void erase(const digest& key);
  void set_pinned(const digest& key, bool pinned);

  uint64_t bytes() const;
  uint64_t budget() const { return budget_; }
  size_t size() const;
  uint64_t evictions() const;

private:
  struct slot {
    std::shared_ptr<const compiled_image> img;
    uint64_t bytes = 0;
    bool pinned = false;
    std::list<digest>::iterator lru; // position in lru_
  };
  void erase_locked(std::unordered_map<digest, slot, digest_hash>::iterator it);

  mutable std::mutex mutex_;
  const uint64_t budget_;
  uint64_t bytes_ = 0;
  uint64_t evictions_ = 0;
  std::list<digest> lru_; // front = most recently used
  std::unordered_map<digest, slot, digest_hash> slots_;
};

} // namespace mosaic::kv
