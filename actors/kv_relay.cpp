#include "actors/kv_relay.hpp"

#include <algorithm>
#include <cstring>

#include <caf/all.hpp>
#include <zmq.hpp>

#include "actors/pipeline_messages.hpp"
#include "kv/transfer/receiver.hpp"
#include "kv/transfer/sender.hpp"
#include "messages/error_convert.hpp"

namespace mosaic::actors {

namespace {

constexpr size_t meta_bytes = 8;

std::array<std::byte, meta_bytes> encode_meta(uint32_t n_tokens, uint32_t kv_dim) {
  std::array<std::byte, meta_bytes> m{};
  for (int i = 0; i < 4; ++i) {
    m[size_t(i)] = std::byte((n_tokens >> (8 * i)) & 0xff);
    m[size_t(4 + i)] = std::byte((kv_dim >> (8 * i)) & 0xff);
  }
  return m;
}

uint32_t read_u32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | uint32_t(uint8_t(s[at + size_t(i)]));
  return v;
}

/// Device buffers to move one layer of a sequence between the pool and host.
struct layer_staging {
  device_buffer idx;  // [n_tokens] int32 slots
  device_buffer rows; // [n_tokens, kv_dim] f32
};

result<layer_staging> make_staging(backend& be, const std::vector<int32_t>& slots, int kv_dim) {
  layer_staging s;
  auto idx = be.allocate(std::max<size_t>(slots.size(), 1) * sizeof(int32_t));
  if (!idx)
    return std::move(idx).err();
  s.idx = std::move(*idx);
  auto rows = be.allocate(std::max<size_t>(slots.size(), 1) * size_t(kv_dim) * sizeof(float));
  if (!rows)
    return std::move(rows).err();
  s.rows = std::move(*rows);
  MOSAIC_TRY(be.upload(s.idx.data(), slots.data(), slots.size() * sizeof(int32_t)));
  return s;
}

std::chrono::milliseconds remaining(int64_t deadline_unix_ns, std::chrono::milliseconds cap) {
  if (deadline_unix_ns == 0)
    return cap;
  const auto left = std::chrono::milliseconds{(deadline_unix_ns - unix_now_ns()) / 1'000'000};
  return std::clamp(left, std::chrono::milliseconds{1}, cap);
}

} // namespace

uint64_t kv_layer_bytes(uint32_t n_tokens, uint32_t kv_dim) {
  return uint64_t(2) * n_tokens * kv_dim * sizeof(float);
}

// -- prefill side -------------------------------------------------------------------

kv_outbox::kv_outbox(zmq::context_t& context, std::string endpoint, peer_address decode_peer,
                     std::shared_ptr<peer_health> health)
  : context_(context), endpoint_(std::move(endpoint)), peer_(std::move(decode_peer)),
    health_(std::move(health)) {}

kv_outbox::~kv_outbox() = default;

