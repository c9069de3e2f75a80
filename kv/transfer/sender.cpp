#include "kv/transfer/sender.hpp"

#include <algorithm>
#include <cstdlib>

#include "engine/sanitizer.hpp"

namespace mosaic::kv::transfer {

namespace {

using clock_type = std::chrono::steady_clock;

error unavailable(const std::string& endpoint, std::string_view what) {
  return make_error(errc::unavailable, "KV receiver at ", endpoint, " ", what);
}

} // namespace

result<std::unique_ptr<kv_sender>>
kv_sender::connect(zmq::context_t& context, const std::string& endpoint, sender_options options) {
  if (options.chunk_bytes == 0 || options.peer_timeout.count() <= 0 ||
      options.max_queued_bytes == 0)
    return make_error(errc::invalid_argument,
                      "KV sender: chunk_bytes, max_queued_bytes and peer_timeout must be > 0");
  try {
    zmq::socket_t socket(context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::sndtimeo, static_cast<int>(options.peer_timeout.count()));
    if (const auto& c = options.curve) {
      if (c->server_key.size() != 40 || c->public_key.size() != 40 || c->secret_key.size() != 40)
        return make_error(errc::invalid_argument,
                          "KV sender: CURVE keys are 40-character Z85 strings");
      socket.set(zmq::sockopt::curve_serverkey, c->server_key);
      socket.set(zmq::sockopt::curve_publickey, c->public_key);
      socket.set(zmq::sockopt::curve_secretkey, c->secret_key);
    }
    socket.connect(endpoint);
    return std::make_unique<kv_sender>(private_tag{}, std::move(socket), endpoint, options);
  } catch (const zmq::error_t& e) {
    return make_error(errc::invalid_argument, "KV sender cannot connect to '", endpoint,
                      "': ", e.what(), " (expected tcp://HOST:PORT)");
  }
}

kv_sender::kv_sender(private_tag, zmq::socket_t socket, std::string endpoint,
                     sender_options options)
  : socket_(std::move(socket)), endpoint_(std::move(endpoint)), options_(options),
    queue_(std::make_shared<queue_state>()) {}

status kv_sender::send_frame(const frame_header& h, std::span<const std::byte> payload) {
  auto header = encode(h);
  try {
    if (!socket_.send(zmq::buffer(header.data(), header.size()), zmq::send_flags::sndmore) ||
        !socket_.send(zmq::buffer(payload.data(), payload.size()), zmq::send_flags::none))
      return unavailable(endpoint_, "accepts no data (down, or its queue is full)");
  } catch (const zmq::error_t& e) {
    return make_error(errc::io_error, "KV send to ", endpoint_, ": ", e.what());
  }
  return {};
}

result<frame_header> kv_sender::receive(std::string& payload, std::chrono::milliseconds timeout) {
  auto until = clock_type::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock_type::now());
    if (left.count() <= 0)
      return unavailable(endpoint_, "did not answer in time");
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    try {
      if (zmq::poll(&item, 1, left) == 0)
        continue;
      zmq::message_t header, body;
      if (!socket_.recv(header, zmq::recv_flags::dontwait))
        continue;
      if (header.more() && !socket_.recv(body, zmq::recv_flags::dontwait))
        return make_error(errc::corrupt_data, "KV receiver sent a truncated frame");
      while (body.more()) { // drain unexpected extra parts
        zmq::message_t extra;
        if (!socket_.recv(extra, zmq::recv_flags::dontwait))
          break;
        body.move(extra);
      }
      auto h = decode_header({static_cast<const std::byte*>(header.data()), header.size()});
      if (!h)
        return std::move(h).err();
      if (h->request_id != request_id_)
        continue; // a stale answer to an earlier transfer
      payload.assign(static_cast<const char*>(body.data()), body.size());
      return h;
    } catch (const zmq::error_t& e) {
      return make_error(errc::io_error, "KV receive from ", endpoint_, ": ", e.what());
    }
  }
}

