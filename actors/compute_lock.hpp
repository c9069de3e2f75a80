#pragma once

// The node's compute lock: the backend is driven by one thread at a time
// (engine/llava_engine.hpp), and every encode, compile, prefill chunk and
// decode step holds this lock. It is FIFO (a ticket lock): a prefill that
// releases it between chunks and asks again queues behind a decode step
// already waiting, so running streams keep their inter-token latency
// while a long prompt prefills (std::mutex gives no such order). Decode
// steps say so when they wait, so that a background compile can let them
// pass between its layers.

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
  void lock() { take(false); }
  /// lock() for a short step that others should let pass: a decode step.
  /// Background work (a library compile) polls decode_waiting() between
  /// its pieces and lets such a step go first.
  void lock_for_decode() { take(true); }
  /// Whether a decode step waits for the lock now.
  bool decode_waiting() const {
    std::lock_guard guard{mutex_};
    return decode_waiting_ > 0;
  }
  /// Whether anyone (decode step or not) waits for the lock now.
  bool others_waiting() const {
    std::lock_guard guard{mutex_};
    return next_ - serving_ > 1;
  }
  void unlock() {
    {
      std::lock_guard guard{mutex_};
      ++serving_;
    }
    turn_.notify_all();
  }

private:
  void take(bool decode) {
    std::unique_lock guard{mutex_};
    const uint64_t ticket = next_++;
    decode_waiting_ += decode ? 1 : 0;
    turn_.wait(guard, [&] { return serving_ == ticket; });
    decode_waiting_ -= decode ? 1 : 0;
  }

  mutable std::mutex mutex_;
  int decode_waiting_ = 0; ///< decode steps waiting now
  std::condition_variable turn_;
  uint64_t next_ = 0;    ///< the next ticket handed out
  uint64_t serving_ = 0; ///< the ticket that holds the lock (== next_: free)
};

} // namespace mosaic::actors
