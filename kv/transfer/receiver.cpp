#include "kv/transfer/receiver.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "kv/transfer/wire.hpp"

namespace mosaic::kv::transfer {

namespace {

using clock_type = std::chrono::steady_clock;

constexpr uint64_t huge_page = uint64_t(2) << 20;

/// A fresh landing buffer of `n` bytes (a multiple of 2 MiB when large):
/// 2 MiB aligned and asked to be backed by huge pages, so that faulting
/// it in costs fewer faults where the kernel grants them.
std::byte* landing_bytes(uint64_t n) {
  if (n < huge_page)
    return static_cast<std::byte*>(std::malloc(n));
  void* p = std::aligned_alloc(huge_page, n);
  if (p != nullptr)
    (void)madvise(p, n, MADV_HUGEPAGE); // a hint; 4 KiB pages still work
  return static_cast<std::byte*>(p);
}

std::span<const std::byte> bytes_of(const zmq::message_t& m) {
  return {static_cast<const std::byte*>(m.data()), m.size()};
}

} // namespace

// -- incoming_kv ------------------------------------------------------------------

incoming_kv::incoming_kv(uint64_t request_id, uint32_t n_layers, uint64_t layer_bytes,
                         std::string meta, std::shared_ptr<budget> budget)
  : request_id_(request_id), n_layers_(n_layers), layer_bytes_(layer_bytes), meta_(std::move(meta)),
    budget_(std::move(budget)), reserved_(uint64_t(n_layers) * layer_bytes), received_(n_layers, 0),
    arrived_(n_layers) {
  const uint64_t n = reserved_;
  std::lock_guard lock{budget_->mutex};
  auto& spare = budget_->spare;
  // A spare of at least n and at most twice n (best fit).
  auto best = spare.end();
  for (auto it = spare.begin(); it != spare.end(); ++it)
    if (it->first >= n && it->first <= 2 * n && (best == spare.end() || it->first < best->first))
      best = it;
  if (best != spare.end()) {
    capacity_ = best->first;
    data_ = best->second;
    budget_->spare_bytes -= capacity_;
    ++budget_->reused;
    spare.erase(best);
    return;
  }
  // None fits: fresh bytes, after freeing spares until the bytes in use
  // (this transfer's included) and the spares fit the budget again.
  while (!spare.empty() && budget_->used + budget_->spare_bytes > budget_->limit) {
    budget_->spare_bytes -= spare.back().first;
    std::free(spare.back().second);
    spare.pop_back();
  }
  capacity_ =
      n < huge_page ? std::max<uint64_t>(n, 1) : (n + huge_page - 1) / huge_page * huge_page;
  data_ = landing_bytes(capacity_);
}

incoming_kv::budget::~budget() {
  for (auto& [capacity, p] : spare)
    std::free(p);
}

incoming_kv::~incoming_kv() {
  release_bytes();
}

void incoming_kv::release_bytes() noexcept {
  std::lock_guard lock{budget_->mutex};
  budget_->used -= std::exchange(reserved_, 0);
  if (data_ == nullptr)
    return;
  if (capacity_ >= huge_page &&
      budget_->used + budget_->spare_bytes + capacity_ <= budget_->limit) {
    budget_->spare.emplace_back(capacity_, data_);
    budget_->spare_bytes += capacity_;
  } else {
    std::free(data_);
  }
  data_ = nullptr;
}

uint32_t incoming_kv::layers_arrived_by(clock_type::time_point t) const {
  std::lock_guard lock{mutex_};
  uint32_t n = 0;
  for (uint32_t l = 0; l < n_layers_; ++l)
    n += received_[l] == layer_bytes_ && arrived_[l] <= t;
  return n;
}

bool incoming_kv::failed() const {
  std::lock_guard lock{mutex_};
  return ended_ && error_.code != errc::none;
}

status incoming_kv::wait_layer(uint32_t layer, std::chrono::milliseconds timeout) const {
  if (layer >= n_layers_)
    return make_error(errc::invalid_argument, "layer ", std::to_string(layer), " of a ",
                      std::to_string(n_layers_), "-layer transfer");
  std::unique_lock lock{mutex_};
  bool ready = cv_.wait_for(lock, timeout, [&] {
    return received_[layer] == layer_bytes_ || (ended_ && error_.code != errc::none);
  });
  if (received_[layer] == layer_bytes_)
    return {};
  if (ready)
    return error_;
  return make_error(errc::timeout, "KV layer ", std::to_string(layer), " of request ",
                    std::to_string(request_id_), " did not arrive in time");
}

status incoming_kv::wait_all(std::chrono::milliseconds timeout) const {
  std::unique_lock lock{mutex_};
  if (!cv_.wait_for(lock, timeout, [&] { return ended_; }))
    return make_error(errc::timeout, "KV of request ", std::to_string(request_id_),
                      " did not arrive in time");
  return error_;
}

std::span<const std::byte> incoming_kv::layer(uint32_t layer) const noexcept {
  return {data_ + uint64_t(layer) * layer_bytes_, layer_bytes_};
}

std::byte* incoming_kv::region(uint32_t layer) noexcept {
  return data_ + uint64_t(layer) * layer_bytes_;
}

void incoming_kv::landed(uint32_t layer, uint64_t bytes) {
  bool whole;
  {
    std::lock_guard lock{mutex_};
    received_[layer] += bytes;
    whole = received_[layer] == layer_bytes_;
    if (whole)
      arrived_[layer] = clock_type::now();
  }
  if (whole)
    cv_.notify_all();
}

uint64_t incoming_kv::received(uint32_t layer) const {
  std::lock_guard lock{mutex_};
  return received_[layer];
}

bool incoming_kv::complete() const {
  std::lock_guard lock{mutex_};
  for (auto r : received_)
    if (r != layer_bytes_)
      return false;
  return true;
}

void incoming_kv::end(error err) {
  {
    std::lock_guard lock{mutex_};
    if (ended_)
      return;
    ended_ = true;
    error_ = std::move(err);
  }
  cv_.notify_all();
}

bool incoming_kv::ended() const {
  std::lock_guard lock{mutex_};
  return ended_;
}

// -- kv_receiver --------------------------------------------------------------------

struct kv_receiver::active_transfer {
  std::shared_ptr<incoming_kv> kv;
  uint32_t since_credit = 0;
  clock_type::time_point last = clock_type::now();
};

result<std::unique_ptr<kv_receiver>>
kv_receiver::bind(zmq::context_t& context, const std::string& endpoint, receiver_options options) {
  if (options.window_chunks < 2 || options.max_layers == 0 ||
      options.max_frame_bytes < options.max_meta_bytes + 64)
    return make_error(errc::invalid_argument,
                      "KV receiver: window_chunks >= 2, max_layers >= 1, max_frame_bytes above "
                      "max_meta_bytes");
  if (options.curve) {
    if (options.curve->secret_key.size() != 40 || options.curve->clients.empty())
      return make_error(errc::invalid_argument,
                        "KV receiver: CURVE needs a 40-character Z85 secret key and at least one "
                        "client public key");
    for (const auto& k : options.curve->clients) {
      uint8_t bin[32];
      if (k.size() != 40 || zmq_z85_decode(bin, k.c_str()) == nullptr)
        return make_error(errc::invalid_argument, "KV receiver: '", k,
                          "' is not a Z85 CURVE public key (40 characters)");
    }
  }
  try {
    // The ZAP handler first: a CURVE server with none bound accepts anyone.
    std::optional<zmq::socket_t> zap;
    if (options.curve) {
      zap.emplace(context, zmq::socket_type::rep);
      zap->set(zmq::sockopt::linger, 0);
      zap->bind("inproc://zeromq.zap.01");
    }
    zmq::socket_t socket(context, zmq::socket_type::router);
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::router_mandatory, 1); // a reply to a vanished peer fails, never blocks
    socket.set(zmq::sockopt::sndtimeo, 0);
    socket.set(zmq::sockopt::maxmsgsize, int64_t(options.max_frame_bytes));
    if (options.curve) {
      socket.set(zmq::sockopt::curve_server, true);
      socket.set(zmq::sockopt::curve_secretkey, options.curve->secret_key);
      socket.set(zmq::sockopt::zap_domain, "mosaic-data");
    }
    socket.bind(endpoint);
    auto bound = socket.get(zmq::sockopt::last_endpoint);
    return std::make_unique<kv_receiver>(private_tag{}, std::move(socket), std::move(zap), bound,
                                         options);
  } catch (const zmq::error_t& e) {
    return make_error(errc::unavailable, "KV receiver cannot bind '", endpoint, "': ", e.what(),
                      " (is the data_port in use, or the address not on this host?)");
  }
}