status kv_outbox::send(uint64_t request_id, const kv_sequence& seq, node_context& ctx) {
  if (health_ && !health_->up(peer_.node))
    return make_error(errc::unavailable, "the decode ", peer_.describe(),
                      " is down; KV of request ", std::to_string(request_id), " not sent");
  std::lock_guard lock{mutex_};
  if (!sender_) {
    kv::transfer::sender_options so;
    so.peer_timeout = std::chrono::milliseconds{3000};
    auto s = kv::transfer::kv_sender::connect(context_, endpoint_, so);
    if (!s)
      return std::move(s).err();
    sender_ = std::move(*s);
  }
  auto& pool = ctx.engine->pool();
  auto& be = pool.owner();
  const auto n = static_cast<uint32_t>(seq.length());
  const auto kv_dim = static_cast<uint32_t>(pool.kv_dim());
  const uint64_t layer_bytes = kv_layer_bytes(n, kv_dim);
  const auto meta = encode_meta(n, kv_dim);
  auto sent = [&]() -> status {
    MOSAIC_TRY(
        sender_->begin(request_id, static_cast<uint32_t>(pool.n_layers()), layer_bytes, meta));
    auto staging = make_staging(be, seq.slots(0, int(n)), int(kv_dim));
    if (!staging) {
      sender_->abort(staging.err().message);
      return std::move(staging).err();
    }
    std::vector<std::byte> host(layer_bytes); // [2, n, kv_dim] f32
    const size_t half = layer_bytes / 2;
    for (int l = 0; l < pool.n_layers(); ++l) {
      {
        std::lock_guard compute{ctx.compute_mutex};
        const auto* idx = static_cast<const int32_t*>(staging->idx.data());
        be.gather_rows(pool.k_layer(l), idx, staging->rows.f32(), int(n), int(kv_dim));
        if (auto ok = be.download(host.data(), staging->rows.data(), half); !ok) {
          sender_->abort(ok.err().message);
          return ok;
        }
        be.gather_rows(pool.v_layer(l), idx, staging->rows.f32(), int(n), int(kv_dim));
        if (auto ok = be.download(host.data() + half, staging->rows.data(), half); !ok) {
          sender_->abort(ok.err().message);
          return ok;
        }
      }
      MOSAIC_TRY(sender_->send_layer(static_cast<uint32_t>(l), host));
    }
    return sender_->finish();
  }();
  if (!sent) {
    sender_.reset(); // a fresh socket for the next transfer (the peer may have restarted)
    return make_error(sent.err().code, "KV transfer of request ", std::to_string(request_id),
                      " to the decode ", peer_.describe(), " at ", endpoint_, ": ",
                      sent.err().message);
  }
  return {};
}

bool kv_outbox::up() const {
  return !health_ || health_->up(peer_.node);
}

void remote_decoders::add(caf::actor link, std::shared_ptr<kv_outbox> outbox) {
  auto t = std::make_shared<target>();
  t->link = std::move(link);
  t->outbox = std::move(outbox);
  targets_.push_back(std::move(t));
}

result<std::shared_ptr<remote_decoders::target>> remote_decoders::pick() const {
  std::shared_ptr<target> best;
  std::string down;
  for (const auto& t : targets_) {
    if (!t->outbox->up()) {
      down += (down.empty() ? "" : ", ") + t->outbox->peer().describe();
      continue;
    }
    if (!best || t->inflight < best->inflight)
      best = t;
  }
  if (!best)
    return make_error(errc::unavailable, "no decode node is up (", down,
                      "); retry when it is back");
  return best;
}

caf::typed_response_promise<token_event_msg>
hand_over_remote(caf::event_based_actor* self, const remote_decoders& decoders, node_context& ctx,
                 wire::decode_task task, kv_sequence seq, const caf::actor& sink) {
  auto rp = self->make_response_promise<token_event_msg>();
  auto picked = decoders.pick();
  if (!picked) {
    rp.deliver(to_caf_error(picked.err()));
    return rp;
  }
  auto target = *picked;
  auto& outbox = *target->outbox;
  auto answered = std::make_shared<bool>(false);
  const uint64_t id = task.request_id;
  task.kv.sequence = id; // the transfer's id; the intake puts the sequence there
  task.kv.node = outbox.peer().node;
  task.kv.endpoint = outbox.endpoint();
  target->inflight++;
  self->request(target->link, until_deadline(task.deadline_unix_ns), decode_atom_v,
                make_decode_task_msg(task), sink)
      .then(
          [rp, answered, target](const token_event_msg& last) mutable {
            target->inflight--;
            if (!std::exchange(*answered, true))
              rp.deliver(last);
          },
          [rp, answered, target](const caf::error& err) mutable {
            target->inflight--;
            if (!std::exchange(*answered, true))
              rp.deliver(err);
          });
  // Blocks this (detached) prefill worker for the transfer; the answer
  // above is handled after it returns.
  if (auto ok = outbox.send(id, seq, ctx); !ok) {
    *answered = true;
    rp.deliver(to_caf_error(ok.err()));
  }
  return rp;
}

// -- decode side ----------------------------------------------------------------------