status kv_sender::await(frame_kind want) {
  std::string payload;
  for (;;) {
    auto h = receive(payload, options_.peer_timeout);
    if (!h)
      return fail(std::move(h).err());
    switch (h->kind) {
    case frame_kind::credit:
      credits_ += h->size;
      break;
    case frame_kind::error: {
      auto err = decode_error({reinterpret_cast<const std::byte*>(payload.data()), payload.size()});
      err.message = "KV receiver at " + endpoint_ + " refused the transfer: " + err.message;
      return fail(std::move(err));
    }
    default:
      if (h->kind == want) {
        if (want == frame_kind::accept)
          credits_ = h->size;
        return {};
      }
      break; // an answer this state does not expect: ignore it
    }
    if (want == frame_kind::credit && credits_ > 0)
      return {};
  }
}

status kv_sender::fail(error err) {
  if (active_) {
    auto reason = err.message;
    (void)send_frame({frame_kind::abort, request_id_}, std::as_bytes(std::span{reason}));
  }
  active_ = false;
  ++stats_.failures;
  return err;
}

status kv_sender::begin(uint64_t request_id, uint32_t n_layers, uint64_t layer_bytes,
                        std::span<const std::byte> meta) {
  if (active_)
    abort("superseded by a new transfer");
  if (n_layers == 0 || layer_bytes == 0)
    return make_error(errc::invalid_argument, "KV transfer of zero layers or zero bytes");
  request_id_ = request_id;
  credits_ = 0;
  auto head = encode(begin_payload{n_layers, layer_bytes});
  std::string body(reinterpret_cast<const char*>(head.data()), head.size());
  body.append(reinterpret_cast<const char*>(meta.data()), meta.size());
  MOSAIC_TRY(send_frame({frame_kind::begin, request_id},
                        {reinterpret_cast<const std::byte*>(body.data()), body.size()}));
  active_ = true;
  return await(frame_kind::accept);
}

status kv_sender::send_chunk(const frame_header& h, zmq::message_t& body) {
  auto header = encode(h);
  try {
    if (!socket_.send(zmq::buffer(header.data(), header.size()), zmq::send_flags::sndmore) ||
        !socket_.send(body, zmq::send_flags::none))
      return unavailable(endpoint_, "accepts no data (down, or its queue is full)");
  } catch (const zmq::error_t& e) {
    return make_error(errc::io_error, "KV send to ", endpoint_, ": ", e.what());
  }
  return {};
}

status kv_sender::send_layer(uint32_t layer, std::span<const std::byte> bytes) {
  return send_chunks(layer, bytes, nullptr);
}

status kv_sender::send_layer(uint32_t layer, std::span<const std::byte> bytes,
                             std::shared_ptr<const void> owner) {
  if (!owner)
    return make_error(errc::invalid_argument, "KV send_layer: a zero-copy send needs an owner");
  return send_chunks(layer, bytes, &owner);
}

/// What a queued chunk message holds until ZeroMQ is done with it.
struct kv_sender::chunk_hold {
  std::shared_ptr<const void> owner; ///< zero-copy: keeps the caller's bytes alive
  std::shared_ptr<queue_state> queue;
  size_t bytes = 0;
};

kv_sender::queue_state::~queue_state() {
  for (auto* b : buffers)
    std::free(b);
}

std::byte* kv_sender::take_buffer() {
  {
    std::lock_guard lock{queue_->mutex};
    if (!queue_->buffers.empty()) {
      auto* b = queue_->buffers.back();
      queue_->buffers.pop_back();
      return b;
    }
  }
  return static_cast<std::byte*>(std::malloc(options_.chunk_bytes));
}

bool kv_sender::ready_for(size_t bytes) const {
  const size_t chunks = (bytes + options_.chunk_bytes - 1) / options_.chunk_bytes;
  if (!active_ || credits_ < chunks)
    return false;
  std::lock_guard lock{queue_->mutex};
  return queue_->bytes + bytes <= options_.max_queued_bytes;
}