kv_receiver::kv_receiver(private_tag, zmq::socket_t socket, std::optional<zmq::socket_t> zap,
                         std::string endpoint, receiver_options options)
  : socket_(std::move(socket)), zap_(std::move(zap)), endpoint_(std::move(endpoint)),
    options_(options), budget_(std::make_shared<incoming_kv::budget>()) {
  budget_->limit = options_.budget_bytes;
  if (options_.curve)
    for (const auto& k : options_.curve->clients) {
      uint8_t bin[32];
      if (zmq_z85_decode(bin, k.c_str()) != nullptr)
        allowed_.insert(std::string(reinterpret_cast<const char*>(bin), sizeof bin));
    }
  thread_ = std::thread([this] { run(); });
}

kv_receiver::~kv_receiver() {
  stop_ = true;
  thread_.join();
  for (auto& [key, t] : active_)
    t->kv->end(make_error(errc::unavailable, "KV receiver stopped during the transfer"));
}

void kv_receiver::authenticate() {
  // ZAP 1.0 (RFC 27): version, request id, domain, address, identity,
  // mechanism, then the mechanism's credentials (CURVE: the client's key).
  std::vector<zmq::message_t> req;
  do {
    zmq::message_t part;
    if (!zap_->recv(part, zmq::recv_flags::dontwait))
      return;
    req.push_back(std::move(part));
  } while (req.back().more() && req.size() < 16);
  auto str = [&](size_t i) {
    return i < req.size() ? std::string(static_cast<const char*>(req[i].data()), req[i].size())
                          : std::string{};
  };
  const bool ok = str(0) == "1.0" && str(5) == "CURVE" && allowed_.count(str(6)) != 0;
  if (!ok) {
    std::lock_guard lock{mutex_};
    ++stats_.peers_refused;
  }
  const std::string reply[] = {"1.0", str(1), ok ? "200" : "400",
                               ok ? "OK" : "unknown public key", "", ""};
  try {
    for (size_t i = 0; i < 6; ++i)
      zap_->send(zmq::buffer(reply[i]), i + 1 < 6 ? zmq::send_flags::sndmore : zmq::send_flags::none);
  } catch (const zmq::error_t&) {
  }
}

