#pragma once

// OpenBLAS's thread count is one setting per process, while a process may
// hold several CPU backends (a node's prefill and decode workers, an
// encoder), each with its own pool. Each backend's attention runs sgemm on
// its pool's threads and needs OpenBLAS single-threaded meanwhile; every
// other sgemm wants OpenBLAS's threads. This is the one owner of that
// setting: a single-threaded section is counted, so the count returns to
// the process's width only when the last section in any backend ends, and
// no two threads ever set it at once.

namespace mosaic::cpu {

/// The spin, in log2 cycles, of OpenBLAS's idle worker threads that a
/// program sets with blas_exec_with_short_spin (OpenBLAS's default is 28).
inline constexpr int blas_spin_log2_cycles = 16;

/// OpenBLAS's worker threads spin on sched_yield for 2^28 cycles (~0.1 s)
/// after each sgemm before they sleep, so between sgemm calls (attention on
/// the pool's threads, image decode, HTTP) they take a core from the work
/// that is running: on 2 cores, chat turns' TTFT was ~1.3x what it is with
/// a short spin (back-to-back runs of bench/vllm_side_by_side.sh,
/// docs/deploy.md "CPU threads"). OpenBLAS reads the
/// timeout only when it loads, before main, so a program re-executes
/// itself (/proc/self/exe, same pid and arguments) with
/// OPENBLAS_THREAD_TIMEOUT=blas_spin_log2_cycles. Returns at once when the
/// variable (or GOTO_THREAD_TIMEOUT) is set already, e.g. by the operator,
/// and when the re-exec fails (the program then runs with the default).
void blas_exec_with_short_spin(char** argv);

/// Raises the process's OpenBLAS width to `threads` (the widest pool
/// registered wins) unless a single-threaded section is open.
void blas_register_pool(int threads);

/// The width sgemm gets outside single-threaded sections.
int blas_process_width();

/// OpenBLAS runs single-threaded from construction until the last open
/// section in the process is destroyed.
class blas_single_threaded {
public:
  blas_single_threaded();
  ~blas_single_threaded();
  blas_single_threaded(const blas_single_threaded&) = delete;
  blas_single_threaded& operator=(const blas_single_threaded&) = delete;
};

} // namespace mosaic::cpu
