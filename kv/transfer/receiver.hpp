#pragma once

// The receiving side of the host KV data plane (kv/transfer/wire.hpp): a
// ROUTER socket and one thread on the decode node. Senders announce a
// transfer per request; the receiver checks it against its limits and
// memory budget, lands each chunk in place after checking its checksum,
// and lets the consumer (the decode worker) wait for each layer as it
// completes, so that receipt overlaps the sender's prefill.
//
// Lifetime and ordering: only the receiver thread writes a transfer's
// bytes, and it writes each layer's region before publishing that layer
// as complete under the transfer's mutex; a consumer reads a layer only
// after `wait_layer` returned for it, so the mutex orders the two. The
// consumer's `incoming_kv` owns the bytes and its share of the budget; it
// may outlive the receiver.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "engine/error.hpp"

namespace mosaic::kv::transfer {

struct receiver_options {
  uint32_t max_layers = 1024;
  uint64_t max_transfer_bytes = uint64_t(4) << 30; ///< one request's KV
  uint64_t budget_bytes = uint64_t(8) << 30;       ///< every unconsumed transfer together
  size_t max_meta_bytes = 64 << 10;
  /// Largest message part a peer may send (a chunk's payload; the sender's
  /// chunk_bytes is 1 MiB): libzmq drops a peer that sends a larger one
  /// before allocating it (ZMQ_MAXMSGSIZE).
  size_t max_frame_bytes = size_t(16) << 20;
  /// CURVE (libzmq's elliptic-curve encryption and authentication): set,
  /// the socket is a CURVE server with `secret_key` and accepts only peers
  /// whose public key is one of `clients` (a ZAP handler on the context's
  /// inproc://zeromq.zap.01, served by the receiver thread). Keys in Z85
  /// (40 characters), as `mosaic keys` writes them.
  struct curve_keys {
    std::string secret_key;
    std::vector<std::string> clients;
  };
  std::optional<curve_keys> curve;
  uint32_t window_chunks = 16; ///< chunks a sender may have unacknowledged
  /// A transfer whose sender sends nothing for this long fails (sender died).
  std::chrono::milliseconds idle_timeout{10000};
  /// A transfer nobody `take`s within this long is dropped (its request died).
  std::chrono::milliseconds unclaimed_ttl{60000};
};

struct receiver_stats {
  uint64_t transfers = 0; ///< completed and verified
  uint64_t failures = 0;  ///< refused, corrupt, aborted or timed out
  uint64_t checksum_failures = 0;
  uint64_t bytes = 0; ///< payload bytes landed
  uint64_t taken = 0; ///< transfers handed to a consumer by `take`
  uint64_t layers_taken = 0;
  /// Of those layers, how many had arrived whole and verified when
  /// `take` was called (a consumer that calls it when it needs the bytes,
  /// e.g. on the DecodeTask sent after the prefill pass: receipt that
  /// overlapped the sender's work).
  uint64_t layers_early = 0;
  uint64_t budget_used_bytes = 0;
  uint64_t peers_refused = 0; ///< CURVE handshakes refused (unknown public key)
  /// Transfers that landed in a buffer an earlier one had faulted in.
  uint64_t landing_reused = 0;
  /// Bytes of landing buffers kept for reuse (with budget_used_bytes,
  /// never over receiver_options::budget_bytes).
  uint64_t spare_bytes = 0;
};

/// One request's KV as it arrives.
class incoming_kv {
public:
  uint64_t request_id() const noexcept { return request_id_; }
  uint32_t n_layers() const noexcept { return n_layers_; }
  uint64_t layer_bytes() const noexcept { return layer_bytes_; }
  /// The sender's metadata bytes, as sent.
  const std::string& meta() const noexcept { return meta_; }

  /// Waits until layer `layer` arrived whole and verified; the
  /// transfer's error if it failed first; errc::timeout after `timeout`.
  status wait_layer(uint32_t layer, std::chrono::milliseconds timeout) const;
  /// Waits until the sender ended the transfer and every byte is verified.
  status wait_all(std::chrono::milliseconds timeout) const;
  /// The bytes of `layer`; read only after wait_layer(layer) succeeded.
  std::span<const std::byte> layer(uint32_t layer) const noexcept;
  /// How many layers had arrived whole and verified at or before `t`
  /// (decode-side evidence that receipt overlapped the sender's work).
  uint32_t layers_arrived_by(std::chrono::steady_clock::time_point t) const;
  /// True once the transfer ended with an error.
  bool failed() const;

  // -- used by the receiver thread ------------------------------------------------