void kv_receiver::run() {
  while (!stop_) {
    zmq::pollitem_t items[2] = {{socket_.handle(), 0, ZMQ_POLLIN, 0},
                                {zap_ ? zap_->handle() : nullptr, 0, ZMQ_POLLIN, 0}};
    try {
      if (zmq::poll(items, zap_ ? 2 : 1, std::chrono::milliseconds{50}) > 0) {
        if (zap_ && (items[1].revents & ZMQ_POLLIN) != 0)
          authenticate();
        // Drain what is there, bounded so that expiry still runs under load.
        for (int i = 0; i < 256; ++i) {
          std::vector<zmq::message_t> parts;
          zmq::message_t part;
          if (!socket_.recv(part, zmq::recv_flags::dontwait))
            break;
          parts.push_back(std::move(part));
          while (parts.back().more() && parts.size() < 8) {
            zmq::message_t next;
            if (!socket_.recv(next, zmq::recv_flags::dontwait))
              break;
            parts.push_back(std::move(next));
          }
          while (parts.back().more()) { // a hostile peer's extra parts: drop them
            zmq::message_t extra;
            if (!socket_.recv(extra, zmq::recv_flags::dontwait))
              break;
            parts.back().move(extra);
          }
          on_frame(parts);
        }
      }
    } catch (const zmq::error_t&) {
      if (stop_)
        break; // context shutting down
    }
    expire();
  }
}

void kv_receiver::reply(const std::string& peer, uint64_t request_id, int kind, uint64_t size,
                        const std::string& payload) {
  frame_header h;
  h.kind = static_cast<frame_kind>(kind);
  h.request_id = request_id;
  h.size = size;
  auto head = encode(h);
  try {
    // router_mandatory: a peer that is gone makes send throw EHOSTUNREACH;
    // sndtimeo 0: a peer that reads nothing makes it return nothing. Either
    // way the answer is dropped; the peer's own timeout covers it.
    if (socket_.send(zmq::buffer(peer), zmq::send_flags::sndmore) &&
        socket_.send(zmq::buffer(head.data(), head.size()), zmq::send_flags::sndmore))
      (void)socket_.send(zmq::buffer(payload), zmq::send_flags::none);
  } catch (const zmq::error_t&) {
  }
}

