#include "engine/cpu/blas_threads.hpp"

#include <cblas.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>

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

void blas_exec_with_short_spin(char** argv) {
  if (argv == nullptr || argv[0] == nullptr || std::getenv("OPENBLAS_THREAD_TIMEOUT") != nullptr ||
      std::getenv("GOTO_THREAD_TIMEOUT") != nullptr)
    return;
  const std::string value = std::to_string(blas_spin_log2_cycles);
  if (setenv("OPENBLAS_THREAD_TIMEOUT", value.c_str(), 1) != 0)
    return;
  execv("/proc/self/exe", argv);
  // Still here: the process goes on with OpenBLAS's default spin.
}

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
