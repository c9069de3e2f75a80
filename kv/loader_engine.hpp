#pragma once

// Internals of kv_loader shared by its two I/O paths (io_uring and pread):
// per-entry state, read operations, the layer-ordered ready queue and the
// verify + convert step. Not part of the public interface.
//
// Lifetime rules: a load_state lives as long as its handle or any read_op
// that names it. Reads land in pool buffers, never in the destination;
// only the verify + convert step writes the destination, and the handle
// waits until no op of its entry is outstanding ("quiet") before the
// destination may be freed.

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "kv/buffer_pool.hpp"
#include "kv/loader.hpp"
#include "kv/unique_fd.hpp"

namespace mosaic::kv {

struct load_state {
  load_source source;
  compiled_image* dst = nullptr;
  unique_fd fd;
  uint64_t file_size = 0;
  uint64_t seq = 0; ///< submission order, breaks ties between entries

  mutable std::mutex mutex;
  mutable std::condition_variable changed;
  entry_header header;                // valid once the header op completed
  std::vector<section_checksum> rows; // valid once the table op completed
  int meta_left = 1;                  ///< header (+ tail) reads still to arrive
  pool_buffer tail;                   ///< the file's last bytes, read with the header
  uint64_t tail_offset = 0;
  uint64_t tail_bytes = 0;
  bool embeddings_done = false;
  std::vector<char> layer_done; // [n_layers]
  int parts_left = 0;           ///< embeddings + layers still to convert
  bool finished = false;        ///< loaded or failed
  error err;                    ///< code none while fine
  int outstanding = 0;          ///< ops queued, in flight or being converted
  std::atomic<bool> failed{false};
};

/// One aligned read belonging to one entry.
struct read_op {
  enum class kind : uint8_t { header, tail, table, embeddings, layer };
  std::shared_ptr<load_state> entry;
  kind what = kind::header;
  int layer = -1;
  uint64_t offset = 0;
  uint64_t length = 0; ///< multiple of 4 KiB
  uint64_t done = 0;   ///< bytes read so far
  int error_no = 0;    ///< errno of a failed read
  pool_buffer buf;
  bool is_metadata() const {
    return what == kind::header || what == kind::tail || what == kind::table;
  }
  /// Scheduling order: metadata first, then embeddings, then layer by layer.
  int rank() const { return what == kind::layer ? 2 + layer : what == kind::embeddings ? 1 : 0; }
};

class loader_engine {
public:
  explicit loader_engine(loader_options options)
    : options_(options), pool_(options.buffer_pool_bytes) {}
  virtual ~loader_engine() = default;

  virtual std::string_view name() const = 0;
  /// Drains every queued read and joins the threads.
  virtual void stop() = 0;

  /// Opens the file and queues its header read.
  void submit(const std::shared_ptr<load_state>& s);
  loader_stats stats() const;

protected:
  /// Queues an op (failing its entry if no pool buffer could ever hold it).
  void enqueue(std::unique_ptr<read_op> op);
  /// Best queued op whose entry has not failed; null when none. Caller
  /// holds queue_mutex_.
  std::unique_ptr<read_op> pop_locked();
  /// Verifies and converts a finished read (or fails its entry).
  void complete(std::unique_ptr<read_op> op);
  /// Marks an op of `s` finished (after complete() or when dropped).
  void retire(load_state& s);
  void fail(load_state& s, error err);

  loader_options options_;
  buffer_pool pool_;
  std::mutex queue_mutex_;
  std::condition_variable queue_changed_;
  std::map<std::tuple<int, uint64_t, uint64_t>, std::unique_ptr<read_op>> ready_;
  uint64_t op_seq_ = 0;
  bool stopping_ = false;
  /// Ops queued, in flight or being converted, over all entries; the I/O
  /// threads only exit on stop() once this reaches zero.
  std::atomic<uint64_t> pending_ops_{0};

private:
  status process(read_op& op);
  /// Header or tail arrived; the last of them finds the checksum table (in
  /// the tail, or with one more read) and queues the sections.
  status metadata_arrived(read_op& op);
  void queue_sections(const std::shared_ptr<load_state>& s);

  std::atomic<uint64_t> entry_seq_{0};
  std::atomic<uint64_t> entries_ok_{0};
  std::atomic<uint64_t> entries_failed_{0};
  std::atomic<uint64_t> bytes_read_{0};
  std::atomic<uint64_t> direct_opens_{0};
  std::atomic<uint64_t> buffered_opens_{0};
};

/// io_uring path; errors when the kernel refuses a ring.
result<std::unique_ptr<loader_engine>> make_uring_engine(const loader_options& options);
/// pread worker threads.
std::unique_ptr<loader_engine> make_pread_engine(const loader_options& options);

} // namespace mosaic::kv