void kv_receiver::fail(const std::string& peer, uint64_t request_id, error err) {
  reply(peer, request_id, int(frame_kind::error), 0, encode_error(err));
  if (auto it = active_.find({peer, request_id}); it != active_.end()) {
    auto kv = it->second->kv;
    kv->end(std::move(err));
    active_.erase(it);
    release_if_unclaimed(kv);
  }
  std::lock_guard lock{mutex_};
  ++stats_.failures;
}

void kv_receiver::release_if_unclaimed(const std::shared_ptr<incoming_kv>& kv) {
  std::lock_guard lock{mutex_};
  if (auto u = unclaimed_.find(kv->request_id()); u != unclaimed_.end() && u->second.first == kv)
    kv->release_bytes(); // take() moves it out under this mutex: no reader yet
}

void kv_receiver::on_frame(std::vector<zmq::message_t>& parts) {
  if (parts.size() < 2)
    return; // no header: nothing to answer to
  std::string peer(static_cast<const char*>(parts[0].data()), parts[0].size());
  auto h = decode_header(bytes_of(parts[1]));
  if (!h)
    return fail(peer, 0, std::move(h).err());
  std::span<const std::byte> payload;
  if (parts.size() >= 3)
    payload = bytes_of(parts[2]);
  auto id = h->request_id;
  auto it = active_.find({peer, id});

  switch (h->kind) {
  case frame_kind::begin: {
    auto b = decode_begin(payload);
    if (!b)
      return fail(peer, id, std::move(b).err());
    auto meta = payload.subspan(begin_payload_bytes);
    if (b->n_layers == 0 || b->n_layers > options_.max_layers || b->layer_bytes == 0)
      return fail(peer, id,
                  make_error(errc::invalid_argument, "KV transfer of ", std::to_string(b->n_layers),
                             " layers x ", std::to_string(b->layer_bytes),
                             " bytes is not allowed"));
    if (b->layer_bytes > options_.max_transfer_bytes / b->n_layers)
      return fail(peer, id,
                  make_error(errc::out_of_memory, "KV transfer larger than ",
                             std::to_string(options_.max_transfer_bytes), " bytes"));
    if (meta.size() > options_.max_meta_bytes)
      return fail(peer, id,
                  make_error(errc::invalid_argument, "KV transfer metadata over ",
                             std::to_string(options_.max_meta_bytes), " bytes"));
    bool duplicate = false;
    for (auto& [key, t] : active_)
      duplicate |= key.second == id;
    {
      // A failed transfer nobody took yet is replaced: its sender gave
      // it up and starts over (a prefill pass re-run after a failed load).
      std::lock_guard lock{mutex_};
      if (auto u = unclaimed_.find(id); u != unclaimed_.end()) {
        if (!duplicate && u->second.first->failed())
          unclaimed_.erase(u);
        else
          duplicate = true;
      }
    }
    if (duplicate)
      return fail(peer, id,
                  make_error(errc::invalid_argument, "a KV transfer of request ",
                             std::to_string(id), " is already here"));
    uint64_t total = uint64_t(b->n_layers) * b->layer_bytes;
    {
      std::lock_guard lock{budget_->mutex};
      if (budget_->used + total > options_.budget_bytes)
        return fail(peer, id,
                    make_error(errc::overloaded, "decode node's KV receive budget (",
                               std::to_string(options_.budget_bytes),
                               " bytes) is full; retry later"));
      budget_->used += total;
    }
    auto kv = std::make_shared<incoming_kv>(
        id, b->n_layers, b->layer_bytes,
        std::string(reinterpret_cast<const char*>(meta.data()), meta.size()), budget_);
    if (!kv->has_bytes())
      return fail(peer, id,
                  make_error(errc::out_of_memory, "decode node cannot allocate ",
                             std::to_string(total), " bytes for a KV transfer; retry later"));
    active_[{peer, id}] = std::make_shared<active_transfer>(active_transfer{kv});
    {
      std::lock_guard lock{mutex_};
      unclaimed_[id] = {kv, clock_type::now()};
    }
    cv_.notify_all();
    return reply(peer, id, int(frame_kind::accept), options_.window_chunks);
  }
  case frame_kind::chunk: {
    if (it == active_.end())
      return; // stale: the transfer already failed and was answered
    auto& t = *it->second;
    t.last = clock_type::now();
    auto& kv = *t.kv;
    if (h->layer >= kv.n_layers() || h->size != payload.size() ||
        h->offset != kv.received(h->layer) || h->size > kv.layer_bytes() - h->offset)
      return fail(peer, id,
                  make_error(errc::corrupt_data, "KV chunk out of place (layer ",
                             std::to_string(h->layer), ", offset ", std::to_string(h->offset), ", ",
                             std::to_string(h->size), " bytes)"));
    // Copy and verify in one pass (each block hashed while cache-hot); a
    // bad chunk's bytes land but are never published, and the transfer fails.
    if (copy_and_checksum(kv.region(h->layer) + h->offset, payload, read_next::later) !=
        h->checksum) {
      {
        std::lock_guard lock{mutex_};
        ++stats_.checksum_failures;
      }
      return fail(peer, id,
                  make_error(errc::corrupt_data, "KV chunk of layer ", std::to_string(h->layer),
                             " at offset ", std::to_string(h->offset), " failed its checksum"));
    }
    kv.landed(h->layer, payload.size());
    {
      std::lock_guard lock{mutex_};
      stats_.bytes += payload.size();
    }
    if (++t.since_credit >= options_.window_chunks / 2) {
      reply(peer, id, int(frame_kind::credit), t.since_credit);
      t.since_credit = 0;
    }
    return;
  }
  case frame_kind::end: {
    if (it == active_.end())
      return reply(peer, id, int(frame_kind::error), 0,
                   encode_error(make_error(errc::not_found, "no KV transfer of request ",
                                           std::to_string(id), " is running here")));
    if (!it->second->kv->complete())
      return fail(peer, id,
                  make_error(errc::corrupt_data, "KV transfer ended before every layer arrived"));
    it->second->kv->end({});
    active_.erase(it);
    {
      std::lock_guard lock{mutex_};
      ++stats_.transfers;
    }
    return reply(peer, id, int(frame_kind::done), 0);
  }
  case frame_kind::abort: {
    if (it == active_.end())
      return;
    std::string why(reinterpret_cast<const char*>(payload.data()), payload.size());
    auto kv = it->second->kv;
    kv->end(make_error(errc::cancelled, "the sender aborted the KV transfer: ", why));
    active_.erase(it);
    release_if_unclaimed(kv);
    std::lock_guard lock{mutex_};
    ++stats_.failures;
    return;
  }
  default:
    return fail(peer, id,
                make_error(errc::invalid_argument, "a receiver-side KV frame (kind ",
                           std::to_string(int(h->kind)), ") sent to a receiver"));
  }
}

