#include "kv/buffer_pool.hpp"

#include "kv/entry_format.hpp"

namespace mosaic::kv {

pool_buffer& pool_buffer::operator=(pool_buffer&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::exchange(other.pool_, nullptr);
    mem_ = std::move(other.mem_);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void pool_buffer::reset() {
  if (pool_ != nullptr && mem_ != nullptr)
    std::exchange(pool_, nullptr)->give_back(std::move(mem_), size_);
  mem_.reset();
  size_ = 0;
}

std::optional<pool_buffer> buffer_pool::try_acquire_locked(size_t bytes) {
  const size_t size = round_up_page(bytes);
  if (in_use_ + size > budget_)
    return std::nullopt;
  if (auto it = free_.find(size); it != free_.end() && !it->second.empty()) {
    auto mem = std::move(it->second.back());
    it->second.pop_back();
    cached_ -= size;
    in_use_ += size;
    return pool_buffer{this, std::move(mem), size};
  }
  // Make room among cached buffers of other sizes.
  for (auto it = free_.begin(); in_use_ + cached_ + size > budget_ && it != free_.end(); ++it)
    while (!it->second.empty() && in_use_ + cached_ + size > budget_) {
      it->second.pop_back();
      cached_ -= it->first;
    }
  pool_buffer::memory mem{static_cast<uint8_t*>(std::aligned_alloc(page_bytes, size))};
  if (mem == nullptr)
    return std::nullopt;
  in_use_ += size;
  return pool_buffer{this, std::move(mem), size};
}

std::optional<pool_buffer> buffer_pool::try_acquire(size_t bytes) {
  std::lock_guard lock{mutex_};
  return try_acquire_locked(bytes);
}

pool_buffer buffer_pool::acquire(size_t bytes) {
  std::unique_lock lock{mutex_};
  for (;;) {
    if (auto buf = try_acquire_locked(bytes))
      return std::move(*buf);
    freed_.wait(lock);
  }
}

uint64_t buffer_pool::in_use() const {
  std::lock_guard lock{mutex_};
  return in_use_;
}

void buffer_pool::give_back(pool_buffer::memory mem, size_t size) {
  {
    std::lock_guard lock{mutex_};
    in_use_ -= size;
    free_[size].push_back(std::move(mem));
    cached_ += size;
  }
  freed_.notify_all();
}

} // namespace mosaic::kv
