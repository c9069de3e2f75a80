#pragma once

// The sending side of the host KV data plane (kv/transfer/wire.hpp): the
// prefill worker streams a request's KV, layer by layer, to the decode
// node's receiver over one ZeroMQ DEALER socket.
//
// One sender serves one peer and is driven by one thread at a time;
// transfers on it run one after another. Every wait is bounded by
// `peer_timeout`: a receiver that is down, or stops granting credit,
// turns into errc::unavailable, never a hang.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "engine/error.hpp"
#include "kv/transfer/wire.hpp"

namespace mosaic::kv::transfer {

struct sender_options {
  size_t chunk_bytes = size_t(1) << 20; ///< payload bytes per chunk
  /// Chunk bytes handed to ZeroMQ and not yet written to the socket: the
  /// sender hashes the next chunk only below this, so that the kernel
  /// copies it out of the cache (the receiver's credits bound the bytes
  /// in flight end to end; this bounds the ones not yet sent at all).
  size_t max_queued_bytes = size_t(2) << 20;
  std::chrono::milliseconds peer_timeout{5000}; ///< longest wait for an answer or credit
  /// CURVE: set, the connection is encrypted and authenticated: the
  /// receiver must hold the secret of `server_key`, and it admits this
  /// sender only if `public_key` is among its clients (Z85 keys).
  struct curve_keys {
    std::string server_key;
    std::string public_key;
    std::string secret_key;
  };
  std::optional<curve_keys> curve;
};

/// What a sender has done so far.
struct sender_stats {
  uint64_t transfers = 0; ///< finished with `done`
  uint64_t failures = 0;
  uint64_t bytes = 0;               ///< payload bytes sent
  uint64_t chunks = 0;              ///< chunks sent
  double credit_wait_seconds = 0.0; ///< time blocked on flow control
  double queue_wait_seconds = 0.0;  ///< time waiting for ZeroMQ to send queued chunks
};

class kv_sender {
public:
  /// A DEALER socket connected to `endpoint` ("tcp://10.0.0.2:7500").
  /// Connecting does not wait for the peer; the first `begin` does.
  static result<std::unique_ptr<kv_sender>>
  connect(zmq::context_t& context, const std::string& endpoint, sender_options options = {});

  /// Announces a transfer of `n_layers` sections of `layer_bytes` each,
  /// with `meta` (at most the receiver's max_meta_bytes) handed to the
  /// consumer as is. Waits for the receiver to accept it (its memory
  /// budget, limits); a previous unfinished transfer is aborted first.
  status begin(uint64_t request_id, uint32_t n_layers, uint64_t layer_bytes,
               std::span<const std::byte> meta = {});
  /// Sends one whole section (`bytes.size() == layer_bytes`). Layers may
  /// go in any order, each once; returns once every chunk is handed to
  /// ZeroMQ, blocking while the receiver has granted no credit.
  status send_layer(uint32_t layer, std::span<const std::byte> bytes);
  /// The same without copying: each chunk's ZeroMQ message points into
  /// `bytes`, and holds a share of `owner` (which must keep `bytes`
  /// alive) until ZeroMQ has put it on the wire or dropped it, so a
  /// transfer that fails with chunks still queued frees nothing early.
  status send_layer(uint32_t layer, std::span<const std::byte> bytes,
                    std::shared_ptr<const void> owner);
  /// Whether send_layer of `bytes` bytes would go out without waiting:
  /// enough credits already granted and room in the send queue. False is
  /// conservative (credits granted but not yet read count as none), so a
  /// caller that releases a lock on false at worst releases it needlessly.
  bool ready_for(size_t bytes) const;
  /// Ends the transfer and waits until the receiver has verified every
  /// byte (`done`) or reports why not.
  status finish();
  /// Gives up the running transfer (the receiver fails it for its consumer).
  void abort(std::string_view reason) noexcept;

  const std::string& endpoint() const noexcept { return endpoint_; }
  const sender_stats& stats() const noexcept { return stats_; }

  struct private_tag {};
  kv_sender(private_tag, zmq::socket_t socket, std::string endpoint, sender_options options);

private:
  /// Bytes of chunks queued in ZeroMQ; its I/O thread subtracts what it sent.
  /// Also keeps a copying send's chunk buffers (chunk_bytes each) for the
  /// next chunks: a fresh one per chunk was page-faulted in every time.
  struct queue_state {
    std::mutex mutex;
    std::condition_variable drained;
    uint64_t bytes = 0;
    std::vector<std::byte*> buffers; // chunk_bytes each, at most spare_buffers
    static constexpr size_t spare_buffers = 8;
    ~queue_state();
  };
  struct chunk_hold;
  /// A buffer of chunk_bytes for a copying send (a kept one, or fresh).
  std::byte* take_buffer();
  /// Waits (at most peer_timeout) until `next` more bytes fit max_queued_bytes.
  status wait_for_queue(size_t next);
  status send_frame(const frame_header& h, std::span<const std::byte> payload);
  /// Sends one chunk frame whose payload is `body` (copied or zero-copy).
  status send_chunk(const frame_header& h, zmq::message_t& body);
  status send_chunks(uint32_t layer, std::span<const std::byte> bytes,
                     const std::shared_ptr<const void>* owner);
  /// Receives one frame of the running transfer (others are stale and dropped).
  result<frame_header> receive(std::string& payload, std::chrono::milliseconds timeout);
  /// Waits for a frame of kind `want`; credit frames on the way add credit.
  status await(frame_kind want);
  status fail(error err);

  zmq::socket_t socket_;
  std::string endpoint_;
  sender_options options_;
  uint64_t request_id_ = 0;
  bool active_ = false;
  uint64_t credits_ = 0;
  sender_stats stats_;
  std::shared_ptr<queue_state> queue_; // shared with queued chunks, which may outlive this
};

} // namespace mosaic::kv::transfer