void kv_receiver::expire() {
  auto now = clock_type::now();
  for (auto it = active_.begin(); it != active_.end();) {
    if (now - it->second->last > options_.idle_timeout) {
      auto kv = it->second->kv;
      kv->end(make_error(errc::unavailable, "the KV sender went silent mid-transfer (node down?)"));
      it = active_.erase(it);
      release_if_unclaimed(kv);
      std::lock_guard lock{mutex_};
      ++stats_.failures;
    } else {
      ++it;
    }
  }
  std::lock_guard lock{mutex_};
  std::erase_if(unclaimed_,
                [&](const auto& e) { return now - e.second.second > options_.unclaimed_ttl; });
}

result<std::shared_ptr<incoming_kv>> kv_receiver::take(uint64_t request_id,
                                                       std::chrono::milliseconds timeout) {
  const auto called = clock_type::now();
  std::unique_lock lock{mutex_};
  if (!cv_.wait_for(lock, timeout, [&] { return unclaimed_.count(request_id) > 0; }))
    return make_error(errc::timeout, "no KV transfer of request ", std::to_string(request_id),
                      " began in time");
  auto kv = std::move(unclaimed_[request_id].first);
  unclaimed_.erase(request_id);
  ++stats_.taken;
  stats_.layers_taken += kv->n_layers();
  stats_.layers_early += kv->layers_arrived_by(called); // its mutex after ours, never the reverse
  return kv;
}

receiver_stats kv_receiver::stats() const {
  receiver_stats s;
  {
    std::lock_guard lock{mutex_};
    s = stats_;
  }
  std::lock_guard lock{budget_->mutex};
  s.budget_used_bytes = budget_->used;
  s.landing_reused = budget_->reused;
  s.spare_bytes = budget_->spare_bytes;
  return s;
}

} // namespace mosaic::kv::transfer
