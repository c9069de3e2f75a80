// The two I/O paths of kv_loader: one io_uring ring driven by one thread
// (verify + convert on decode workers), or pread worker threads.

#include <cerrno>
#include <cstring>
#include <liburing.h>
#include <map>
#include <thread>
#include <unistd.h>

#include "kv/loader_engine.hpp"

namespace mosaic::kv {

namespace {

/// Reads op->length bytes at op->offset into op->buf (short only at EOF).
void pread_op(read_op& op) {
  while (op.done < op.length) {
    const ssize_t r = ::pread(op.entry->fd.get(), op.buf.data() + op.done, op.length - op.done,
                              off_t(op.offset + op.done));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      op.error_no = errno;
      return;
    }
    if (r == 0)
      return;
    op.done += uint64_t(r);
  }
}

class pread_engine final : public loader_engine {
public:
  explicit pread_engine(const loader_options& options) : loader_engine(options) {
    const unsigned n = std::min(options.queue_depth, 32u);
    for (unsigned i = 0; i < n; ++i)
      workers_.emplace_back([this] { run(); });
  }
  ~pread_engine() override { stop(); }

  std::string_view name() const override { return "pread"; }

  void stop() override {
    {
      std::lock_guard lock{queue_mutex_};
      stopping_ = true;
    }
    queue_changed_.notify_all();
    for (auto& t : workers_)
      if (t.joinable())
        t.join();
  }

private:
  void run() {
    for (;;) {
      std::unique_ptr<read_op> op;
      {
        std::unique_lock lock{queue_mutex_};
        queue_changed_.wait_for(lock, std::chrono::milliseconds{5}, [&] {
          return (stopping_ && pending_ops_.load() == 0) || !ready_.empty();
        });
        op = pop_locked();
        if (!op) {
          if (stopping_ && pending_ops_.load() == 0)
            return;
          continue;
        }
      }
      op->buf = pool_.acquire(op->length);
      pread_op(*op);
      complete(std::move(op));
    }
  }

  std::vector<std::thread> workers_;
};

class uring_engine final : public loader_engine {
public:
  explicit uring_engine(const loader_options& options) : loader_engine(options) {}
  ~uring_engine() override { stop(); }

  /// Creates the ring; -errno when the kernel refuses it.
  int init() {
    const int rc = io_uring_queue_init(options_.queue_depth, &ring_, 0);
    if (rc < 0)
      return rc;
    ring_ok_ = true;
    io_thread_ = std::thread{[this] { run_io(); }};
    for (unsigned i = 0; i < options_.decode_threads; ++i)
      decoders_.emplace_back([this] { run_decode(); });
    return 0;
  }

  std::string_view name() const override { return "io_uring"; }

  void stop() override {
    {
      std::lock_guard lock{queue_mutex_};
      stopping_ = true;
    }
    queue_changed_.notify_all();
    if (io_thread_.joinable())
      io_thread_.join();
    {
      std::lock_guard lock{decode_mutex_};
      io_done_ = true;
    }
    decode_changed_.notify_all();
    for (auto& t : decoders_)
      if (t.joinable())
        t.join();
    if (ring_ok_) {
      io_uring_queue_exit(&ring_);
      ring_ok_ = false;
    }
  }

private:
  void submit_read(read_op* op) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) { // submission queue full: flush it first
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    io_uring_prep_read(sqe, op->entry->fd.get(), op->buf.data() + op->done,
                       unsigned(op->length - op->done), op->offset + op->done);
    io_uring_sqe_set_data(sqe, op);
    ++inflight_;
  }

  /// Moves queued ops into the ring while there is room and buffers.
  bool fill_ring() {
    bool any = false;
    std::lock_guard lock{queue_mutex_};
    while (inflight_ < options_.queue_depth) {
      auto op = pop_locked();
      if (!op)
        break;
      auto buf = pool_.try_acquire(op->length);
      if (!buf) { // wait for a decode worker to give one back
        const auto key = std::make_tuple(op->rank(), op->entry->seq, op_seq_++);
        ready_.emplace(key, std::move(op));
        break;
      }
      op->buf = std::move(*buf);
      submit_read(op.release());
      any = true;
    }
    return any;
  }

  void run_io() {
    for (;;) {
      if (fill_ring())
        io_uring_submit(&ring_);
      if (inflight_ > 0) {
        io_uring_cqe* cqe = nullptr;
        __kernel_timespec ts{0, 1'000'000}; // 1 ms: notice new work and freed buffers
        const int rc = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN)
          continue;
        unsigned head;
        unsigned seen = 0;
        bool resubmit = false;
        io_uring_for_each_cqe(&ring_, head, cqe) {
          ++seen;
          std::unique_ptr<read_op> op{static_cast<read_op*>(io_uring_cqe_get_data(cqe))};
          --inflight_;
          const int res = cqe->res;
          if (res < 0) {
            op->error_no = -res;
          } else if (res > 0) {
            op->done += uint64_t(res);
            if (op->done < op->length) { // short read: continue where it stopped
              submit_read(op.release());
              resubmit = true;
              continue;
            }
          }
          if (op->is_metadata())
            complete(std::move(op)); // cheap; queues the next reads without a thread hop
          else
            hand_to_decoder(std::move(op));
        }
        io_uring_cq_advance(&ring_, seen);
        if (resubmit)
          io_uring_submit(&ring_);
        continue;
      }
      std::unique_lock lock{queue_mutex_};
      if (stopping_ && ready_.empty() && pending_ops_.load() == 0)
        return;
      queue_changed_.wait_for(lock, std::chrono::milliseconds{1});
    }
  }

  void hand_to_decoder(std::unique_ptr<read_op> op) {
    {
      std::lock_guard lock{decode_mutex_};
      const auto key = std::make_tuple(op->rank(), op->entry->seq, decode_seq_++);
      decode_queue_.emplace(key, std::move(op));
    }
    decode_changed_.notify_one();
  }

  void run_decode() {
    for (;;) {
      std::unique_ptr<read_op> op;
      {
        std::unique_lock lock{decode_mutex_};
        decode_changed_.wait(lock, [&] { return io_done_ || !decode_queue_.empty(); });
        if (decode_queue_.empty())
          return;
        // Layer order, like the reads: when completions pile up faster than
        // they convert, layer l is ready before layer l + 1 of any entry.
        op = std::move(decode_queue_.extract(decode_queue_.begin()).mapped());
      }
      complete(std::move(op));
      queue_changed_.notify_all(); // a buffer came back
    }
  }

  io_uring ring_{};
  bool ring_ok_ = false;
  unsigned inflight_ = 0; // io thread only
  std::thread io_thread_;
  std::vector<std::thread> decoders_;
  std::mutex decode_mutex_;
  std::condition_variable decode_changed_;
  std::map<std::tuple<int, uint64_t, uint64_t>, std::unique_ptr<read_op>> decode_queue_;
  uint64_t decode_seq_ = 0;
  bool io_done_ = false;
};

} // namespace

result<std::unique_ptr<loader_engine>> make_uring_engine(const loader_options& options) {
  auto engine = std::make_unique<uring_engine>(options);
  if (const int rc = engine->init(); rc < 0)
    return make_error(errc::unavailable, "io_uring is not available (", std::strerror(-rc),
                      "); the loader can use pread instead (io_mode::pread)");
  return std::unique_ptr<loader_engine>{std::move(engine)};
}

std::unique_ptr<loader_engine> make_pread_engine(const loader_options& options) {
  return std::make_unique<pread_engine>(options);
}

} // namespace mosaic::kv