namespace {

struct intake_state {
  node_context* ctx = nullptr;
  kv::transfer::kv_receiver* receiver = nullptr;
  caf::actor decode;
  static inline const char* name = "kv_intake";
};

using intake_ptr = caf::stateful_actor<intake_state>*;

/// Receives request `id`'s KV into a new sequence of this node's pool.
result<kv_sequence> receive_kv(node_context& ctx, kv::transfer::kv_receiver& receiver, uint64_t id,
                               uint32_t n_tokens, int64_t deadline_unix_ns) {
  const auto wait = remaining(deadline_unix_ns, std::chrono::milliseconds{30000});
  auto in = receiver.take(id, wait);
  if (!in)
    return make_error(in.err().code, "KV of request ", std::to_string(id),
                      " did not arrive: ", in.err().message);
  auto& pool = ctx.engine->pool();
  auto& be = pool.owner();
  const auto kv_dim = static_cast<uint32_t>(pool.kv_dim());
  const auto& meta = (*in)->meta();
  if (meta.size() != meta_bytes || read_u32(meta, 0) != n_tokens || read_u32(meta, 4) != kv_dim ||
      (*in)->n_layers() != uint32_t(pool.n_layers()) ||
      (*in)->layer_bytes() != kv_layer_bytes(n_tokens, kv_dim))
    return make_error(errc::invalid_argument, "KV of request ", std::to_string(id),
                      " does not fit this node's model: ", std::to_string((*in)->n_layers()),
                      " layers of ", std::to_string((*in)->layer_bytes()),
                      " bytes; check that every node runs the same model");
  kv_sequence seq = pool.new_sequence();
  MOSAIC_TRY(seq.reserve(int(n_tokens)));
  auto staging = make_staging(be, seq.slots(0, int(n_tokens)), int(kv_dim));
  if (!staging)
    return std::move(staging).err();
  const uint64_t half = (*in)->layer_bytes() / 2;
  const auto* idx = static_cast<const int32_t*>(staging->idx.data());
  for (int l = 0; l < pool.n_layers(); ++l) {
    MOSAIC_TRY((*in)->wait_layer(uint32_t(l), remaining(deadline_unix_ns, wait)));
    auto bytes = (*in)->layer(uint32_t(l));
    std::lock_guard compute{ctx.compute_mutex};
    MOSAIC_TRY(be.upload(staging->rows.data(), bytes.data(), half));
    be.scatter_rows(staging->rows.f32(), idx, pool.k_layer(l), int(n_tokens), int(kv_dim));
    MOSAIC_TRY(be.upload(staging->rows.data(), bytes.data() + half, half));
    be.scatter_rows(staging->rows.f32(), idx, pool.v_layer(l), int(n_tokens), int(kv_dim));
  }
  {
    std::lock_guard compute{ctx.compute_mutex};
    MOSAIC_TRY(be.synchronize());
  }
  MOSAIC_TRY(seq.set_length(int(n_tokens)));
  return seq;
}

caf::behavior kv_intake(intake_ptr self, node_context* ctx, kv::transfer::kv_receiver* receiver,
                        caf::actor decode) {
  self->state.ctx = ctx;
  self->state.receiver = receiver;
  self->state.decode = std::move(decode);
  return {
      [self](decode_atom, const decode_task_msg& m,
             const caf::actor& sink) -> caf::result<caf::message> {
        auto& st = self->state;
        const uint64_t id = m->request_id();
        const auto* kvh = m->kv();
        if (kvh == nullptr || kvh->sequence() != id)
          return to_caf_error(make_error(errc::invalid_argument, "decode task of request ",
                                         std::to_string(id), " names no KV transfer"));
        auto seq = receive_kv(*st.ctx, *st.receiver, id, kvh->n_tokens(), m->deadline_unix_ns());
        if (!seq)
          return to_caf_error(seq.err());
        st.ctx->sequences.put_at(id, std::make_shared<kv_sequence>(std::move(*seq)));
        return self->delegate(st.decode, decode_atom_v, m, sink);
      },
      [self](cancel_atom, const cancel_msg& m) {
        self->send(self->state.decode, cancel_atom_v, m);
      },
  };
}

} // namespace

caf::actor spawn_kv_intake(caf::actor_system& sys, node_context* ctx,
                           kv::transfer::kv_receiver* receiver, caf::actor decode) {
  return sys.spawn<caf::detached>(kv_intake, ctx, receiver, std::move(decode));
}

} // namespace mosaic::actors
