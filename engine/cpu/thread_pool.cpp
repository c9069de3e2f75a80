#include "engine/cpu/thread_pool.hpp"

#include <algorithm>

namespace mosaic::cpu {

thread_pool::thread_pool(int threads) {
  if (threads <= 0)
    threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  workers_.reserve(static_cast<size_t>(threads - 1));
  for (int i = 1; i < threads; ++i)
    workers_.emplace_back([this, i] { worker_main(i); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard guard{mtx_};
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_)
    t.join();
}

void thread_pool::run(int64_t begin, int64_t end, int64_t grain, body_fn body, void* ctx) {
  const int64_t n = end - begin;
  grain = std::max<int64_t>(grain, 1);
  bool expected = false;
  if (workers_.empty() || n < 2 * grain || !busy_.compare_exchange_strong(expected, true)) {
    body(ctx, 0, begin, end);
    return;
  }
  // Chunks of `grain`, but at most 64 per thread: enough to balance uneven
  // tasks (causal attention blocks) without much claiming.
  const int64_t max_chunks = static_cast<int64_t>(size()) * 64;
  const int64_t chunk = std::max(grain, (n + max_chunks - 1) / max_chunks);
  job_ = job{body, ctx, begin, end, chunk, (n + chunk - 1) / chunk};
  next_chunk_.store(0, std::memory_order_relaxed);
  {
    std::lock_guard guard{mtx_};
    ++generation_;
    pending_ = static_cast<int>(workers_.size());
  }
  wake_.notify_all();
  work_on(job_, 0);
  {
    // Workers read job_ until they decrement pending_, so it must not
    // change (nor `ctx` die) before every one of them has checked out.
    std::unique_lock lock{mtx_};
    finished_.wait(lock, [this] { return pending_ == 0; });
  }
  busy_.store(false, std::memory_order_release);
}

void thread_pool::work_on(const job& j, int slot) {
  for (;;) {
    const int64_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
    if (c >= j.n_chunks)
      return;
    const int64_t lo = j.begin + c * j.chunk;
    const int64_t hi = std::min(j.end, lo + j.chunk);
    if (lo < hi)
      j.body(j.ctx, slot, lo, hi);
  }
}

void thread_pool::worker_main(int slot) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock lock{mtx_};
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_)
        return;
      seen = generation_;
    }
    work_on(job_, slot);
    bool last = false;
    {
      std::lock_guard guard{mtx_};
      last = --pending_ == 0;
    }
    if (last)
      finished_.notify_one();
  }
}

} // namespace mosaic::cpu