status kv_sender::wait_for_queue(size_t next) {
  auto& q = *queue_;
  std::unique_lock lock{q.mutex};
  if (q.bytes == 0 || q.bytes + next <= options_.max_queued_bytes)
    return {};
  auto t0 = clock_type::now();
  bool drained = q.drained.wait_for(lock, options_.peer_timeout, [&] {
    return q.bytes == 0 || q.bytes + next <= options_.max_queued_bytes;
  });
  stats_.queue_wait_seconds += std::chrono::duration<double>(clock_type::now() - t0).count();
  if (!drained)
    return unavailable(endpoint_, "takes no data (ZeroMQ has not sent what is queued)");
  return {};
}

status kv_sender::send_chunks(uint32_t layer, std::span<const std::byte> bytes,
                              const std::shared_ptr<const void>* owner) {
  if (!active_)
    return make_error(errc::invalid_argument, "KV send_layer without begin");
  // ZeroMQ calls this from its I/O thread once the message is on the
  // wire (in the kernel's socket buffer) or dropped.
  static constexpr auto release = [](void* data, void* hint) noexcept {
    auto* hold = static_cast<chunk_hold*>(hint);
    tsan_acquire(hold); // handed over through libzmq's own queues
    auto& q = *hold->queue;
    {
      std::lock_guard lock{q.mutex};
      q.bytes -= hold->bytes;
      if (!hold->owner) { // a copying send's buffer: kept for the next chunk
        if (q.buffers.size() < queue_state::spare_buffers)
          q.buffers.push_back(static_cast<std::byte*>(data));
        else
          std::free(data);
      }
    }
    q.drained.notify_one();
    delete hold;
  };
  for (size_t off = 0; off < bytes.size(); off += options_.chunk_bytes) {
    if (credits_ == 0) {
      auto t0 = clock_type::now();
      auto st = await(frame_kind::credit);
      stats_.credit_wait_seconds += std::chrono::duration<double>(clock_type::now() - t0).count();
      MOSAIC_TRY(st);
    }
    auto part = bytes.subspan(off, std::min(options_.chunk_bytes, bytes.size() - off));
    // Hash (or copy) a chunk only when ZeroMQ is about to send it: the
    // kernel then copies it out of the cache, not from memory again.
    if (auto st = wait_for_queue(part.size()); !st)
      return fail(std::move(st).err());
    frame_header h{frame_kind::chunk, request_id_, layer, off, part.size(), 0};
    std::byte* data = nullptr;
    if (owner != nullptr) {
      data = const_cast<std::byte*>(part.data());
      h.checksum = checksum(part);
    } else {
      // Copied and hashed in one pass; the copy stays in cache for the
      // kernel, which sends it next.
      data = take_buffer();
      if (data == nullptr)
        return fail(make_error(errc::out_of_memory, "KV send: no memory for a ",
                               std::to_string(part.size()), "-byte chunk"));
      h.checksum = copy_and_checksum(data, part, read_next::soon);
    }
    auto* hold = new chunk_hold{owner != nullptr ? *owner : nullptr, queue_, part.size()};
    tsan_release(hold);
    zmq::message_t body;
    try {
      body.rebuild(data, part.size(), +release, hold);
    } catch (const zmq::error_t& e) {
      if (owner == nullptr)
        std::free(data);
      delete hold;
      return fail(make_error(errc::io_error, "KV send to ", endpoint_, ": ", e.what()));
    }
    {
      std::lock_guard lock{queue_->mutex};
      queue_->bytes += part.size();
    }
    if (auto st = send_chunk(h, body); !st)
      return fail(std::move(st).err()); // `body` releases its share as it goes
    --credits_;
    ++stats_.chunks;
    stats_.bytes += part.size();
  }
  return {};
}

status kv_sender::finish() {
  if (!active_)
    return make_error(errc::invalid_argument, "KV finish without begin");
  if (auto st = send_frame({frame_kind::end, request_id_}, {}); !st)
    return fail(std::move(st).err());
  MOSAIC_TRY(await(frame_kind::done));
  active_ = false;
  ++stats_.transfers;
  return {};
}

void kv_sender::abort(std::string_view reason) noexcept {
  if (!active_)
    return;
  std::string text(reason);
  (void)send_frame({frame_kind::abort, request_id_}, std::as_bytes(std::span{text}));
  active_ = false;
}

} // namespace mosaic::kv::transfer