  struct budget {
    std::mutex mutex;
    uint64_t used = 0;
    /// Landing buffers of ended transfers, kept for the next ones while
    /// they and the bytes in use fit the budget (`limit`): a fresh buffer
    /// is page-faulted in while chunks land, which perf showed costing
    /// more than the checksums. A transfer that finds no spare to reuse
    /// frees spares until that holds again, so the budget bounds both.
    std::vector<std::pair<uint64_t, std::byte*>> spare; // capacity, bytes
    uint64_t spare_bytes = 0;
    uint64_t limit = 0;  ///< receiver_options::budget_bytes
    uint64_t reused = 0; ///< transfers that took a spare
    ~budget();
  };
  incoming_kv(uint64_t request_id, uint32_t n_layers, uint64_t layer_bytes, std::string meta,
              std::shared_ptr<budget> budget);
  ~incoming_kv();
  incoming_kv(const incoming_kv&) = delete;
  incoming_kv& operator=(const incoming_kv&) = delete;

  std::byte* region(uint32_t layer) noexcept;
  /// False when the landing buffer could not be allocated.
  bool has_bytes() const noexcept { return data_ != nullptr; }
  /// Frees the bytes and returns their budget; only for a failed
  /// transfer that no consumer took (nobody can read them).
  void release_bytes() noexcept;
  /// Publishes that `bytes` more bytes of `layer` have landed.
  void landed(uint32_t layer, uint64_t bytes);
  uint64_t received(uint32_t layer) const;
  bool complete() const;
  void end(error err); ///< errc::none: every byte verified
  bool ended() const;

private:
  uint64_t request_id_;
  uint32_t n_layers_;
  uint64_t layer_bytes_;
  std::string meta_;
  std::shared_ptr<budget> budget_;
  std::byte* data_ = nullptr; // [n_layers, layer_bytes], from the budget's spares or fresh
  uint64_t capacity_ = 0;     // bytes at data_
  uint64_t reserved_ = 0;     // budget bytes held

  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<uint64_t> received_;                             // bytes landed per layer
  std::vector<std::chrono::steady_clock::time_point> arrived_; // when each became whole
  bool ended_ = false;
  error error_;
};

class kv_receiver {
public:
  /// Binds a ROUTER socket to `endpoint` ("tcp://0.0.0.0:7500"; port
  /// "*" picks a free one, see endpoint()) and starts the thread.
  static result<std::unique_ptr<kv_receiver>>
  bind(zmq::context_t& context, const std::string& endpoint, receiver_options options = {});
  /// Stops the thread; transfers still arriving fail for their consumers.
  ~kv_receiver();
  kv_receiver(const kv_receiver&) = delete;
  kv_receiver& operator=(const kv_receiver&) = delete;

  /// The bound endpoint, with the port resolved.
  const std::string& endpoint() const noexcept { return endpoint_; }

  /// The transfer of `request_id` once its sender began it (it may still
  /// be arriving, or have failed: ask the handle). errc::timeout when no
  /// sender began it within `timeout`. Each transfer is taken once.
  result<std::shared_ptr<incoming_kv>> take(uint64_t request_id, std::chrono::milliseconds timeout);

  receiver_stats stats() const;

  struct private_tag {};
  kv_receiver(private_tag, zmq::socket_t socket, std::optional<zmq::socket_t> zap,
              std::string endpoint, receiver_options options);

private:
  struct active_transfer;
  void run();
  void on_frame(std::vector<zmq::message_t>& parts);
  void reply(const std::string& peer, uint64_t request_id, int kind, uint64_t size,
             const std::string& payload = {});
  void fail(const std::string& peer, uint64_t request_id, error err);
  /// A failed transfer nobody took keeps its error for `take` but not its bytes.
  void release_if_unclaimed(const std::shared_ptr<incoming_kv>& kv);
  void expire();
  /// Answers one ZAP request: 200 for a listed CURVE public key, else 400.
  void authenticate();

  zmq::socket_t socket_;
  std::optional<zmq::socket_t> zap_;
  std::set<std::string> allowed_; ///< binary (32-byte) public keys
  std::string endpoint_;
  receiver_options options_;
  std::shared_ptr<incoming_kv::budget> budget_;

  // receiver thread only
  std::map<std::pair<std::string, uint64_t>, std::shared_ptr<active_transfer>> active_;

  mutable std::mutex mutex_; // guards unclaimed_ and stats_
  std::condition_variable cv_;
  std::map<uint64_t, std::pair<std::shared_ptr<incoming_kv>, std::chrono::steady_clock::time_point>>
      unclaimed_;
  receiver_stats stats_;

  std::atomic<bool> stop_{false};
  std::thread thread_;
};

} // namespace mosaic::kv::transfer
