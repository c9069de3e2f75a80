// local_cluster::join: one node of a multi-node cluster (`mosaic node`).
// See actors/local_cluster.hpp and docs/actors.md "Several nodes".

#include <arpa/inet.h>

#include <cstdio>
#include <map>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "actors/compress_actor.hpp"
#include "actors/decode_actor.hpp"
#include "actors/embeddings_relay.hpp"
#include "actors/encoder_actor.hpp"
#include "actors/kv_loader_actor.hpp"
#include "actors/linker_actor.hpp"
#include "actors/local_cluster.hpp"
#include "actors/node_directory.hpp"
#include "actors/node_network.hpp"
#include "actors/openssl_error_queue.hpp"
#include "actors/prefill_actor.hpp"
#include "actors/router_actor.hpp"

namespace mosaic::actors {

namespace {

bool is_ip_literal(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::string tcp_endpoint(const std::string& host, int port) {
  return "tcp://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

peer_address address_of(const node_spec& n) {
  return peer_address{n.name, n.host, static_cast<uint16_t>(n.control_port)};
}

/// The node (other than `self`) that runs `kind`; the first in file order.
const node_spec* remote_node_with(const topology& topo, const node_spec& self, actor_kind kind) {
  for (const auto& n : topo.nodes)
    if (n.name != self.name && n.count(kind) != 0)
      return &n;
  return nullptr;
}

} // namespace

std::vector<peer_address> local_cluster::peers() const {
  return net_ ? net_->peers : std::vector<peer_address>{};
}

std::shared_ptr<peer_health> local_cluster::health() const {
  return net_ ? net_->health : nullptr;
}

result<std::unique_ptr<local_cluster>>
local_cluster::join(const topology& topo, std::string_view node_name, join_options jo) {
  const node_spec* self = topo.find_node(node_name);
  if (self == nullptr)
    return make_error(errc::not_found, "the topology has no node '", node_name, "'");
  // The prefill job and the library loads move from linker and kv_loader
  // to the prefill worker by handle (node_context tables): those three
  // share a node.
  const bool linker = self->count(actor_kind::linker) != 0,
             prefill = self->count(actor_kind::prefill) != 0,
             loader = self->count(actor_kind::kv_loader) != 0;
  if ((linker || prefill) && !(linker && prefill && loader))
    return make_error(errc::unsupported, "node '", self->name,
                      "' runs a linker or prefill actor without all three of linker, prefill and "
                      "kv_loader; put them on the same node (jobs and library loads move between "
                      "them by handle)");
  auto options = node_options_for_node(topo, node_name);
  if (!options)
    return std::move(options).err();
  auto ctx = node_context::create(std::move(*options));
  if (!ctx)
    return std::move(ctx).err();
  auto c = std::make_unique<local_cluster>(private_tag{});
  c->ctx_ = std::move(*ctx);
  c->net_ = std::make_unique<node_network>();
  auto& net = *c->net_;
  net.node = self->name;
  net.health->set_quiet(jo.quiet);
  const std::string bind = !jo.bind.empty()            ? jo.bind
                           : is_ip_literal(self->host) ? self->host
                                                       : std::string{"0.0.0.0"};

  // With keys in the topology the data plane is CURVE: this node's pair
  // from its key file, the other nodes' public keys from the topology.
  if (!self->public_key.empty()) {
    const std::string file = !jo.key_file.empty() ? jo.key_file : self->key_file;
    if (file.empty())
      return make_error(errc::invalid_argument, "node '", self->name,
                        "' has a public_key in the topology but no key file; pass --key-file or "
                        "set key_file: on the node");
    auto keys = kv::transfer::read_key_file(file);
    if (!keys)
      return make_error(keys.err().code, "node '", self->name, "': ", keys.err().message);
    if (keys->public_key != self->public_key)
      return make_error(errc::invalid_argument, "node '", self->name, "': the key file ", file,
                        " holds another public key than the topology gives this node");
    net.keys = std::move(*keys);
  }
  // Bulk into this node (KV for decode, embeddings for linkers).
  kv::transfer::receiver_options ro;
  if (net.keys) {
    ro.curve = kv::transfer::receiver_options::curve_keys{net.keys->secret_key, {}};
    for (const auto& n : topo.nodes)
      ro.curve->clients.push_back(n.public_key);
  }
  ro.budget_bytes = std::max<uint64_t>(c->ctx_->options.pool_bytes, uint64_t(256) << 20);
  ro.max_transfer_bytes = ro.budget_bytes;
  // Between machines a credit round trip costs more than in one process:
  // allow 64 chunks (64 MiB) in flight instead of 16 (kv_transfer_netns_bench).
  ro.window_chunks = 64;
  auto receiver = kv::transfer::kv_receiver::bind(net.zmq, tcp_endpoint(bind, self->data_port), ro);
  if (!receiver)
    return make_error(receiver.err().code, "node '", self->name, "': data_port ",
                      std::to_string(self->data_port), " on ", bind, ": ", receiver.err().message);
  net.receiver = std::move(*receiver);

  c->cfg_ = std::make_unique<caf::actor_system_config>();
  init_message_types(*c->cfg_);
  init_network(*c->cfg_);
  // The control plane over TLS when the topology gives certificates: both
  // ends present one, and each refuses a peer whose certificate the
  // cluster's CA did not sign (SSL_VERIFY_PEER | FAIL_IF_NO_PEER_CERT).
  const bool tls = !topo.tls_ca.empty();
  if (tls) {
    if (!openssl_error_queue_cleared_per_call())
      std::fprintf(stderr, "mosaic: warning: the workaround for CAF 0.17.6's stale OpenSSL error "
                           "queue is not in effect; a failed control connection may close "
                           "others (actors/openssl_error_queue.cpp)\n");
    c->cfg_->load<caf::openssl::manager>();
    c->cfg_->openssl_certificate = self->tls_cert;
    c->cfg_->openssl_key = self->tls_key;
    c->cfg_->openssl_cafile = topo.tls_ca;
  }
  c->cfg_->set("logger.console", caf::atom("none"));
  c->cfg_->set("scheduler.max-threads", 4);
  // Automatic connections are plain TCP, which a TLS control port refuses.
  c->cfg_->set("middleman.enable-automatic-connections", !tls);
  c->sys_ = std::make_unique<caf::actor_system>(*c->cfg_);
  auto& sys = *c->sys_;
  auto* ctxp = c->ctx_.get();

  // One link per (peer node, kind), made on first use.
  std::map<std::pair<std::string, std::string>, caf::actor> links;
  auto link_options = [&](const node_spec& peer, const std::string& kind) {
    peer_link_options lo;
    lo.peer = address_of(peer);
    lo.kind = kind;
    lo.from_node = self->name;
    lo.tls = tls;
    lo.directories = net.directories;
    return lo;
  };
  auto link_to = [&](const node_spec& peer, const std::string& kind) {
    auto& l = links[{peer.name, kind}];
    if (!l) {
      auto lo = link_options(peer, kind);
      l = spawn_peer_link(sys, lo, net.health);
      c->all_.push_back(l);
      if (std::none_of(net.peers.begin(), net.peers.end(),
                       [&](const peer_address& p) { return p.node == peer.name; }))
        net.peers.push_back(lo.peer);
    }
    return l;
  };
  std::map<actor_kind, caf::actor> local;
  auto has = [&](actor_kind k) { return self->count(k) != 0; };
  /// The local actor of `kind`, else a link to the node that runs it.
  auto peer = [&](actor_kind kind) -> caf::actor {
    if (auto it = local.find(kind); it != local.end())
      return it->second;
    if (const auto* n = remote_node_with(topo, *self, kind))
      return link_to(*n, to_string(kind));
    return nullptr;
  };
  auto keep = [&](actor_kind kind, caf::actor a) {
    local[kind] = a;
    c->all_.push_back(std::move(a));
  };

  const auto& o = ctxp->options;
  if (has(actor_kind::kv_loader)) {
    keep(actor_kind::kv_loader, spawn_kv_loader(sys, ctxp));
    c->actors_.push_back("kv_loader  detached     " + o.library_dir.string() + " (" +
                         std::string(ctxp->loader->io_name()) + ")");
  }
  if (has(actor_kind::encoder)) {
    keep(actor_kind::encoder, spawn_encoder(sys, ctxp, peer(actor_kind::kv_loader)));
    c->actors_.push_back("encoder    detached     " + o.device + ", cache " +
                         std::to_string(o.encoder_cache_bytes >> 20) + " MiB");
  }
  // Compiles and stores for this node's library (store after use; and
  // uploads when the topology's encoder is elsewhere: the compiled KV then
  // never crosses the network). An encoder of its own, so that background
  // compiles (which yield the device layer by layer) never hold up the
  // encodes of requests queued behind them.
  caf::actor storer;
  if (has(actor_kind::kv_loader)) {
    storer = spawn_encoder(sys, ctxp, local[actor_kind::kv_loader]);
    c->all_.push_back(storer);
    c->actors_.push_back("encoder    detached     compile + store for this node's library");
  }
  caf::actor intake;
  if (has(actor_kind::decode)) {
    keep(actor_kind::decode, spawn_decode(sys, ctxp));
    intake = spawn_kv_intake(sys, ctxp, net.receiver.get(), local[actor_kind::decode]);
    c->all_.push_back(intake);
    const auto pool = ctxp->engine->pool().stats();
    c->actors_.push_back("decode     detached     " + o.device + ", max_batch " +
                         std::to_string(o.decode_max_batch) + ", pool " +
                         std::to_string(pool.blocks_total) + " blocks x " +
                         std::to_string(pool.block_size) + " tokens; KV from other nodes on " +
                         net.receiver->endpoint());
  }
  // Misses are encoded where the topology's encoder runs; its output
  // comes back over the data plane (actors/embeddings_relay.hpp).
  auto encoder_for_linker = [&]() -> caf::actor {
    if (local.count(actor_kind::encoder))
      return local[actor_kind::encoder];
    auto link = peer(actor_kind::encoder);
    if (!link)
      return nullptr;
    auto a = spawn_embeddings_intake(sys, ctxp, net.receiver.get(), link);
    c->all_.push_back(a);
    return a;
  };
  if (has(actor_kind::prefill)) {
    prefill_peers pp;
    pp.encoder = storer ? storer : peer(actor_kind::encoder);
    pp.decode = peer(actor_kind::decode);
    std::string where = has(actor_kind::decode) ? "decode on this node" : "";
    if (has(actor_kind::decode)) { // the compress stage sits between local prefill and decode
      pp.compress = spawn_compress(sys, ctxp, local[actor_kind::decode]);
      c->all_.push_back(pp.compress);
    }
    if (!has(actor_kind::decode)) {
      // Every decode node of the topology; each request goes to the least
      // loaded one that is up (failover for requests not yet handed over).
      auto decoders = std::make_shared<remote_decoders>();
      for (const auto& d : topo.nodes) {
        if (d.name == self->name || d.count(actor_kind::decode) == 0)
          continue;
        auto outbox =
            std::make_shared<kv_outbox>(net.zmq, tcp_endpoint(d.host, d.data_port), address_of(d),
                                        net.health, net.sender_to(d.public_key));
        net.outboxes.push_back(outbox);
        decoders->add(link_to(d, "decode"), outbox);
        where += (where.empty() ? "KV to " : ", ") + outbox->endpoint();
      }
      if (!decoders->targets().empty())
        pp.remote_kv = std::move(decoders);
    }
    keep(actor_kind::prefill, spawn_prefill(sys, ctxp, std::move(pp)));
    c->actors_.push_back("prefill    detached     " + o.device + ", max_tokens " +
                         std::to_string(o.prefill_max_tokens) +
                         " (0: the model's context), chunks of " +
                         std::to_string(o.prefill_chunk_tokens) + ", prefix cache " +
                         (o.prefix_caching ? "on" : "off") + ", store after use " +
                         o.store_after_use + "; " + where);
  }
  if (has(actor_kind::linker)) {
    keep(actor_kind::linker,
         spawn_linker(sys, ctxp,
                      linker_peers{encoder_for_linker(), peer(actor_kind::kv_loader),
                                   peer(actor_kind::prefill)}));
    c->actors_.push_back("linker     cooperative  default policy " + o.default_policy.to_string());
  }
  if (has(actor_kind::router)) {
    // Every node with a linker is a prefill worker the router picks among
    // (actors/prefill_routing.hpp); its uploads are compiled and stored
    // into that node's library.
    std::vector<prefill_route> workers;
    if (has(actor_kind::linker))
      workers.push_back(
          prefill_route{"node '" + self->name + "'", local[actor_kind::linker], storer, {}});
    for (const auto& n : topo.nodes)
      if (n.name != self->name && n.count(actor_kind::linker) != 0)
        workers.push_back(prefill_route{"node '" + n.name + "'", link_to(n, "linker"),
                                        link_to(n, "uploader"), n.name});
    std::vector<caf::actor> libraries;
    if (has(actor_kind::kv_loader))
      libraries.push_back(local[actor_kind::kv_loader]);
    for (const auto& n : topo.nodes)
      if (n.name != self->name && n.count(actor_kind::kv_loader) != 0)
        libraries.push_back(link_to(n, "kv_loader"));
    caf::actor uploader = storer;
    if (!uploader && !workers.empty())
      uploader = workers.front().uploader;
    // Cancels of running requests go to every decode node.
    caf::actor decode_peer = peer(actor_kind::decode);
    if (!has(actor_kind::decode)) {
      std::vector<caf::actor> all_decode;
      for (const auto& d : topo.nodes)
        if (d.name != self->name && d.count(actor_kind::decode) != 0)
          all_decode.push_back(link_to(d, "decode"));
      if (all_decode.size() > 1) {
        decode_peer = spawn_fanout(sys, std::move(all_decode));
        c->all_.push_back(decode_peer);
      }
    }
    const size_t n_workers = workers.size();
    c->router_ = spawn_router(sys, ctxp,
                              router_peers{peer(actor_kind::linker), uploader, std::move(libraries),
                                           decode_peer, std::move(workers), net.health,
                                           uint32_t(self - topo.nodes.data())});
    keep(actor_kind::router, c->router_);
    c->actors_.push_back("router     cooperative  max_inflight " + std::to_string(o.max_inflight) +
                         ", queue " + std::to_string(o.max_queue) + ", " +
                         std::to_string(n_workers) + " prefill node(s), strategy " +
                         to_string(o.route_strategy));
  }

  // The directory: what peers get for each kind.
  std::map<std::string, caf::actor> gateways; // per requesting node; directory thread only
  auto* netp = &net;
  auto* sysp = &sys;
  const std::string self_name = self->name;
  auto topo_copy = std::make_shared<topology>(topo);
  auto resolve = [local, intake, storer, gateways, netp, sysp, ctxp, self_name, topo_copy](
                     const std::string& kind, const std::string& from) mutable -> caf::actor {
    if (kind == "uploader")
      return storer;
    if (kind == "decode" && from != self_name)
      return intake;
    if (kind == "encoder" && from != self_name && local.count(actor_kind::encoder)) {
      auto& g = gateways[from];
      if (!g) {
        const auto* n = topo_copy->find_node(from);
        if (n == nullptr)
          return nullptr;
        g = spawn_embeddings_gateway(*sysp, ctxp, netp->zmq, tcp_endpoint(n->host, n->data_port),
                                     self_name, local[actor_kind::encoder],
                                     netp->sender_to(n->public_key));
      }
      return g;
    }
    for (auto k : {actor_kind::router, actor_kind::encoder, actor_kind::kv_loader,
                   actor_kind::linker, actor_kind::prefill, actor_kind::decode})
      if (kind == to_string(k))
        if (auto it = local.find(k); it != local.end())
          return it->second;
    return nullptr;
  };
  auto directory = spawn_node_directory(sys, self->name, std::move(resolve), net.directories);
  c->all_.push_back(directory);
  net.directories->set_own(directory);
  // Under TLS a pair of nodes shares the one connection the node that
  // sorts first opens (peer_link.hpp, peer_directories): a peer that
  // sorts after this one and has no link from it may still need this
  // node, so a link to its directory opens the connection and introduces
  // this node (not waited for at start-up).
  if (tls)
    for (const auto& n : topo.nodes)
      if (n.name != self->name && dials(self->name, n.name, tls) &&
          std::none_of(links.begin(), links.end(),
                       [&](const auto& l) { return l.first.first == n.name; })) {
        c->all_.push_back(spawn_peer_link(sys, link_options(n, "directory"), nullptr));
      }
  auto port = tls ? caf::openssl::publish(directory, static_cast<uint16_t>(self->control_port),
                                          bind.c_str(), true)
                  : sys.middleman().publish(directory, static_cast<uint16_t>(self->control_port),
                                            bind.c_str(), true);
  if (!port)
    return make_error(errc::unavailable, "node '", self->name, "': cannot listen on control_port ",
                      std::to_string(self->control_port), " of ", bind, ": ",
                      sys.render(port.error()));
  c->actors_.push_back("directory  cooperative  " + bind + ":" + std::to_string(*port) +
                       (tls ? " (CAF middleman, TLS)" : " (CAF middleman)") + ", data plane " +
                       net.receiver->endpoint());

  std::vector<peer_address> missing;
  const auto deadline = std::chrono::steady_clock::now() + jo.connect_timeout;
  if (!net.health->wait_all(net.peers, deadline, missing)) {
    std::string names;
    for (const auto& m : missing)
      names += (names.empty() ? "" : ", ") + m.describe();
    return make_error(errc::timeout, "node '", self->name, "': no answer within ",
                      std::to_string(jo.connect_timeout.count()), " ms from peer ", names,
                      "; start `mosaic node --node NAME` there, or check host and control_port "
                      "in the topology");
  }
  return c;
}

} // namespace mosaic::actors
