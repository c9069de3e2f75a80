#pragma once

// A bounded pool of 4 KiB-aligned host buffers (O_DIRECT-capable) for the
// loader. At most `budget` bytes are handed out or cached at once; freed
// buffers are kept for reuse by requests of the same size.

#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace mosaic::kv {

class buffer_pool;

/// One aligned buffer borrowed from a pool; returned on destruction.
class pool_buffer {
public:
  pool_buffer() = default;
  pool_buffer(pool_buffer&&) noexcept = default;
  pool_buffer& operator=(pool_buffer&& other) noexcept;
  pool_buffer(const pool_buffer&) = delete;
  pool_buffer& operator=(const pool_buffer&) = delete;
  ~pool_buffer() { reset(); }

  uint8_t* data() const { return mem_.get(); }
  size_t size() const { return size_; }
  explicit operator bool() const { return mem_ != nullptr; }
  void reset();

private:
  friend class buffer_pool;
  struct free_deleter {
    void operator()(uint8_t* p) const noexcept { std::free(p); }
  };
  using memory = std::unique_ptr<uint8_t, free_deleter>;
  pool_buffer(buffer_pool* pool, memory mem, size_t size)
    : pool_(pool), mem_(std::move(mem)), size_(size) {}
  buffer_pool* pool_ = nullptr;
  memory mem_;
  size_t size_ = 0;
};

class buffer_pool {
public:
  explicit buffer_pool(uint64_t budget_bytes) : budget_(budget_bytes) {}
  buffer_pool(const buffer_pool&) = delete;
  buffer_pool& operator=(const buffer_pool&) = delete;

  /// A buffer of `bytes` (rounded up to 4 KiB) if the budget allows now.
  std::optional<pool_buffer> try_acquire(size_t bytes);
  /// Waits until the budget allows. Requires bytes <= budget().
  pool_buffer acquire(size_t bytes);
  uint64_t budget() const { return budget_; }
  /// Bytes currently handed out.
  uint64_t in_use() const;

private:
  friend class pool_buffer;
  void give_back(pool_buffer::memory mem, size_t size);
  std::optional<pool_buffer> try_acquire_locked(size_t bytes);

  const uint64_t budget_;
  mutable std::mutex mutex_;
  std::condition_variable freed_;
  uint64_t in_use_ = 0;
  uint64_t cached_ = 0;
  std::unordered_map<size_t, std::vector<pool_buffer::memory>> free_;
};

} // namespace mosaic::kv
