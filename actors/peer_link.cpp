#include "actors/peer_link.hpp"

#include <algorithm>
#include <cstdio>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/manager.hpp>

#include "messages/caf_types.hpp"

namespace mosaic::actors {

std::string peer_address::describe() const {
  return "node '" + node + "' (" + host + ":" + std::to_string(control_port) + ")";
}

// -- peer_health ----------------------------------------------------------------------

bool peer_health::node_up(const std::string& node) const {
  auto it = links_.find(node);
  if (it == links_.end() || it->second.empty())
    return false;
  return std::all_of(it->second.begin(), it->second.end(), [](const auto& l) { return l.second; });
}

void peer_health::expect(const peer_address& peer, const std::string& link) {
  std::lock_guard lock{mutex_};
  auto& links = links_[peer.node];
  links.try_emplace(link, false);
}

void peer_health::set(const peer_address& peer, const std::string& link, bool up) {
  bool was = false, now = false;
  {
    std::lock_guard lock{mutex_};
    was = node_up(peer.node);
    links_[peer.node][link] = up;
    now = node_up(peer.node);
    if (was == now)
      return;
    if (!now)
      downs_[peer.node]++;
  }
  cv_.notify_all();
  if (!quiet_) {
    std::fprintf(stderr, "mosaic: peer %s is %s%s\n", peer.describe().c_str(), now ? "up" : "DOWN",
                 now ? "" : (" (its " + link + " link)").c_str());
    std::fflush(stderr);
  }
}

bool peer_health::up(const std::string& node) const {
  std::lock_guard lock{mutex_};
  return node_up(node);
}

uint64_t peer_health::downs(const std::string& node) const {
  std::lock_guard lock{mutex_};
  auto it = downs_.find(node);
  return it == downs_.end() ? 0 : it->second;
}

bool peer_health::wait_all(const std::vector<peer_address>& peers,
                           std::chrono::steady_clock::time_point deadline,
                           std::vector<peer_address>& missing) const {
  std::unique_lock lock{mutex_};
  auto all_up = [&] {
    return std::all_of(peers.begin(), peers.end(),
                       [&](const peer_address& p) { return node_up(p.node); });
  };
  cv_.wait_until(lock, deadline, all_up);
  missing.clear();
  for (const auto& p : peers)
    if (!node_up(p.node))
      missing.push_back(p);
  return missing.empty();
}

// -- peer_directories -----------------------------------------------------------------

void peer_directories::set_own(caf::actor directory) {
  std::lock_guard lock{mutex_};
  own_ = std::move(directory);
}

caf::actor peer_directories::own() const {
  std::lock_guard lock{mutex_};
  return own_;
}

void peer_directories::introduce(const std::string& node, caf::actor directory) {
  std::lock_guard lock{mutex_};
  introduced_[node] = std::move(directory);
}

void peer_directories::forget(const std::string& node, const caf::actor_addr& gone) {
  std::lock_guard lock{mutex_};
  if (auto it = introduced_.find(node); it != introduced_.end() && it->second.address() == gone)
    introduced_.erase(it);
}

caf::actor peer_directories::of(const std::string& node) const {
  std::lock_guard lock{mutex_};
  auto it = introduced_.find(node);
  return it == introduced_.end() ? caf::actor{} : it->second;
}

bool dials(const std::string& self, const std::string& peer, bool tls) {
  return !tls || self < peer;
}

// -- the link -----------------------------------------------------------------------------

namespace {

struct link_state {
  peer_link_options options;
  std::shared_ptr<peer_health> health;
  caf::actor directory; ///< the peer's published node directory
  caf::actor target;    ///< the actor of `kind` on the peer
  uint64_t epoch = 0;   ///< bumped on every (re)connect attempt; stale answers are dropped
  std::chrono::milliseconds backoff{50};
  bool connecting = false;
  uint64_t next_seq = 1;
  std::map<uint64_t, caf::response_promise> pending; ///< forwarded requests
  static inline const char* name = "peer_link";
};

using link_ptr = caf::stateful_actor<link_state>*;

/// How a refusal of a request never forwarded reads (refused_unsent).
constexpr std::string_view not_sent = "is not connected; the request was not sent";

error unavailable(const link_state& st, const std::string& why) {
  return make_error(errc::unavailable, st.options.peer.describe(), " ", why, " (", st.options.kind,
                    " actor)");
}

void mark_down(link_ptr self, const std::string& why);

void schedule_connect(link_ptr self) {
  auto& st = self->state;
  if (st.connecting)
    return;
  st.connecting = true;
  self->delayed_send(self, st.backoff, caf::connect_atom_v, st.epoch);
  st.backoff = std::min(st.backoff * 2, std::chrono::milliseconds{1000});
}

void on_target(link_ptr self, uint64_t epoch, caf::actor directory, caf::actor target) {
  auto& st = self->state;
  if (epoch != st.epoch || !target) {
    st.connecting = false;
    return schedule_connect(self);
  }
  st.connecting = false;
  st.directory = std::move(directory);
  st.target = std::move(target);
  st.backoff = std::chrono::milliseconds{50};
  self->monitor(st.target);
  self->monitor(st.directory);
  if (st.health)
    st.health->set(st.options.peer, st.options.kind, true);
  self->delayed_send(self, st.options.heartbeat_interval, heartbeat_atom_v, st.epoch);
}

void retry(link_ptr self, uint64_t epoch) {
  if (epoch != self->state.epoch)
    return;
  self->state.connecting = false;
  schedule_connect(self);
}

/// Asks the peer's directory `dir` for the actor of the link's kind,
/// introducing this node's directory (when this node dials).
void say_hello(link_ptr self, uint64_t epoch, caf::actor dir) {
  auto& st = self->state;
  caf::actor own;
  if (st.options.directories && dials(st.options.from_node, st.options.peer.node, st.options.tls)) {
    own = st.options.directories->own();
    if (!own && st.options.tls) // the peer's links to us wait for it: not yet published
      return retry(self, epoch);
  }
  self->request(dir, std::chrono::seconds{3}, hello_atom_v, st.options.kind, st.options.from_node,
                std::move(own))
      .then([self, epoch, dir](caf::actor& target) { on_target(self, epoch, dir, target); },
            [self, epoch](caf::error& err) {
              auto& s = self->state;
              if (epoch != s.epoch)
                return;
              s.connecting = false;
              // A directory that does not know the kind is a
              // topology mismatch: say so, keep trying (it may be
              // an older process still shutting down).
              std::fprintf(stderr, "mosaic: %s\n",
                           unavailable(s, "refused the link: " + from_caf_error(err).message)
                               .to_string()
                               .c_str());
              schedule_connect(self);
            });
}

/// One connection attempt: connect to the peer's control port (or, under
/// TLS towards a peer that dials us, take the directory it introduced),
/// then ask the directory.
void try_connect(link_ptr self, uint64_t epoch) {
  auto& st = self->state;
  if (epoch != st.epoch || st.target)
    return;
  const auto& p = st.options.peer;
  if (!dials(st.options.from_node, p.node, st.options.tls)) {
    auto dir = st.options.directories ? st.options.directories->of(p.node) : caf::actor{};
    if (!dir)
      return retry(self, epoch);
    return say_hello(self, epoch, std::move(dir));
  }
  auto& sys = self->home_system();
  auto mm = st.options.tls ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
  self->request(mm, std::chrono::seconds{3}, caf::connect_atom_v, p.host, p.control_port)
      .then(
          [self, epoch](const caf::node_id&, caf::strong_actor_ptr& ptr,
                        const std::set<std::string>&) {
            auto dir = caf::actor_cast<caf::actor>(ptr);
            if (!dir || epoch != self->state.epoch)
              return retry(self, epoch);
            say_hello(self, epoch, std::move(dir));
          },
          [self, epoch](caf::error&) { retry(self, epoch); });
}

void mark_down(link_ptr self, const std::string& why) {
  auto& st = self->state;
  if (!st.target && !st.directory)
    return;
  if (st.target)
    self->demonitor(st.target);
  if (st.directory)
    self->demonitor(st.directory);
  st.target = nullptr;
  st.directory = nullptr;
  st.epoch++;
  st.connecting = false;
  if (st.health)
    st.health->set(st.options.peer, st.options.kind, false);
  auto err = to_caf_error(unavailable(st, why));
  auto pending = std::move(st.pending);
  st.pending.clear();
  for (auto& [seq, rp] : pending)
    rp.deliver(err);
  schedule_connect(self);
}

void heartbeat(link_ptr self, uint64_t epoch) {
  auto& st = self->state;
  if (epoch != st.epoch || !st.directory)
    return;
  self->request(st.directory, st.options.heartbeat_timeout, heartbeat_atom_v)
      .then(
          [self, epoch](const std::string&) {
            auto& s = self->state;
            if (epoch == s.epoch)
              self->delayed_send(self, s.options.heartbeat_interval, heartbeat_atom_v, epoch);
          },
          [self, epoch](caf::error&) {
            if (epoch == self->state.epoch)
              mark_down(self, "missed its heartbeat");
          });
}

/// Relays the answer of forwarded request `seq` (any Mosaic message, or none).
caf::behavior relay(link_ptr self, uint64_t seq) {
  auto deliver = [self, seq](caf::message m) {
    auto& p = self->state.pending;
    auto it = p.find(seq);
    if (it == p.end())
      return; // answered already (peer went down)
    it->second.deliver(std::move(m));
    p.erase(it);
  };
#define MOSAIC_RELAY_(table, alias, ident)                                                         \
  [deliver](alias& x) { deliver(caf::make_message(std::move(x))); },
  return {MOSAIC_MESSAGE_TYPES(MOSAIC_RELAY_)[deliver](caf::actor &
                                                       x){deliver(caf::make_message(std::move(x)));
}
, [deliver]() { deliver(caf::message{}); }, [self, seq](caf::error& err) {
  auto& p = self->state.pending;
  auto it = p.find(seq);
  if (it == p.end())
    return;
  it->second.deliver(std::move(err));
  p.erase(it);
},
}; // namespace
#undef MOSAIC_RELAY_
} // namespace mosaic::actors

caf::result<caf::message> forward(link_ptr self, caf::message_view& view) {
  auto& st = self->state;
  auto* elem = self->current_mailbox_element();
  const bool is_request = elem != nullptr && elem->mid.is_request();
  if (!st.target) {
    if (is_request)
      return to_caf_error(unavailable(st, std::string{not_sent}));
    return caf::delegated<caf::message>{}; // a send to a down peer is lost, as to a dead actor
  }
  auto msg = view.move_content_to_message();
  if (!is_request) {
    self->send(st.target, std::move(msg));
    return caf::delegated<caf::message>{};
  }
  const uint64_t seq = st.next_seq++;
  st.pending.emplace(seq, self->make_response_promise());
  auto h = self->request(st.target, st.options.request_timeout, std::move(msg));
  self->add_multiplexed_response_handler(h.id(), relay(self, seq));
  return caf::delegated<caf::message>{};
}

caf::behavior peer_link(link_ptr self, peer_link_options options,
                        std::shared_ptr<peer_health> health) {
  self->state.options = std::move(options);
  self->state.health = std::move(health);
  self->set_default_handler(
      [self](caf::scheduled_actor*, caf::message_view& view) { return forward(self, view); });
  self->set_down_handler([self](const caf::down_msg& dm) {
    auto& st = self->state;
    if ((st.target && dm.source == st.target.address()) ||
        (st.directory && dm.source == st.directory.address()))
      mark_down(self, "went down");
  });
  self->send(self, caf::connect_atom_v, self->state.epoch);
  self->state.connecting = true;
  return {
      [self](caf::connect_atom, uint64_t epoch) { try_connect(self, epoch); },
      [self](heartbeat_atom, uint64_t epoch) { heartbeat(self, epoch); },
  };
}

} // namespace

bool refused_unsent(const error& err) {
  return err.code == errc::unavailable && err.message.find(not_sent) != std::string::npos;
}

caf::actor spawn_fanout(caf::actor_system& sys, std::vector<caf::actor> targets) {
  return sys.spawn([targets = std::move(targets)](caf::event_based_actor* self) -> caf::behavior {
    self->set_default_handler([self, targets](caf::scheduled_actor*, caf::message_view& v) {
      auto msg = v.copy_content_to_message();
      for (const auto& t : targets)
        self->send(t, msg);
      return caf::result<caf::message>{caf::delegated<caf::message>{}};
    });
    return {[](shutdown_atom) {}}; // a behavior must not be empty
  });
}

caf::actor spawn_peer_link(caf::actor_system& sys, peer_link_options options,
                           std::shared_ptr<peer_health> health) {
  if (health)
    health->expect(options.peer, options.kind);
  return sys.spawn(peer_link, std::move(options), std::move(health));
}

} // namespace mosaic::actors
