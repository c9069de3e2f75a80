#include "engine/kv_pool.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace mosaic {

// -- kv_sequence --------------------------------------------------------------

int kv_sequence::capacity() const noexcept {
  return pool_ == nullptr ? 0 : static_cast<int>(blocks_.size()) * pool_->block_size();
}

int32_t kv_sequence::slot(int token) const noexcept {
  const int bs = pool_->block_size();
  return blocks_[static_cast<size_t>(token / bs)] * bs + token % bs;
}

std::vector<int32_t> kv_sequence::slots(int begin, int end) const {
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(end > begin ? end - begin : 0));
  for (int t = begin; t < end; ++t)
    out.push_back(slot(t));
  return out;
}

status kv_sequence::reserve(int n_tokens) {
  if (pool_ == nullptr)
    return make_error(errc::invalid_argument, "kv_sequence::reserve on a released sequence");
  if (n_tokens < 0)
    return make_error(errc::invalid_argument, "kv_sequence::reserve: negative token count");
  const int need = pool_->blocks_for(n_tokens) - static_cast<int>(blocks_.size());
  if (need <= 0)
    return {};
  return pool_->allocate_blocks(need, blocks_);
}

status kv_sequence::set_length(int n_tokens) {
  if (n_tokens < 0 || n_tokens > capacity())
    return make_error(errc::invalid_argument, "kv_sequence::set_length(", std::to_string(n_tokens),
                      "): capacity is ", std::to_string(capacity()), "; reserve first");
  length_ = n_tokens;
  return {};
}

void kv_sequence::release() noexcept {
  if (pool_ == nullptr)
    return;
  pool_->free_blocks(blocks_);
  pool_->sequence_closed();
  blocks_.clear();
  length_ = 0;
  pool_ = nullptr;
}

// -- kv_pool ------------------------------------------------------------------

kv_pool::kv_pool(private_tag, backend& be, int n_layers, int kv_dim, kv_pool_options options)
  : be_(&be), n_layers_(n_layers), kv_dim_(kv_dim), options_(options) {}

result<std::unique_ptr<kv_pool>> kv_pool::create(backend& be, int n_layers, int kv_dim,
                                                 kv_pool_options options) {
  if (n_layers <= 0 || kv_dim <= 0)
    return make_error(errc::invalid_argument, "kv_pool: n_layers and kv_dim must be positive");
  if (options.n_blocks <= 0 || options.block_size <= 0)
    return make_error(
        errc::invalid_argument, "kv_pool: n_blocks and block_size must be positive (got n_blocks=",
        std::to_string(options.n_blocks), ", block_size=", std::to_string(options.block_size), ")");
  if (static_cast<int64_t>(options.n_blocks) * options.block_size > INT32_MAX)
    return make_error(errc::invalid_argument, "kv_pool: n_blocks * block_size must fit in int32 "
                                              "slot indices; lower n_blocks");
  auto pool = std::make_unique<kv_pool>(private_tag{}, be, n_layers, kv_dim, options);
  const size_t bytes =
      static_cast<size_t>(options.n_blocks) * options.block_size * kv_dim * sizeof(float);
  pool->k_.reserve(static_cast<size_t>(n_layers));
  pool->v_.reserve(static_cast<size_t>(n_layers));
  for (int l = 0; l < n_layers; ++l) {
    auto k = be.allocate(bytes);
    if (!k)
      return make_error(errc::out_of_memory, "kv_pool: cannot allocate layer ", std::to_string(l),
                        " K (", std::to_string(bytes), " bytes): ", k.err().message,
                        "; lower n_blocks");
    auto v = be.allocate(bytes);
    if (!v)
      return make_error(errc::out_of_memory, "kv_pool: cannot allocate layer ", std::to_string(l),
                        " V (", std::to_string(bytes), " bytes): ", v.err().message,
                        "; lower n_blocks");
    pool->k_.push_back(std::move(*k));
    pool->v_.push_back(std::move(*v));
  }
  const auto nb = static_cast<size_t>(options.n_blocks);
  pool->refs_.assign(nb, 0);
  pool->hash_.assign(nb, digest{});
  pool->published_.assign(nb, 0);
  pool->lru_prev_.assign(nb, -1);
  pool->lru_next_.assign(nb, -1);
  pool->free_.reserve(nb);
  // Stack order: block 0 is handed out first.
  for (int b = options.n_blocks - 1; b >= 0; --b)
    pool->free_.push_back(b);
  return pool;
}

kv_sequence kv_pool::new_sequence() {
  std::lock_guard guard{mutex_};
  ++sequences_;
  return kv_sequence{this};
}

