#pragma once

// Prefill → decode across processes (multi-node): the request's KV moves
// over the host data plane (kv/transfer/, ZeroMQ on the decode node's
// data_port) instead of by handle, and the DecodeTask travels over CAF as
// in one process, naming the transfer by the request id.
//
// Prefill node: `kv_outbox::send` gathers each layer of the request's
// kv_sequence from the paged pool (K rows then V rows, f32, token order)
// and streams it to the decode node, layer 0 first, after the DecodeTask
// was sent (so that the decode side is already waiting). Decode node: the
// `kv_intake` actor is what the node directory hands remote prefill
// workers as "decode": it takes the transfer from the node's receiver,
// allocates a sequence in its own pool and scatters each layer the
// moment that layer has arrived and been verified (receipt of later
// layers overlaps the scatter of earlier ones), then puts the sequence
// in node_context::sequences and delegates the task to the decode worker,
// which finds it by handle as in one process. The first token therefore
// leaves the decode worker after the whole transfer: TTFT includes it.
//
// Layer section layout: [2, n_tokens, kv_dim] f32 (K, then V); meta: the
// 8 bytes n_tokens (u32 LE), kv_dim (u32 LE), checked by the intake.

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "messages/caf_types.hpp"

#include "actors/node_context.hpp"
#include "actors/peer_link.hpp"

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

/// The prefill node's sending end towards one decode node.
class kv_outbox {
public:
  /// `endpoint`: the decode node's data plane ("tcp://10.0.0.3:7502").
  kv_outbox(zmq::context_t& context, std::string endpoint, peer_address decode_peer,
            std::shared_ptr<peer_health> health);
  ~kv_outbox();

  /// Streams `seq` (the KV of request `request_id`) to the decode node,
  /// layer by layer; blocks until the receiver verified every byte.
  /// errc::unavailable at once when the decode node is known to be down.
  status send(uint64_t request_id, const kv_sequence& seq, node_context& ctx);

  const std::string& endpoint() const { return endpoint_; }
  const peer_address& peer() const { return peer_; }
  /// False once the decode node's links saw it go down (until it is back).
  bool up() const;

private:
  zmq::context_t& context_;
  std::string endpoint_;
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

/// prefill → remote decode: picks a decode node, sends it `task`
/// (kv.sequence = request id), then streams `seq` through its outbox; the
/// returned promise gets the decode worker's last token event, or the
/// first error (a failed transfer is reported as such, not as the decode
/// side's consequence of it).
caf::typed_response_promise<token_event_msg>
hand_over_remote(caf::event_based_actor* self, const remote_decoders& decoders, node_context& ctx,
                 wire::decode_task task, kv_sequence seq, const caf::actor& sink);

/// The decode node's intake of remote KV (see above). `receiver` must
/// outlive the actor.
caf::actor spawn_kv_intake(caf::actor_system& sys, node_context* ctx,
                           kv::transfer::kv_receiver* receiver, caf::actor decode);

} // namespace mosaic::actors
