#include "kv/loader.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>

#include "kv/loader_engine.hpp"

namespace mosaic::kv {

// -- load_handle ----------------------------------------------------------------

namespace {

status state_error(const load_state& s) {
  if (s.err.code != errc::none)
    return s.err;
  return {};
}

} // namespace

load_handle& load_handle::operator=(load_handle&& other) noexcept {
  if (this != &other) {
    if (state_)
      (void)wait_all();
    state_ = std::move(other.state_);
  }
  return *this;
}

load_handle::~load_handle() {
  if (state_)
    (void)wait_all();
}

status load_handle::wait_embeddings() const {
  if (!state_)
    return make_error(errc::invalid_argument, "wait on an empty load_handle");
  std::unique_lock lock{state_->mutex};
  state_->changed.wait(lock, [&] { return state_->finished || state_->embeddings_done; });
  return state_error(*state_);
}

status load_handle::wait_layer(int layer) const {
  if (!state_)
    return make_error(errc::invalid_argument, "wait on an empty load_handle");
  std::unique_lock lock{state_->mutex};
  auto& s = *state_;
  s.changed.wait(lock, [&] {
    return s.finished || (s.embeddings_done && layer >= 0 && size_t(layer) < s.layer_done.size() &&
                          s.layer_done[size_t(layer)]);
  });
  MOSAIC_TRY(state_error(s));
  if (layer < 0 || layer >= s.header.n_layers)
    return make_error(errc::invalid_argument, "layer ", std::to_string(layer),
                      " is out of range for an entry of ", std::to_string(s.header.n_layers),
                      " layers");
  return {};
}

bool load_handle::layer_ready(int layer) const {
  if (!state_)
    return true; // wait_layer answers at once (with an error)
  std::lock_guard lock{state_->mutex};
  const auto& s = *state_;
  return s.finished || (s.embeddings_done && layer >= 0 && size_t(layer) < s.layer_done.size() &&
                        s.layer_done[size_t(layer)]);
}

status load_handle::wait_all() const {
  if (!state_)
    return make_error(errc::invalid_argument, "wait on an empty load_handle");
  std::unique_lock lock{state_->mutex};
  state_->changed.wait(lock, [&] { return state_->finished && state_->outstanding == 0; });
  return state_error(*state_);
}

bool load_handle::done() const {
  if (!state_)
    return true;
  std::lock_guard lock{state_->mutex};
  return state_->finished;
}

// -- kv_loader ------------------------------------------------------------------

kv_loader::kv_loader(private_tag, std::unique_ptr<loader_engine> engine)
  : engine_(std::move(engine)) {}

kv_loader::~kv_loader() {
  engine_->stop();
}

result<std::unique_ptr<kv_loader>> kv_loader::create(loader_options options) {
  if (options.queue_depth == 0 || options.queue_depth > 4096)
    return make_error(errc::invalid_argument, "loader queue_depth must be in 1..4096");
  if (options.buffer_pool_bytes < page_bytes)
    return make_error(errc::invalid_argument, "loader buffer pool must hold at least 4 KiB");
  if (options.decode_threads == 0)
    options.decode_threads = 1;
  std::unique_ptr<loader_engine> engine;
  if (options.mode != io_mode::pread) {
    auto uring = make_uring_engine(options);
    if (uring)
      engine = std::move(*uring);
    else if (options.mode == io_mode::io_uring)
      return std::move(uring).err();
  }
  if (!engine)
    engine = make_pread_engine(options);
  return std::make_unique<kv_loader>(private_tag{}, std::move(engine));
}

load_handle kv_loader::load(load_source source, compiled_image* dst) {
  auto s = std::make_shared<load_state>();
  s->source = std::move(source);
  s->dst = dst;
  engine_->submit(s);
  return load_handle{std::move(s)};
}

load_handle kv_loader::load(entry_lease lease, compiled_image* dst) {
  auto held = std::make_shared<entry_lease>(std::move(lease));
  load_source src;
  src.path = held->path();
  src.expected_key = held->header().key;
  src.on_corrupt = [held](const error& why) {
    error e = held->report_corrupt(why);
    held->release();
    return e;
  };
  src.on_loaded = [held](const compiled_image& img) {
    held->promote(img);
    held->release();
  };
  return load(std::move(src), dst);
}

std::string_view kv_loader::io_name() const {
  return engine_->name();
}

loader_stats kv_loader::stats() const {
  return engine_->stats();
}

// -- loader_engine --------------------------------------------------------------

loader_stats loader_engine::stats() const {
  return loader_stats{entries_ok_.load(), entries_failed_.load(), bytes_read_.load(),
                      direct_opens_.load(), buffered_opens_.load()};
}

void loader_engine::submit(const std::shared_ptr<load_state>& s) {
  s->seq = entry_seq_.fetch_add(1);
  const char* path = s->source.path.c_str();
  int fd = -1;
  if (options_.direct_io) {
    fd = ::open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (fd >= 0)
      ++direct_opens_;
  }
  if (fd < 0 && (!options_.direct_io || errno == EINVAL)) {
    fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
      ++buffered_opens_;
  }
  if (fd < 0) {
    const int err = errno;
    std::lock_guard lock{s->mutex};
    s->finished = true;
    s->err = make_error(err == ENOENT ? errc::not_found : errc::io_error, "cannot open KV entry ",
                        s->source.path.string(), ": ", std::strerror(err));
    ++entries_failed_;
    return;
  }
  s->fd = unique_fd{fd};
  struct stat st {};
  if (::fstat(fd, &st) == 0)
    s->file_size = uint64_t(st.st_size);
  // The header and the file's tail (which holds the checksum table of any
  // entry up to ~340 layers) are read together: one round trip before the
  // sections instead of two. A stored tail waits for its header; at most
  // queue_depth headers can be waiting for a buffer, so this budget check
  // keeps one available (no deadlock on a small pool).
  const uint64_t tail_len = std::min<uint64_t>(
      s->file_size >= page_bytes ? s->file_size - page_bytes : 0, 4 * page_bytes);
  const bool with_tail = tail_len > 0 && s->file_size % page_bytes == 0 &&
                         pool_.budget() >= (options_.queue_depth + 1) * (tail_len + page_bytes);
  s->meta_left = with_tail ? 2 : 1;
  auto op = std::make_unique<read_op>();
  op->entry = s;
  op->what = read_op::kind::header;
  op->length = page_bytes;
  enqueue(std::move(op));
  if (with_tail) {
    auto tail = std::make_unique<read_op>();
    tail->entry = s;
    tail->what = read_op::kind::tail;
    tail->length = tail_len;
    tail->offset = s->file_size - tail->length;
    enqueue(std::move(tail));
  }
}

void loader_engine::enqueue(std::unique_ptr<read_op> op) {
  load_state& s = *op->entry;
  {
    std::lock_guard lock{s.mutex};
    ++s.outstanding;
  }
  ++pending_ops_;
  if (op->length > pool_.budget()) {
    fail(s, make_error(errc::out_of_memory, "a read of ", std::to_string(op->length),
                       " bytes does not fit the loader buffer pool of ",
                       std::to_string(pool_.budget()), " bytes; raise buffer_pool_bytes"));
    retire(s);
    return;
  }
  {
    std::lock_guard lock{queue_mutex_};
    const auto key = std::make_tuple(op->rank(), s.seq, op_seq_++);
    ready_.emplace(key, std::move(op));
  }
  queue_changed_.notify_all();
}

std::unique_ptr<read_op> loader_engine::pop_locked() {
  while (!ready_.empty()) {
    auto node = ready_.extract(ready_.begin());
    auto op = std::move(node.mapped());
    if (!op->entry->failed.load()) {
      return op;
    }
    retire(*op->entry);
  }
  return nullptr;
}

void loader_engine::retire(load_state& s) {
  {
    std::lock_guard lock{s.mutex};
    if (--s.outstanding == 0 && s.finished)
      s.changed.notify_all();
  }
  if (--pending_ops_ == 0)
    queue_changed_.notify_all();
}

void loader_engine::fail(load_state& s, error err) {
  if (s.failed.exchange(true))
    return;
  if (err.code == errc::corrupt_data && s.source.on_corrupt)
    err = s.source.on_corrupt(err);
  ++entries_failed_;
  std::lock_guard lock{s.mutex};
  s.err = std::move(err);
  s.finished = true;
  s.changed.notify_all();
}

void loader_engine::complete(std::unique_ptr<read_op> op) {
  load_state& s = *op->entry;
  if (!s.failed.load()) {
    if (op->error_no != 0)
      fail(s, make_error(errc::io_error, "cannot read KV entry ", s.source.path.string(), ": ",
                         std::strerror(op->error_no)));
    else if (auto st = process(*op); !st)
      fail(s, std::move(st).err());
  }
  op->buf.reset();
  auto entry = std::move(op->entry);
  op.reset();
  retire(*entry);
}

status loader_engine::process(read_op& op) {
  load_state& s = *op.entry;
  bytes_read_ += op.done;
  const std::span<const uint8_t> bytes{op.buf.data(), op.done};
  switch (op.what) {
  case read_op::kind::header: {
    auto h = decode_header(bytes.first(std::min<size_t>(bytes.size(), page_bytes)));
    if (!h)
      return std::move(h).err();
    if (s.source.expected_key && h->key != *s.source.expected_key)
      return make_error(errc::corrupt_data, "KV entry ", s.source.path.string(),
                        " holds a different key than its file name");
    if (s.file_size != h->file_bytes())
      return make_error(errc::corrupt_data, "KV entry ", s.source.path.string(), " is ",
                        std::to_string(s.file_size), " bytes but its header says ",
                        std::to_string(h->file_bytes()), " (truncated)");
    {
      std::lock_guard lock{s.mutex};
      s.header = *h;
      s.layer_done.assign(size_t(h->n_layers), 0);
      s.parts_left = 1 + h->n_layers;
      // Every element is overwritten below: a destination that already has
      // this geometry (a reused buffer) is not re-allocated or zero-filled.
      compiled_image& d = *s.dst;
      if (d.n_tokens != h->n_tokens || d.n_layers != h->n_layers || d.hidden != h->hidden ||
          d.kv_dim != h->kv_dim || d.embeddings.size() != size_t(h->n_tokens) * h->hidden ||
          d.k.size() != d.layer_elems() * h->n_layers ||
          d.v.size() != d.layer_elems() * h->n_layers)
        d.resize(h->n_tokens, h->n_layers, h->hidden, h->kv_dim);
      d.grid = h->grid;
    }
    return metadata_arrived(op);
  }
  case read_op::kind::tail:
    return metadata_arrived(op);
  case read_op::kind::table: {
    auto rows = decode_table(s.header, bytes);
    if (!rows)
      return std::move(rows).err();
    s.rows = std::move(*rows); // written before any section op exists
    queue_sections(op.entry);
    return {};
  }
  case read_op::kind::embeddings:
  case read_op::kind::layer:
    break;
  }
  const entry_header& h = s.header;
  const auto convert = [&](int section, std::span<const uint8_t> padded, float* dst) -> status {
    MOSAIC_TRY(verify_section(padded, s.rows[size_t(section)], section));
    decode(h.dtype, reinterpret_cast<const uint16_t*>(padded.data()), dst,
           h.section_payload(section) / 2);
    return {};
  };
  if (op.what == read_op::kind::embeddings) {
    MOSAIC_TRY(convert(0, bytes, s.dst->embeddings.data()));
  } else {
    const int ks = 1 + 2 * op.layer;
    const uint64_t kpad = h.section_padded(ks);
    if (bytes.size() < kpad)
      return make_error(errc::corrupt_data, "KV entry ", section_name(ks), " is truncated");
    MOSAIC_TRY(convert(ks, bytes.first(kpad), s.dst->k_layer(op.layer)));
    MOSAIC_TRY(convert(ks + 1, bytes.subspan(kpad), s.dst->v_layer(op.layer)));
  }
  bool all_done = false;
  {
    std::lock_guard lock{s.mutex};
    if (op.what == read_op::kind::embeddings)
      s.embeddings_done = true;
    else
      s.layer_done[size_t(op.layer)] = 1;
    all_done = --s.parts_left == 0;
    if (!all_done)
      s.changed.notify_all();
  }
  if (all_done) {
    if (s.source.on_loaded)
      s.source.on_loaded(*s.dst);
    ++entries_ok_;
    std::lock_guard lock{s.mutex};
    s.finished = true;
    s.changed.notify_all();
  }
  return {};
}

void loader_engine::queue_sections(const std::shared_ptr<load_state>& s) {
  const entry_header& h = s->header;
  auto emb = std::make_unique<read_op>();
  emb->entry = s;
  emb->what = read_op::kind::embeddings;
  emb->offset = h.section_offset(0);
  emb->length = h.section_padded(0);
  enqueue(std::move(emb));
  for (int l = 0; l < h.n_layers; ++l) {
    auto layer = std::make_unique<read_op>();
    layer->entry = s;
    layer->what = read_op::kind::layer;
    layer->layer = l;
    layer->offset = h.section_offset(1 + 2 * l);
    layer->length = h.section_padded(1 + 2 * l) + h.section_padded(2 + 2 * l);
    enqueue(std::move(layer));
  }
}

status loader_engine::metadata_arrived(read_op& op) {
  load_state& s = *op.entry;
  {
    std::lock_guard lock{s.mutex};
    if (op.what == read_op::kind::tail) {
      s.tail = std::move(op.buf);
      s.tail_offset = op.offset;
      s.tail_bytes = op.done;
    }
    if (--s.meta_left > 0)
      return {};
  }
  // Both arrived (this thread saw the last one): the header is verified.
  const entry_header& h = s.header;
  const uint64_t table_len = round_up_page(h.table_bytes());
  if (s.tail && h.table_offset() >= s.tail_offset &&
      h.table_offset() + table_len <= s.tail_offset + s.tail_bytes) {
    auto rows = decode_table(h, std::span<const uint8_t>{s.tail.data(), s.tail_bytes}.subspan(
                                    h.table_offset() - s.tail_offset, table_len));
    s.tail.reset();
    if (!rows)
      return std::move(rows).err();
    s.rows = std::move(*rows);
    queue_sections(op.entry);
    return {};
  }
  s.tail.reset();
  auto table = std::make_unique<read_op>();
  table->entry = op.entry;
  table->what = read_op::kind::table;
  table->offset = h.table_offset();
  table->length = table_len;
  enqueue(std::move(table));
  return {};
}

} // namespace mosaic::kv
