#include "actors/embeddings_relay.hpp"

#include <atomic>
#include <cstring>

#include <caf/all.hpp>
#include <zmq.hpp>

#include "actors/pipeline_messages.hpp"
#include "kv/transfer/receiver.hpp"
#include "kv/transfer/sender.hpp"
#include "messages/error_convert.hpp"
#include "messages/readers.hpp"

namespace mosaic::actors {

namespace {

constexpr uint64_t relay_bit = uint64_t(1) << 63;

wire::encode_result read_encode_result(const encode_result_msg& m) {
  wire::encode_result r;
  r.request_id = m->request_id();
  if (m->key() != nullptr)
    r.key = from_key(m->key());
  r.n_tokens = m->n_tokens();
  r.embeddings = read_tensor_handle(m->embeddings());
  r.encoder_cache_hit = m->encoder_cache_hit();
  r.compiled = m->compiled();
  r.encode_us = m->encode_us();
  if (auto st = to_status(m->error()); !st)
    r.err = st.err();
  return r;
}

// -- encoder node -----------------------------------------------------------------

struct gateway_state {
  node_context* ctx = nullptr;
  std::unique_ptr<kv::transfer::kv_sender> sender;
  zmq::context_t* zmq = nullptr;
  std::string endpoint;
  std::string node;
  caf::actor encoder;
  kv::transfer::sender_options options; ///< CURVE keys when the cluster has them
  uint64_t next = 1;
  static inline const char* name = "embeddings_gateway";
};

using gateway_ptr = caf::stateful_actor<gateway_state>*;

/// Pushes `emb` to the requesting node as transfer `id`.
status push(gateway_state& st, uint64_t id, const std::vector<float>& emb) {
  if (!st.sender) {
    kv::transfer::sender_options so = st.options;
    so.peer_timeout = std::chrono::milliseconds{3000};
    auto s = kv::transfer::kv_sender::connect(*st.zmq, st.endpoint, so);
    if (!s)
      return std::move(s).err();
    st.sender = std::move(*s);
  }
  auto bytes = std::as_bytes(std::span{emb});
  auto sent = [&]() -> status {
    MOSAIC_TRY(st.sender->begin(id, 1, bytes.size()));
    MOSAIC_TRY(st.sender->send_layer(0, bytes));
    return st.sender->finish();
  }();
  if (!sent)
    st.sender.reset(); // a fresh socket next time (the peer may have restarted)
  return sent;
}

caf::behavior embeddings_gateway(gateway_ptr self, node_context* ctx, zmq::context_t* zmq,
                                 std::string endpoint, std::string node, caf::actor encoder,
                                 kv::transfer::sender_options options) {
  auto& st = self->state;
  st.options = std::move(options);
  st.ctx = ctx;
  st.zmq = zmq;
  st.endpoint = std::move(endpoint);
  st.node = std::move(node);
  st.encoder = std::move(encoder);
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& v) {
    self->send(self->state.encoder, v.move_content_to_message());
    return caf::result<caf::message>{caf::delegated<caf::message>{}};
  });
  return {
      [self](encode_atom, const encode_request_msg& m) {
        auto rp = self->make_response_promise<encode_result_msg>();
        self->request(self->state.encoder, until_deadline(m->deadline_unix_ns()), encode_atom_v, m)
            .then(
                [self, rp](const encode_result_msg& r) mutable {
                  auto& st = self->state;
                  auto res = read_encode_result(r);
                  auto emb = st.ctx->embeddings.take(res.embeddings.id);
                  if (res.err.code != errc::none || !emb) {
                    rp.deliver(r);
                    return;
                  }
                  const uint64_t id = relay_bit | st.next++;
                  if (auto ok = push(st, id, *emb); !ok) {
                    res.err = make_error(ok.err().code, "embeddings of request ",
                                         std::to_string(res.request_id), " to ", st.endpoint, ": ",
                                         ok.err().message);
                    res.embeddings = {};
                    {
                      rp.deliver(make_encode_result_msg(res));
                      return;
                    }
                  }
                  res.embeddings.node = st.node;
                  res.embeddings.endpoint = st.endpoint;
                  res.embeddings.id = id;
                  rp.deliver(make_encode_result_msg(res));
                },
                [rp](const caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
  };
}

// -- linker node ----------------------------------------------------------------------

struct intake_state {
  node_context* ctx = nullptr;
  kv::transfer::kv_receiver* receiver = nullptr;
  caf::actor link;
  static inline const char* name = "embeddings_intake";
};

using intake_ptr = caf::stateful_actor<intake_state>*;

result<std::vector<float>> receive(kv::transfer::kv_receiver& receiver, uint64_t id,
                                   const wire::tensor_handle& h) {
  constexpr std::chrono::milliseconds wait{10000};
  auto in = receiver.take(id, wait);
  if (!in)
    return std::move(in).err();
  MOSAIC_TRY((*in)->wait_all(wait));
  uint64_t expect = sizeof(float);
  for (auto d : h.shape)
    expect *= d;
  if ((*in)->n_layers() != 1 || (*in)->layer_bytes() != expect)
    return make_error(errc::invalid_argument, "embeddings transfer ", std::to_string(id), " has ",
                      std::to_string((*in)->layer_bytes()), " bytes, the answer says ",
                      std::to_string(expect));
  std::vector<float> out(expect / sizeof(float));
  auto bytes = (*in)->layer(0);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

caf::behavior embeddings_intake(intake_ptr self, node_context* ctx,
                                kv::transfer::kv_receiver* receiver, caf::actor link) {
  auto& st = self->state;
  st.ctx = ctx;
  st.receiver = receiver;
  st.link = std::move(link);
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& v) {
    self->send(self->state.link, v.move_content_to_message());
    return caf::result<caf::message>{caf::delegated<caf::message>{}};
  });
  return {
      [self](encode_atom, const encode_request_msg& m) {
        auto rp = self->make_response_promise<encode_result_msg>();
        // The linker's decoded-pixels handle goes along: the remote
        // encoder finds no entry of this request there and decodes the
        // bytes (encoder_actor.cpp, lent_pixels).
        self->request(self->state.link, until_deadline(m->deadline_unix_ns()), encode_atom_v, m)
            .then(
                [self, rp](const encode_result_msg& r) mutable {
                  auto& st = self->state;
                  auto res = read_encode_result(r);
                  if (res.err.code != errc::none || (res.embeddings.id & relay_bit) == 0) {
                    rp.deliver(r);
                    return;
                  }
                  auto emb = receive(*st.receiver, res.embeddings.id, res.embeddings);
                  if (!emb) {
                    res.err = make_error(emb.err().code, "embeddings of request ",
                                         std::to_string(res.request_id), " from node '",
                                         res.embeddings.node, "': ", emb.err().message);
                    res.embeddings = {};
                    {
                      rp.deliver(make_encode_result_msg(res));
                      return;
                    }
                  }
                  res.embeddings.id = st.ctx->embeddings.put(
                      std::make_shared<const std::vector<float>>(std::move(*emb)));
                  res.embeddings.node.clear();
                  res.embeddings.endpoint.clear();
                  rp.deliver(make_encode_result_msg(res));
                },
                [rp](const caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
  };
}

} // namespace

caf::actor spawn_embeddings_gateway(caf::actor_system& sys, node_context* ctx, zmq::context_t& zmq,
                                    std::string endpoint, std::string node, caf::actor encoder,
                                    kv::transfer::sender_options options) {
  return sys.spawn<caf::detached>(embeddings_gateway, ctx, &zmq, std::move(endpoint),
                                  std::move(node), std::move(encoder), std::move(options));
}

caf::actor spawn_embeddings_intake(caf::actor_system& sys, node_context* ctx,
                                   kv::transfer::kv_receiver* receiver, caf::actor encoder_link) {
  return sys.spawn<caf::detached>(embeddings_intake, ctx, receiver, std::move(encoder_link));
}

} // namespace mosaic::actors
