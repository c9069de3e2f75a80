// loader_bench: KV loader throughput against a raw sequential O_DIRECT
// read of the same bytes, measured in the same run, and the time prefill
// would wait on loads when per-layer loads overlap per-layer recompute.
//
//   loader_bench [--dir DIR] [--reps N] [--mode auto|io_uring|pread]
//
// Entries use builtin:small's geometry (576 tokens, 8 layers, hidden 512,
// kv_dim 128) in f16. Before every timed run the page cache of every file
// is dropped with posix_fadvise(POSIX_FADV_DONTNEED) (files are fsync'd,
// so the pages are clean and really go); the raw read and the loader both
// use O_DIRECT where the file system allows it.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "kv/entry_file.hpp"
#include "kv/library_key.hpp"
#include "kv/loader.hpp"

namespace {

using namespace mosaic;
using namespace mosaic::kv;
using clock_type = std::chrono::steady_clock;
namespace fs = std::filesystem;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void drop_cache(const std::vector<fs::path>& files) {
  for (const auto& p : files) {
    const int fd = ::open(p.c_str(), O_RDONLY);
    if (fd < 0)
      continue;
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

/// Sequential read of whole files in 1 MiB O_DIRECT requests (buffered if
/// the file system refuses O_DIRECT). Returns bytes read.
uint64_t raw_read(const std::vector<fs::path>& files) {
  constexpr size_t chunk = 1 << 20;
  void* mem = std::aligned_alloc(page_bytes, chunk);
  uint64_t total = 0;
  for (const auto& p : files) {
    int fd = ::open(p.c_str(), O_RDONLY | O_DIRECT);
    if (fd < 0)
      fd = ::open(p.c_str(), O_RDONLY);
    for (off_t off = 0;;) {
      const ssize_t r = ::pread(fd, mem, chunk, off);
      if (r <= 0)
        break;
      off += r;
      total += uint64_t(r);
    }
    ::close(fd);
  }
  std::free(mem);
  return total;
}

/// Spins for `us` microseconds (stands in for one layer's recompute).
void busy_for(double us) {
  const auto until = clock_type::now() + std::chrono::duration<double, std::micro>(us);
  volatile uint64_t sink = 0;
  while (clock_type::now() < until)
    sink = sink + 1;
}

struct entry_set {
  std::vector<fs::path> files;
  uint64_t bytes_each = 0;
};

entry_set write_entries(const fs::path& dir, int n) {
  entry_set set;
  std::mt19937_64 rng{42};
  std::normal_distribution<float> dist{0.0f, 1.0f};
  compiled_image img;
  img.resize(576, 8, 512, 128);
  for (auto* v : {&img.embeddings, &img.k, &img.v})
    for (auto& x : *v)
      x = dist(rng);
  for (int i = 0; i < n; ++i) {
    entry_header h;
    h.image_key = sha256("bench-image-" + std::to_string(i));
    h.model_fingerprint = sha256(std::string_view{"builtin:small"});
    h.owner_ns = "shared:bench";
    h.key = library_key(h.image_key, h.model_fingerprint, h.owner_ns);
    h.dtype = storage_dtype::f16;
    auto w = write_entry(dir, h, img);
    if (!w) {
      std::fprintf(stderr, "error: %s\n", w.err().to_string().c_str());
      std::exit(1);
    }
    set.files.push_back(entry_path(dir, w->key));
    set.bytes_each = w->file_bytes();
  }
  return set;
}

/// Loads `files` in parallel; returns seconds (or a negative value on error).
double timed_load(kv_loader& loader, const std::vector<fs::path>& files,
                  std::vector<compiled_image>& dst) {
  std::vector<load_handle> handles;
  const auto t0 = clock_type::now();
  for (size_t i = 0; i < files.size(); ++i)
    handles.push_back(loader.load(load_source{files[i], {}, {}, {}}, &dst[i]));
  for (auto& h : handles)
    if (auto st = h.wait_all(); !st) {
      std::fprintf(stderr, "load failed: %s\n", st.err().to_string().c_str());
      return -1;
    }
  return seconds_since(t0);
}

} // namespace

int main(int argc, char** argv) {
  fs::path dir = fs::temp_directory_path() / ("mosaic-loader-bench-" + std::to_string(::getpid()));
  int reps = 5;
  io_mode mode = io_mode::automatic;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--dir")
      dir = fs::path{argv[i + 1]} / ("mosaic-loader-bench-" + std::to_string(::getpid()));
    else if (a == "--reps")
      reps = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--mode")
      mode = std::string{argv[i + 1]} == "pread"      ? io_mode::pread
             : std::string{argv[i + 1]} == "io_uring" ? io_mode::io_uring
                                                      : io_mode::automatic;
  }
  fs::create_directories(dir);
  const auto set = write_entries(dir, 16);
  loader_options lo;
  lo.mode = mode;
  auto loader = kv_loader::create(lo);
  if (!loader) {
    std::fprintf(stderr, "error: %s\n", loader.err().to_string().c_str());
    return 1;
  }
  std::printf("loader_bench: builtin:small geometry, f16, %.2f MiB per entry (%.0f KiB per "
              "layer K+V), io=%s, %u cores, median of %d runs\n",
              double(set.bytes_each) / (1 << 20), 576.0 * 128 * 2 * 2 / 1024,
              std::string{(*loader)->io_name()}.c_str(), std::thread::hardware_concurrency(), reps);
  std::printf("page cache dropped before every run with posix_fadvise(DONTNEED) per file\n\n");
  std::printf("%8s  %12s  %12s  %12s  %12s  %7s\n", "ENTRIES", "RAW_MS", "RAW_GB/S", "LOADER_MS",
              "LOADER_GB/S", "RATIO");
  double load_ms_one = 0;
  for (int n : {1, 4, 16}) {
    const std::vector<fs::path> files{set.files.begin(), set.files.begin() + n};
    std::vector<double> raw, load;
    // Destinations are allocated once and reused, as prefill reuses its
    // buffers; the first (untimed) load faults their pages in.
    std::vector<compiled_image> dst(files.size());
    if (timed_load(**loader, files, dst) < 0)
      return 1;
    for (int r = 0; r < reps; ++r) {
      drop_cache(files);
      const auto t0 = clock_type::now();
      raw_read(files);
      raw.push_back(seconds_since(t0));
      drop_cache(files);
      const double s = timed_load(**loader, files, dst);
      if (s < 0)
        return 1;
      load.push_back(s);
    }
    const double bytes = double(set.bytes_each) * n;
    const double rs = median(raw), ls = median(load);
    if (n == 1)
      load_ms_one = ls * 1e3;
    std::printf("%8d  %12.2f  %12.2f  %12.2f  %12.2f  %7.2f\n", n, rs * 1e3, bytes / rs / 1e9,
                ls * 1e3, bytes / ls / 1e9, rs / ls);
  }

