#pragma once

// A fixed pool of worker threads for the CPU backend's loops (OpenBLAS runs
// its own threads for GEMMs; see cpu_backend.cpp for how the two share the
// cores).

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace mosaic::cpu {

/// Runs a range loop on `size()` threads: the calling thread plus
/// `size() - 1` workers. One loop runs at a time; a loop started while
/// another one runs (from a second thread, or nested inside a loop body)
/// runs serially on its calling thread instead of waiting, so the pool can
/// never deadlock.
class thread_pool {
public:
  // -- constructors -----------------------------------------------------------

  /// Starts `threads - 1` workers; 0 = std::thread::hardware_concurrency().
  explicit thread_pool(int threads = 0);
  ~thread_pool();

  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  // -- properties -------------------------------------------------------------

  /// Threads that run a loop, the caller included (>= 1).
  int size() const noexcept { return static_cast<int>(workers_.size()) + 1; }

  // -- loops ------------------------------------------------------------------

  /// Calls `fn(lo, hi)` on disjoint sub-ranges that cover [begin, end), each
  /// at least `grain` long (except the last), and returns when all are done.
  /// Ranges shorter than 2 * grain run inline. `fn` must not throw.
  template <class F>
  void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& fn) {
    parallel_for_slots(begin, end, grain, [&fn](int, int64_t lo, int64_t hi) { fn(lo, hi); });
  }

  /// Like parallel_for, but calls `fn(slot, lo, hi)` where `slot` in
  /// [0, size()) names the thread running the sub-range: no two calls with
  /// the same slot overlap in time, so per-slot scratch needs no locking.
  /// A loop that runs inline (short, nested or concurrent) uses slot 0 only:
  /// do not share one per-slot scratch between nested loops.
  template <class F>
  void parallel_for_slots(int64_t begin, int64_t end, int64_t grain, F&& fn) {
    if (end <= begin)
      return;
    auto call = [](void* ctx, int slot, int64_t lo, int64_t hi) {
      (*static_cast<std::remove_reference_t<F>*>(ctx))(slot, lo, hi);
    };
    run(begin, end, grain, call, const_cast<void*>(static_cast<const void*>(&fn)));
  }

private:
  // -- member types -----------------------------------------------------------

  using body_fn = void (*)(void* ctx, int slot, int64_t lo, int64_t hi);

  /// The loop being run; written by the caller before it bumps generation_.
  struct job {
    body_fn body = nullptr;
    void* ctx = nullptr;
    int64_t begin = 0;
    int64_t end = 0;
    int64_t chunk = 1;
    int64_t n_chunks = 0;
  };

  // -- implementation ---------------------------------------------------------

  void run(int64_t begin, int64_t end, int64_t grain, body_fn body, void* ctx);
  void work_on(const job& j, int slot);
  void worker_main(int slot);

  // -- member variables -------------------------------------------------------

  std::vector<std::thread> workers_;
  std::atomic<bool> busy_{false}; ///< a loop is running (guards job_)
  job job_;
  std::atomic<int64_t> next_chunk_{0};
  std::mutex mtx_;
  std::condition_variable wake_;     ///< workers wait for a new generation
  std::condition_variable finished_; ///< the caller waits for pending_ == 0
  uint64_t generation_ = 0;          ///< guarded by mtx_
  int pending_ = 0;                  ///< workers still on this generation; mtx_
  bool stop_ = false;                ///< guarded by mtx_
};

} // namespace mosaic::cpu
