#pragma once

// The node's compute lock: the backend is driven by one thread at a time
// (engine/llava_engine.hpp), and every encode, compile, prefill chunk and
// decode step holds this lock. It is FIFO (a ticket lock): a prefill that
// releases it between chunks and asks again queues behind a decode step
// already waiting, so running streams keep their inter-token latency
// while a long prompt prefills (std::mutex gives no such order).

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace mosaic::actors {

class compute_lock {
public:
  compute_lock() = default;
  compute_lock(const compute_lock&) = delete;
  compute_lock& operator=(const compute_lock&) = delete;

  /// Waits for every earlier caller, then holds the lock.
  void lock() {
    std::unique_lock guard{mutex_};
    const uint64_t ticket = next_++;
    turn_.wait(guard, [&] { return serving_ == ticket; });
  }
  /// Takes the lock when nobody holds or waits for it.
  bool try_lock() {
    std::lock_guard guard{mutex_};
    if (serving_ != next_)
      return false;
    ++next_;
    return true;
  }
  void unlock() {
    {
      std::lock_guard guard{mutex_};
      ++serving_;
    }
    turn_.notify_all();
  }
  /// Callers waiting for the lock now (not counting the holder).
  uint64_t waiting() const {
    std::lock_guard guard{mutex_};
    return next_ - serving_ > 0 ? next_ - serving_ - 1 : 0;
  }

private:
  mutable std::mutex mutex_;
  std::condition_variable turn_;
  uint64_t next_ = 0;    ///< the next ticket handed out
  uint64_t serving_ = 0; ///< the ticket that holds the lock (== next_: free)
};

} // namespace mosaic::actors
