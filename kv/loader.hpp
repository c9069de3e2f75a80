#pragma once

// The parallel KV loader. Reads library entries from disk into compiled
// images with io_uring (O_DIRECT where the file system allows it; pread
// worker threads where io_uring is refused, e.g. in containers), into
// 4 KiB-aligned buffers from a bounded pool, and reports completion per
// (entry, layer) so that prefill of layer l waits only for layer l.
//
// Reads are issued in layer order across every entry in flight (all
// entries' embeddings, then all layer 0s, ...). A failed or corrupt read
// fails only its own entry (the file is quarantined through the lease);
// the caller then computes that image instead.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "engine/compiled_image.hpp"
#include "engine/error.hpp"
#include "kv/entry_format.hpp"
#include "kv/library.hpp"

namespace mosaic::kv {

struct load_state; // per-entry progress, shared by the handle and the I/O threads
class loader_engine;

/// How the loader reads.
enum class io_mode : uint8_t {
  automatic, ///< io_uring, or pread when the kernel refuses io_uring
  io_uring,  ///< io_uring or fail
  pread,     ///< pread worker threads
};

struct loader_options {
  io_mode mode = io_mode::automatic;
  bool direct_io = true;     ///< O_DIRECT, falling back to buffered on EINVAL
  unsigned queue_depth = 32; ///< reads in flight (pread: worker threads, at most 32)
  uint64_t buffer_pool_bytes = uint64_t(64) << 20;
  unsigned decode_threads = 2; ///< verify + convert workers (io_uring mode)
};

/// What to load and whom to tell. `load(entry_lease, ...)` fills it from a
/// library lease; benchmarks and tools may name a file directly.
struct load_source {
  std::filesystem::path path;
  std::optional<digest> expected_key;
  /// Called once with the error when a check fails; returns the error to
  /// report (the library quarantines the file here).
  std::function<error(const error&)> on_corrupt;
  /// Called once after the whole entry is verified and decoded.
  std::function<void(const compiled_image&)> on_loaded;
};

/// Completion handle of one entry's load. Destroying it waits for the
/// load to finish (the destination must not be freed under a read).
class load_handle {
public:
  load_handle() = default;
  load_handle(load_handle&&) noexcept = default;
  load_handle& operator=(load_handle&& other) noexcept;
  load_handle(const load_handle&) = delete;
  load_handle& operator=(const load_handle&) = delete;
  ~load_handle();

  /// Blocks until the embeddings are read, verified and converted.
  status wait_embeddings() const;
  /// Blocks until the embeddings and layer `layer` (K and V) are in the
  /// destination; returns the entry's error if it failed.
  status wait_layer(int layer) const;
  /// Blocks until the whole entry is loaded (or failed).
  status wait_all() const;
  /// True once the entry is completely loaded or failed (non-blocking).
  bool done() const;
  /// True once wait_layer(layer) would return at once (non-blocking).
  bool layer_ready(int layer) const;
  bool valid() const { return state_ != nullptr; }

private:
  friend class kv_loader;
  explicit load_handle(std::shared_ptr<load_state> s) : state_(std::move(s)) {}
  std::shared_ptr<load_state> state_;
};

struct loader_stats {
  uint64_t entries_ok = 0;
  uint64_t entries_failed = 0;
  uint64_t bytes_read = 0;
  uint64_t direct_opens = 0;   ///< files opened with O_DIRECT
  uint64_t buffered_opens = 0; ///< files where O_DIRECT was refused
};

class kv_loader {
public:
  struct private_tag {};
  /// Starts the I/O threads. With io_mode::automatic, an io_uring refused
  /// by the kernel (ENOSYS, EPERM, ...) selects the pread path.
  static result<std::unique_ptr<kv_loader>> create(loader_options options = {});
  ~kv_loader();
  kv_loader(const kv_loader&) = delete;
  kv_loader& operator=(const kv_loader&) = delete;

  /// Loads a library disk hit into `*dst` (resized once the header is
  /// read; it must outlive the handle). The lease is held until the load
  /// ends; a corrupt entry is quarantined, a good one promoted to RAM.
  load_handle load(entry_lease lease, compiled_image* dst);
  /// Loads an entry file by path.
  load_handle load(load_source source, compiled_image* dst);

  /// "io_uring" or "pread".
  std::string_view io_name() const;
  loader_stats stats() const;

  kv_loader(private_tag, std::unique_ptr<loader_engine> engine);

private:
  std::unique_ptr<loader_engine> engine_;
};

} // namespace mosaic::kv
