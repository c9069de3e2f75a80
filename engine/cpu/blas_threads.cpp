#include "engine/cpu/blas_threads.hpp"

#include <cblas.h>

#include <algorithm>
#include <mutex>

namespace mosaic::cpu {

namespace {

struct blas_state {
  std::mutex mtx;
  int width = 1;    // widest registered pool
  int sections = 0; // open single-threaded sections, all backends
};

blas_state& state() {
  static blas_state s;
  return s;
}

} // namespace

void blas_register_pool(int threads) {
  auto& s = state();
  std::lock_guard guard{s.mtx};
  s.width = std::max(s.width, threads);
  if (s.sections == 0)
    openblas_set_num_threads(s.width);
}

int blas_process_width() {
  auto& s = state();
  std::lock_guard guard{s.mtx};
  return s.width;
}

blas_single_threaded::blas_single_threaded() {
  auto& s = state();
  std::lock_guard guard{s.mtx};
  if (s.sections++ == 0)
    openblas_set_num_threads(1);
}

blas_single_threaded::~blas_single_threaded() {
  auto& s = state();
  std::lock_guard guard{s.mtx};
  if (--s.sections == 0)
    openblas_set_num_threads(s.width);
}

} // namespace mosaic::cpu
