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