status kv_pool::allocate_blocks(int n, std::vector<int32_t>& out) {
  std::lock_guard guard{mutex_};
  const size_t available = free_.size() + static_cast<size_t>(evictable_);
  if (static_cast<size_t>(n) > available)
    return make_error(errc::out_of_memory, "kv_pool: need ", std::to_string(n),
                      " more blocks but only ", std::to_string(available), " of ",
                      std::to_string(options_.n_blocks),
                      " are free; finish or evict sequences, or grow the pool");
  for (int i = 0; i < n; ++i) {
    int32_t b;
    if (!free_.empty()) {
      b = free_.back();
      free_.pop_back();
    } else { // reclaim the least recently used cached block
      b = lru_head_;
      lru_remove(b);
      unpublish(b);
      ++evictions_;
    }
    refs_[static_cast<size_t>(b)] = 1;
    out.push_back(b);
  }
  note_high_water();
  return {};
}

void kv_pool::free_blocks(std::span<const int32_t> blocks) noexcept {
  std::lock_guard guard{mutex_};
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    const int32_t b = *it;
    auto& r = refs_[static_cast<size_t>(b)];
    if (r <= 0) // a broken invariant: a block freed twice
      std::abort();
    if (--r > 0)
      continue;
    if (published_[static_cast<size_t>(b)] != 0)
      lru_push(b);
    else
      free_.push_back(b);
  }
}

void kv_pool::note_high_water() noexcept {
  high_water_ =
      std::max(high_water_, options_.n_blocks - static_cast<int>(free_.size()) - evictable_);
}

void kv_pool::lru_push(int32_t b) noexcept {
  const auto i = static_cast<size_t>(b);
  lru_prev_[i] = lru_tail_;
  lru_next_[i] = -1;
  if (lru_tail_ >= 0)
    lru_next_[static_cast<size_t>(lru_tail_)] = b;
  else
    lru_head_ = b;
  lru_tail_ = b;
  ++evictable_;
}

void kv_pool::lru_remove(int32_t b) noexcept {
  const auto i = static_cast<size_t>(b);
  const int32_t prev = lru_prev_[i];
  const int32_t next = lru_next_[i];
  (prev >= 0 ? lru_next_[static_cast<size_t>(prev)] : lru_head_) = next;
  (next >= 0 ? lru_prev_[static_cast<size_t>(next)] : lru_tail_) = prev;
  lru_prev_[i] = lru_next_[i] = -1;
  --evictable_;
}

void kv_pool::unpublish(int32_t b) noexcept {
  const auto i = static_cast<size_t>(b);
  by_hash_.erase(hash_[i]);
  published_[i] = 0;
  --cached_;
}

int32_t kv_pool::acquire_cached(const digest& hash) {
  std::lock_guard guard{mutex_};
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end())
    return -1;
  const int32_t b = it->second;
  if (refs_[static_cast<size_t>(b)]++ == 0)
    lru_remove(b);
  note_high_water();
  return b;
}

bool kv_pool::is_cached(const digest& hash) const {
  std::lock_guard guard{mutex_};
  return by_hash_.count(hash) != 0;
}

kv_sequence kv_pool::adopt(std::vector<int32_t> blocks, int n_tokens) {
  kv_sequence s = new_sequence();
  s.blocks_ = std::move(blocks);
  s.length_ = std::clamp(n_tokens, 0, s.capacity());
  return s;
}

bool kv_pool::publish(int32_t block, const digest& hash) {
  std::lock_guard guard{mutex_};
  const auto i = static_cast<size_t>(block);
  if (block < 0 || i >= refs_.size() || refs_[i] <= 0 || published_[i] != 0)
    return false;
  if (!by_hash_.emplace(hash, block).second)
    return false;
  hash_[i] = hash;
  published_[i] = 1;
  ++cached_;
  return true;
}

void kv_pool::count_lookup(int queried, int hit) noexcept {
  std::lock_guard guard{mutex_};
  prefix_queries_ += static_cast<uint64_t>(std::max(queried, 0));
  prefix_hits_ += static_cast<uint64_t>(std::max(hit, 0));
}

void kv_pool::clear_cache() noexcept {
  std::lock_guard guard{mutex_};
  while (lru_head_ >= 0) {
    const int32_t b = lru_head_;
    lru_remove(b);
    unpublish(b);
    free_.push_back(b);
  }
}

void kv_pool::sequence_closed() noexcept {
  std::lock_guard guard{mutex_};
  --sequences_;
}

kv_pool_stats kv_pool::stats() const {
  std::lock_guard guard{mutex_};
  kv_pool_stats s;
  s.blocks_total = options_.n_blocks;
  s.blocks_free = static_cast<int>(free_.size()) + evictable_;
  s.blocks_used = s.blocks_total - s.blocks_free;
  s.blocks_cached = cached_;
  s.blocks_evictable = evictable_;
  s.prefix_queries = prefix_queries_;
  s.prefix_hits = prefix_hits_;
  s.evictions = evictions_;
  s.blocks_high_water = high_water_;
  s.block_size = options_.block_size;
  s.bytes_per_block =
      2 * static_cast<size_t>(n_layers_) * options_.block_size * kv_dim_ * sizeof(float);
  s.bytes_total = s.bytes_per_block * static_cast<size_t>(s.blocks_total);
  s.bytes_used = s.bytes_per_block * static_cast<size_t>(s.blocks_used);
  s.sequences = sequences_;
  return s;
}

} // namespace mosaic
