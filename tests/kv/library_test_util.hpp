#pragma once

// A library fixture with an injected clock for the kv library tests.

#include <atomic>
#include <memory>

#include "kv/library.hpp"
#include "tests/kv/kv_test_util.hpp"

namespace mosaic::kv::test {

struct library_fixture {
  scratch_dir dir;
  std::shared_ptr<std::atomic<int64_t>> clock = std::make_shared<std::atomic<int64_t>>(1'000'000);
  digest model = key_of("model-a");

  library_options options(uint64_t disk_budget = uint64_t(1) << 30,
                          uint64_t ram_budget = uint64_t(1) << 30) const {
    library_options o;
    o.dir = dir.path();
    o.model_fingerprint = model;
    o.disk_budget_bytes = disk_budget;
    o.ram_budget_bytes = ram_budget;
    o.static_ttl = std::chrono::seconds{3600};
    o.clock = [c = clock] { return c->load(); };
    return o;
  }
  std::unique_ptr<kv_library> open(uint64_t disk_budget = uint64_t(1) << 30,
                                   uint64_t ram_budget = uint64_t(1) << 30) const {
    auto lib = kv_library::open(options(disk_budget, ram_budget));
    return lib ? std::move(*lib) : nullptr;
  }
};

/// Bytes of one tiny entry file.
inline uint64_t tiny_file_bytes() {
  entry_header h;
  h.n_tokens = tiny_geometry.tokens;
  h.n_layers = tiny_geometry.layers;
  h.hidden = tiny_geometry.hidden;
  h.kv_dim = tiny_geometry.kv_dim;
  return h.file_bytes();
}

} // namespace mosaic::kv::test