  // Overlap: prefill waits for layer l right before computing layer l.
  // Recompute per layer is set to 2x the measured load time per layer.
  const int layers = 8;
  for (int n : {1, 4}) {
    const std::vector<fs::path> files{set.files.begin(), set.files.begin() + n};
    const double load_per_layer_us = load_ms_one * 1e3 * n / (layers + 1);
    const double compute_us = 2.0 * load_per_layer_us;
    std::vector<double> wait_us(layers, 0.0);
    std::vector<compiled_image> dst(files.size());
    for (int r = 0; r < reps; ++r) {
      drop_cache(files);
      std::vector<load_handle> handles;
      for (size_t i = 0; i < files.size(); ++i)
        handles.push_back((*loader)->load(load_source{files[i], {}, {}, {}}, &dst[i]));
      busy_for(compute_us); // text tokens and embeddings-side work before layer 0
      for (int l = 0; l < layers; ++l) {
        const auto t0 = clock_type::now();
        for (auto& h : handles)
          (void)h.wait_layer(l);
        wait_us[size_t(l)] += seconds_since(t0) * 1e6 / reps;
        busy_for(compute_us);
      }
    }
    double total = 0;
    std::printf("\noverlap, %d entr%s: load %.0f us/layer, recompute %.0f us/layer; prefill wait "
                "per layer (us):",
                n, n == 1 ? "y" : "ies", load_per_layer_us, compute_us);
    for (double w : wait_us) {
      std::printf(" %.0f", w);
      total += w;
    }
    std::printf("\n  total wait %.0f us = %.1f%% of the %.0f us of recompute\n", total,
                100.0 * total / (compute_us * (layers + 1)), compute_us * (layers + 1));
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
