#pragma once

// Prefill → decode across processes (multi-node): the request's KV moves
// over the host data plane (kv/transfer/, ZeroMQ on the decode node's
// data_port) instead of by handle, and the DecodeTask travels over CAF as
// in one process, naming the transfer by the request id.
//
// Prefill node: once the prefill worker has its link plan (and so the
// request's geometry: n_tokens, n_layers, kv_dim), it opens a `kv_stream`
// to the picked decode node (`begin`), and the engine's per-layer hook
// (prefill_options::layer_done) gathers layer l of the sequence from the
// paged pool (K rows then V rows, f32, token order) and hands it to ZeroMQ
// without a copy, so the decode node receives layer l while the pass
// computes l+1. After the pass the DecodeTask (first token, ...) goes over
// CAF, then the stream's `end`, which waits until the decode node verified
// every byte. A failure mid-pass aborts the transfer (the decode node
// fails it for its consumer) and fails the request with that error; a
// pass re-run after a failed library load aborts and begins again.
//
// Decode node: the `kv_intake` actor is what the node directory hands
// remote prefill workers as "decode". On the DecodeTask it takes the
// transfer from the node's receiver (whose layers have usually arrived
// by then: receiver_stats::layers_early counts those), allocates a
// sequence in its own pool and scatters each layer once it has arrived
// and been verified, then puts the sequence in node_context::sequences
// and delegates the task to the decode worker, which finds it by handle
// as in one process. The first token therefore leaves the decode worker
// after the whole transfer: TTFT includes it.
//
// Layer section layout: [2, n_tokens, kv_dim] f32 (K, then V); meta: the
// 8 bytes n_tokens (u32 LE), kv_dim (u32 LE), checked by the intake.

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "messages/caf_types.hpp"

#include "actors/node_context.hpp"
#include "actors/peer_link.hpp"
#include "kv/transfer/sender.hpp"

namespace zmq {
class context_t;
}

namespace mosaic::kv::transfer {
class kv_receiver;
class kv_sender;
} // namespace mosaic::kv::transfer

namespace mosaic::actors {

/// Bytes of one layer section of a sequence of `n_tokens` tokens.
uint64_t kv_layer_bytes(uint32_t n_tokens, uint32_t kv_dim);

class kv_outbox;

/// One request's KV on its way to a decode node, sent layer by layer
/// while the prefill pass runs. Holds its outbox (one transfer at a time
/// per decode node) until it ends; destroying it unfinished aborts it.
class kv_stream {
public:
  ~kv_stream();
  kv_stream(const kv_stream&) = delete;
  kv_stream& operator=(const kv_stream&) = delete;

  /// Gathers layer `layer` of `seq`'s first n_tokens tokens from the pool
  /// and sends it (zero-copy; blocks only while the decode node grants
  /// no credit or the socket's queue is full). Called from
  /// prefill_options::layer_done, holding the node's compute mutex in
  /// `compute`: the gather needs it, the wait for the network does not, so
  /// when the send would wait the mutex is released around it (decode
  /// steps on this node run meanwhile). An error aborts the transfer.
  status send_layer(int layer, const kv_sequence& seq,
                    std::unique_lock<compute_lock>* compute = nullptr);
  /// Ends the transfer; waits until the decode node verified every byte.
  status finish();
  /// Gives the transfer up; the decode node fails it for its consumer.
  void abort(std::string_view reason) noexcept;
  uint64_t request_id() const noexcept { return request_id_; }

private:
  friend class kv_outbox;
  struct staging;
  kv_stream(kv_outbox& outbox, std::unique_lock<std::mutex> lock, uint64_t request_id,
            uint32_t n_tokens, node_context& ctx);
  error fail(error err);

  kv_outbox& outbox_;
  std::unique_lock<std::mutex> lock_;
  uint64_t request_id_;
  uint32_t n_tokens_;
  node_context& ctx_;
  std::unique_ptr<staging> staging_;
  int next_layer_ = 0;
  bool open_ = true;
};

/// The prefill node's sending end towards one decode node.
class kv_outbox {
public:
  /// `endpoint`: the decode node's data plane ("tcp://10.0.0.3:7502").
  /// `options`: the sender's (CURVE keys when the cluster has them).
  kv_outbox(zmq::context_t& context, std::string endpoint, peer_address decode_peer,
            std::shared_ptr<peer_health> health, kv::transfer::sender_options options = {});
  ~kv_outbox();

  /// Begins the transfer of request `request_id`'s KV (`n_tokens` tokens
  /// of this node's model) and waits until the decode node accepted it.
  /// errc::unavailable at once when the decode node is known to be down.
  result<std::unique_ptr<kv_stream>> open(uint64_t request_id, std::string_view tenant,
                                          uint32_t n_tokens,
                                          node_context& ctx);

  const std::string& endpoint() const { return endpoint_; }
  const peer_address& peer() const { return peer_; }
  /// False once the decode node's links saw it go down (until it is back).
  bool up() const;

private:
  friend class kv_stream;
  /// Names the request and the decode node in `err`; drops the socket so
  /// that the next transfer starts on a fresh one (the peer may restart).
  error failed(uint64_t request_id, error err);

  zmq::context_t& context_;
  std::string endpoint_;
  kv::transfer::sender_options options_;
  peer_address peer_;
  std::shared_ptr<peer_health> health_;
  std::mutex mutex_; // one transfer at a time on the sender
  std::unique_ptr<kv::transfer::kv_sender> sender_;
};

/// The decode nodes a prefill worker hands requests to. With several, a
/// request goes to the one with the fewest requests in flight among those
/// up; one that is down is skipped (failover of requests not yet handed
/// over). Used by the prefill worker's thread only.
class remote_decoders {
public:
  struct target {
    caf::actor link; ///< peer_link to the node's "decode" (its kv_intake)
    std::shared_ptr<kv_outbox> outbox;
    int inflight = 0;
  };
  void add(caf::actor link, std::shared_ptr<kv_outbox> outbox);
  /// The up target with the fewest requests in flight; errc::unavailable
  /// naming every decode node when none is up.
  result<std::shared_ptr<target>> pick() const;
  const std::vector<std::shared_ptr<target>>& targets() const { return targets_; }

private:
  std::vector<std::shared_ptr<target>> targets_;
};

/// prefill → remote decode, after the pass: sends `task` (kv.sequence =
/// the transfer's id, the request id) to `target`'s kv_intake, then ends
/// `stream`; the returned promise gets the decode worker's last token
/// event, or the first error (a failed transfer is reported as such, not
/// as the decode side's consequence of it).
caf::typed_response_promise<token_event_msg>
hand_over_remote(caf::event_based_actor* self, std::shared_ptr<remote_decoders::target> target,
                 wire::decode_task task, std::unique_ptr<kv_stream> stream, const caf::actor& sink);

/// The decode node's intake of remote KV (see above). `receiver` must
/// outlive the actor.
caf::actor spawn_kv_intake(caf::actor_system& sys, node_context* ctx,
                           kv::transfer::kv_receiver* receiver, caf::actor decode);

} // namespace mosaic::actors
