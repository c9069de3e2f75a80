#include "engine/kv_pool.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>
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
  pool->free_.reserve(static_cast<size_t>(options.n_blocks));
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
  if (static_cast<size_t>(n) > free_.size())
    return make_error(errc::out_of_memory, "kv_pool: need ", std::to_string(n),
                      " more blocks but only ", std::to_string(free_.size()), " of ",
                      std::to_string(options_.n_blocks),
                      " are free; finish or evict sequences, or grow the pool");
  for (int i = 0; i < n; ++i) {
    out.push_back(free_.back());
    free_.pop_back();
  }
  high_water_ = std::max(high_water_, options_.n_blocks - static_cast<int>(free_.size()));
  return {};
}

void kv_pool::free_blocks(std::span<const int32_t> blocks) noexcept {
  std::lock_guard guard{mutex_};
  free_.insert(free_.end(), blocks.begin(), blocks.end());
}

void kv_pool::sequence_closed() noexcept {
  std::lock_guard guard{mutex_};
  --sequences_;
}

kv_pool_stats kv_pool::stats() const {
  std::lock_guard guard{mutex_};
  kv_pool_stats s;
  s.blocks_total = options_.n_blocks;
  s.blocks_free = static_cast<int>(free_.size());
  s.blocks_used = s.blocks_total - s.blocks_free;
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
