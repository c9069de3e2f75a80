#include "actors/kv_relay.hpp"

#include <algorithm>
#include <cstring>

#include <caf/all.hpp>
#include <zmq.hpp>

#include "actors/pipeline_messages.hpp"
#include "engine/model/sha256.hpp"
#include "kv/transfer/receiver.hpp"
#include "kv/transfer/sender.hpp"
#include "messages/error_convert.hpp"

namespace mosaic::actors {

namespace {

constexpr size_t tenant_tag_bytes = 16;
constexpr size_t meta_bytes = 8 + tenant_tag_bytes;

/// Whose KV a transfer carries: the receiving decode checks it against its
/// DecodeTask's tenant, so that KV never lands in another tenant's request.
std::array<uint8_t, tenant_tag_bytes> tenant_tag(std::string_view tenant) {
  sha256_hasher h;
  h.update(std::string_view{"mosaic-kv-transfer-tenant-v1"});
  h.update(tenant);
  const auto d = h.finish();
  std::array<uint8_t, tenant_tag_bytes> tag{};
  std::copy_n(d.begin(), tag.size(), tag.begin());
  return tag;
}

std::array<std::byte, meta_bytes> encode_meta(uint32_t n_tokens, uint32_t kv_dim,
                                              std::string_view tenant) {
  std::array<std::byte, meta_bytes> m{};
  for (int i = 0; i < 4; ++i) {
    m[size_t(i)] = std::byte((n_tokens >> (8 * i)) & 0xff);
    m[size_t(4 + i)] = std::byte((kv_dim >> (8 * i)) & 0xff);
  }
  const auto tag = tenant_tag(tenant);
  for (size_t i = 0; i < tag.size(); ++i)
    m[8 + i] = std::byte(tag[i]);
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
                     std::shared_ptr<peer_health> health, kv::transfer::sender_options options)
  : context_(context), endpoint_(std::move(endpoint)), options_(std::move(options)),
    peer_(std::move(decode_peer)), health_(std::move(health)) {}

kv_outbox::~kv_outbox() = default;

error kv_outbox::failed(uint64_t request_id, error err) {
  sender_.reset(); // a fresh socket for the next transfer (the peer may have restarted)
  return make_error(err.code, "KV transfer of request ", std::to_string(request_id),
                    " to the decode ", peer_.describe(), " at ", endpoint_, ": ", err.message);
}

result<std::unique_ptr<kv_stream>> kv_outbox::open(uint64_t request_id, std::string_view tenant,
                                                   uint32_t n_tokens, node_context& ctx) {
  if (health_ && !health_->up(peer_.node))
    return make_error(errc::unavailable, "the decode ", peer_.describe(),
                      " is down; KV of request ", std::to_string(request_id), " not sent");
  std::unique_lock lock{mutex_};
  if (!sender_) {
    kv::transfer::sender_options so = options_;
    so.peer_timeout = std::chrono::milliseconds{3000};
    auto s = kv::transfer::kv_sender::connect(context_, endpoint_, so);
    if (!s)
      return failed(request_id, std::move(s).err());
    sender_ = std::move(*s);
  }
  const auto& pool = ctx.engine->pool();
  const auto kv_dim = static_cast<uint32_t>(pool.kv_dim());
  const auto meta = encode_meta(n_tokens, kv_dim, tenant);
  if (auto ok = sender_->begin(request_id, static_cast<uint32_t>(pool.n_layers()),
                               kv_layer_bytes(n_tokens, kv_dim), meta);
      !ok)
    return failed(request_id, std::move(ok).err());
  return std::unique_ptr<kv_stream>(
      new kv_stream(*this, std::move(lock), request_id, n_tokens, ctx));
}

struct kv_stream::staging {
  layer_staging rows;
};

kv_stream::kv_stream(kv_outbox& outbox, std::unique_lock<std::mutex> lock, uint64_t request_id,
                     uint32_t n_tokens, node_context& ctx)
  : outbox_(outbox), lock_(std::move(lock)), request_id_(request_id), n_tokens_(n_tokens),
    ctx_(ctx) {}

kv_stream::~kv_stream() {
  abort("the prefill worker dropped the transfer");
}

error kv_stream::fail(error err) {
  if (open_ && outbox_.sender_)
    outbox_.sender_->abort(err.message); // no-op when the sender already gave it up
  open_ = false;
  return outbox_.failed(request_id_, std::move(err));
}

status kv_stream::send_layer(int layer, const kv_sequence& seq,
                             std::unique_lock<compute_lock>* compute) {
  if (!open_)
    return make_error(errc::invalid_argument, "KV stream of request ", std::to_string(request_id_),
                      " is closed");
  if (layer != next_layer_)
    return fail(make_error(errc::internal, "KV layer ", std::to_string(layer), " sent after layer ",
                           std::to_string(next_layer_ - 1)));
  auto& pool = ctx_.engine->pool();
  auto& be = pool.owner();
  const int n = int(n_tokens_);
  const int kv_dim = pool.kv_dim();
  if (!staging_) {
    auto st = make_staging(be, seq.slots(0, n), kv_dim);
    if (!st)
      return fail(std::move(st).err());
    staging_ = std::make_unique<staging>(staging{std::move(*st)});
  }
  // A buffer per layer, owned by ZeroMQ's messages until they are on the
  // wire: [2, n, kv_dim] f32 (K, then V).
  const uint64_t bytes = kv_layer_bytes(n_tokens_, uint32_t(kv_dim));
  std::shared_ptr<std::byte[]> host = std::make_shared_for_overwrite<std::byte[]>(bytes);
  const size_t half = bytes / 2;
  const auto* idx = static_cast<const int32_t*>(staging_->rows.idx.data());
  auto* rows = staging_->rows.rows.f32();
  be.gather_rows(pool.k_layer(layer), idx, rows, n, kv_dim);
  if (auto ok = be.download(host.get(), rows, half); !ok)
    return fail(std::move(ok).err());
  be.gather_rows(pool.v_layer(layer), idx, rows, n, kv_dim);
  if (auto ok = be.download(host.get() + half, rows, half); !ok)
    return fail(std::move(ok).err());
  std::span<const std::byte> view{host.get(), bytes};
  // The bytes are this stream's own now: wait for the wire without the
  // compute lock (the pass resumes once it has it back).
  const bool release =
      compute != nullptr && compute->owns_lock() && !outbox_.sender_->ready_for(bytes);
  if (release) {
    compute->unlock();
    ctx_.counters.kv_send_unlocked_waits++;
  }
  auto ok = outbox_.sender_->send_layer(uint32_t(layer), view, std::move(host));
  if (release)
    compute->lock();
  if (!ok)
    return fail(std::move(ok).err());
  ++next_layer_;
  return {};
}

status kv_stream::finish() {
  if (!open_)
    return make_error(errc::invalid_argument, "KV stream of request ", std::to_string(request_id_),
                      " is closed");
  if (next_layer_ != ctx_.engine->pool().n_layers())
    return fail(make_error(errc::internal, "KV transfer ended after ", std::to_string(next_layer_),
                           " layers"));
  if (auto ok = outbox_.sender_->finish(); !ok)
    return fail(std::move(ok).err());
  open_ = false;
  return {};
}

void kv_stream::abort(std::string_view reason) noexcept {
  if (!open_)
    return;
  open_ = false;
  if (outbox_.sender_)
    outbox_.sender_->abort(reason);
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
hand_over_remote(caf::event_based_actor* self, std::shared_ptr<remote_decoders::target> target,
                 wire::decode_task task, std::unique_ptr<kv_stream> stream,
                 const caf::actor& sink) {
  auto rp = self->make_response_promise<token_event_msg>();
  auto answered = std::make_shared<bool>(false);
  task.kv.sequence = stream->request_id(); // the transfer's id; the intake puts the sequence there
  task.kv.node = target->outbox->peer().node;
  task.kv.endpoint = target->outbox->endpoint();
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
  // Every layer is on its way; this waits for the decode node's `done`
  // (blocking this detached worker), while the decode side already scatters.
  if (auto ok = stream->finish(); !ok) {
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
                               std::string_view tenant, uint32_t n_tokens,
                               int64_t deadline_unix_ns) {
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
  const auto tag = tenant_tag(tenant);
  if (std::memcmp(meta.data() + 8, tag.data(), tag.size()) != 0)
    return make_error(errc::permission_denied, "KV of request ", std::to_string(id),
                      " belongs to another tenant than its decode task's; refused");
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
        // First thing on the task: the receiver's `layers_early` then
        // counts the layers that arrived during the sender's pass.
        auto seq = receive_kv(*st.ctx, *st.receiver, id,
                              m->tenant() ? m->tenant()->string_view() : std::string_view{},
                              kvh->n_tokens(), m->deadline_unix_ns());
        if (!seq)
          return to_caf_error(seq.err());
        if (!st.ctx->sequences.put_at(id, std::make_shared<kv_sequence>(std::move(*seq))))
          return to_caf_error(make_error(errc::invalid_argument, id_in_use(id)));
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
