#include "kv/ram_tier.hpp"

#include <cstring>

namespace mosaic::kv {

size_t digest_hash::operator()(const digest& d) const noexcept {
  size_t h;
  std::memcpy(&h, d.data(), sizeof h);
  return h;
}

uint64_t ram_bytes(const compiled_image& img) {
  return (img.embeddings.size() + img.k.size() + img.v.size()) * sizeof(float);
}

bool ram_tier::insert(const digest& key, std::shared_ptr<const compiled_image> img, bool pinned) {
  const uint64_t need = ram_bytes(*img);
  std::lock_guard lock{mutex_};
  if (auto it = slots_.find(key); it != slots_.end())
    erase_locked(it);
  if (need > budget_)
    return false;
  // Walk from the least recently used end, skipping pinned entries.
  for (auto it = lru_.end(); bytes_ + need > budget_ && it != lru_.begin();) {
    --it;
    auto s = slots_.find(*it);
    if (s->second.pinned)
      continue;
    const auto next = std::next(it); // already visited (or end)
    erase_locked(s);
    it = next;
    ++evictions_;
  }
  if (bytes_ + need > budget_)
    return false;
  lru_.push_front(key);
  slots_.emplace(key, slot{std::move(img), need, pinned, lru_.begin()});
  bytes_ += need;
  return true;
}

std::shared_ptr<const compiled_image> ram_tier::find(const digest& key) {
  std::lock_guard lock{mutex_};
  auto it = slots_.find(key);
  if (it == slots_.end())
    return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return it->second.img;
}

bool ram_tier::contains(const digest& key) const {
  std::lock_guard lock{mutex_};
  return slots_.count(key) != 0;
}

void ram_tier::erase(const digest& key) {
  std::lock_guard lock{mutex_};
  if (auto it = slots_.find(key); it != slots_.end())
    erase_locked(it);
}

void ram_tier::set_pinned(const digest& key, bool pinned) {
  std::lock_guard lock{mutex_};
  if (auto it = slots_.find(key); it != slots_.end())
    it->second.pinned = pinned;
}

uint64_t ram_tier::bytes() const {
  std::lock_guard lock{mutex_};
  return bytes_;
}

size_t ram_tier::size() const {
  std::lock_guard lock{mutex_};
  return slots_.size();
}

uint64_t ram_tier::evictions() const {
  std::lock_guard lock{mutex_};
  return evictions_;
}

void ram_tier::erase_locked(std::unordered_map<digest, slot, digest_hash>::iterator it) {
  bytes_ -= it->second.bytes;
  lru_.erase(it->second.lru);
  slots_.erase(it);
}

} // namespace mosaic::kv
