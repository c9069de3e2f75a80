#include "actors/local_cluster.hpp"

#include <cstdio>
#include <thread>

#include <caf/all.hpp>

#include "actors/compress_actor.hpp"
#include "actors/decode_actor.hpp"
#include "actors/encoder_actor.hpp"
#include "actors/kv_loader_actor.hpp"
#include "actors/linker_actor.hpp"
#include "actors/node_network.hpp"
#include "actors/pipeline_messages.hpp"
#include "actors/prefill_actor.hpp"
#include "actors/router_actor.hpp"
#include "messages/error_convert.hpp"
#include "messages/readers.hpp"

namespace mosaic::actors {

namespace {

using steady = std::chrono::steady_clock;

double seconds_since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

struct client_state {
  std::shared_ptr<token_stream> stream;
  caf::actor router;
  uint64_t id = 0;
  uint32_t streamed = 0; ///< token events received
  /// The answer, held back while streamed tokens it counts are still on
  /// their way: across nodes they take another path than the answer
  /// (decode → front directly vs. the response chain), so CAF's per-pair
  /// ordering does not put them first.
  std::optional<token_event_msg> answer;
  static inline const char* name = "client";
};

/// One request's client: sends it to the router, feeds its stream, and
/// on cancel tells the router and goes away (the decode worker watches it).
caf::behavior client_actor(caf::stateful_actor<client_state>* self,
                           std::shared_ptr<token_stream> stream, caf::actor router,
                           generate_request_msg req, int64_t deadline_unix_ns) {
  self->state.stream = stream;
  self->state.router = router;
  // A client stopped without an answer (node shutdown) ends its stream.
  self->attach_functor([stream] {
    stream->end(make_error(errc::unavailable, "the node shut down before the request ended"));
  });
  self->request(router, until_deadline(deadline_unix_ns), generate_atom_v, std::move(req),
                caf::actor_cast<caf::actor>(self))
      .then(
          [self](const token_event_msg& last) {
            auto ev = read_token_event(last);
            if (ev.finish != msg::FinishReason::none && self->state.streamed < ev.index) {
              self->state.answer = last;
              self->delayed_send(self, std::chrono::seconds{2}, caf::timeout_atom_v);
              return;
            }
            self->state.stream->finish(ev);
            self->quit();
          },
          [self](const caf::error& err) {
            self->state.stream->end(from_caf_error(err));
            self->quit();
          });
  return {
      [self](token_atom, const token_event_msg& m) {
        auto ev = read_token_event(m);
        auto& st = self->state;
        st.id = ev.request_id;
        if (ev.finish == msg::FinishReason::none)
          ++st.streamed;
        st.stream->push(ev);
        if (st.answer && st.streamed >= read_token_event(*st.answer).index) {
          st.stream->finish(read_token_event(*st.answer));
          self->quit();
        }
      },
      [self](caf::timeout_atom) { // streamed tokens lost with a node: end with what came
        if (self->state.answer)
          self->state.stream->finish(read_token_event(*self->state.answer));
        self->quit();
      },
      [self](cancel_atom) {
        if (self->state.id != 0)
          self->send(self->state.router, cancel_atom_v,
                     make_cancel_msg(self->state.id, "the client cancelled"));
        self->state.stream->end(make_error(errc::cancelled, "cancelled by the client"));
        self->quit();
      },
  };
}

} // namespace

// -- token_stream -----------------------------------------------------------------

token_stream::token_stream(steady::time_point submitted) : submitted_(submitted) {}

void token_stream::attach(caf::actor client) {
  std::lock_guard lock{mutex_};
  client_ = std::move(client);
}

void token_stream::push(const wire::token_event& ev) {
  std::lock_guard lock{mutex_};
  // The last event comes twice, streamed and as the answer; the answer
  // ends the stream, so that a finished stream's request has left every
  // actor (and the router has counted it).
  if (finished_ || ev.finish != msg::FinishReason::none)
    return;
  if (result_.request_id == 0)
    result_.request_id = ev.request_id;
  if (first_) {
    first_ = false;
    result_.ttft_seconds = seconds_since(submitted_);
  }
  result_.tokens.push_back(ev.token_id);
  result_.text += ev.text;
  if (!ev.logprobs.empty())
    result_.logprobs.push_back(ev.logprobs);
  if (!ev.prompt_token_ids.empty())
    result_.prompt_token_ids = ev.prompt_token_ids;
  unread_.push_back(ev);
  cv_.notify_all();
}

void token_stream::finish(const wire::token_event& last) {
  std::lock_guard lock{mutex_};
  if (finished_)
    return;
  if (result_.request_id == 0)
    result_.request_id = last.request_id;
  if (first_) {
    first_ = false;
    result_.ttft_seconds = seconds_since(submitted_);
  }
  finished_ = true;
  result_.finish = last.finish;
  if (!last.prompt_token_ids.empty()) // no token came
    result_.prompt_token_ids = last.prompt_token_ids;
  result_.usage = last.usage;
  result_.image_tokens = last.image_tokens;
  result_.compression = last.compression;
  result_.total_seconds = seconds_since(submitted_);
  error_ = last.err;
  client_ = nullptr;
  unread_.push_back(last);
  cv_.notify_all();
}

void token_stream::end(const error& err) {
  std::lock_guard lock{mutex_};
  if (finished_)
    return;
  finished_ = true;
  error_ =
      err.code == errc::none ? make_error(errc::internal, "stream ended without a reason") : err;
  result_.finish = err.code == errc::timeout     ? msg::FinishReason::timeout
                   : err.code == errc::cancelled ? msg::FinishReason::cancelled
                                                 : msg::FinishReason::error;
  result_.total_seconds = seconds_since(submitted_);
  client_ = nullptr;
  cv_.notify_all();
}

std::optional<wire::token_event> token_stream::next(std::chrono::milliseconds timeout) {
  std::unique_lock lock{mutex_};
  cv_.wait_for(lock, timeout, [this] { return !unread_.empty() || finished_; });
  if (unread_.empty())
    return std::nullopt;
  auto ev = std::move(unread_.front());
  unread_.pop_front();
  return ev;
}

result<completion> token_stream::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock{mutex_};
  if (!cv_.wait_for(lock, timeout, [this] { return finished_; }))
    return make_error(errc::timeout, "no end of the request within ",
                      std::to_string(timeout.count()), " ms");
  if (error_.code != errc::none)
    return error_;
  return result_;
}

void token_stream::cancel() {
  caf::actor client;
  {
    std::lock_guard lock{mutex_};
    client = client_;
  }
  if (client)
    caf::anon_send(client, cancel_atom_v);
}

bool token_stream::finished() const {
  std::lock_guard lock{mutex_};
  return finished_;
}

uint64_t token_stream::request_id() const {
  std::lock_guard lock{mutex_};
  return result_.request_id;
}

// -- local_cluster -------------------------------------------------------------------

namespace {

result<node_options> options_of(const topology& topo, std::string_view node, bool every_role) {
  if (topo.nodes.empty())
    return make_error(errc::invalid_argument, "the topology has no nodes");
  const node_spec* n = node.empty() ? &topo.nodes.front() : topo.find_node(node);
  if (n == nullptr)
    return make_error(errc::not_found, "the topology has no node '", node, "'");
  node_options o;
  o.model = topo.model;
  o.threads = n->threads;
  if (!n->devices.empty())
    o.device = n->devices.front().to_string();
  o.default_policy = topo.defaults.policy;
  o.default_deadline_ms = topo.defaults.deadline_ms;
  o.default_max_tokens = topo.defaults.max_tokens;
  for (auto kind : {actor_kind::router, actor_kind::encoder, actor_kind::kv_loader,
                    actor_kind::linker, actor_kind::prefill, actor_kind::decode})
    if (every_role && n->count(kind) == 0)
      return make_error(errc::unsupported, "node '", n->name, "' runs no ", to_string(kind),
                        " actor; one process runs every role of one node (split roles over "
                        "processes with `mosaic node`)");
  o.prefill_workers = std::max(1, static_cast<int>(n->count(actor_kind::prefill)));
  for (const auto& a : n->actors) {
    if (const auto* f = a.get<frontend_spec>())
      o.max_inflight = f->max_concurrent;
    if (const auto* r = a.get<router_spec>())
      o.route_strategy = r->strategy;
    if (const auto* e = a.get<encoder_spec>()) {
      o.encoder_cache_bytes = e->cache_bytes();
      o.device = e->device.to_string();
    }
    if (const auto* k = a.get<kv_loader_spec>()) {
      o.library_dir = k->library;
      o.ram_budget_bytes = k->ram_bytes();
      o.disk_budget_bytes = k->disk_bytes();
      o.storage =
          k->storage == kv_storage_dtype::bf16 ? kv::storage_dtype::bf16 : kv::storage_dtype::f16;
      o.io = k->io == kv_io_engine::pread ? kv::io_mode::pread : kv::io_mode::automatic;
      o.queue_depth = static_cast<unsigned>(k->queue_depth);
      o.static_ttl = std::chrono::seconds{k->ttl_s};
    }
    if (const auto* p = a.get<prefill_spec>()) {
      o.prefill_max_tokens = p->max_tokens;
      o.prefill_chunk_tokens = p->chunk_tokens;
      o.prefix_caching = p->prefix_cache;
      o.store_after_use = p->store_after_use;
      o.default_compression = p->compression;
      o.schedule = p->schedule;
    }
    if (const auto* d = a.get<decode_spec>()) {
      o.pool_bytes = d->pool_bytes();
      o.block_size = d->block_size;
      o.decode_max_batch = d->max_batch;
    }
  }
  if (!every_role) {
    o.with_library = n->count(actor_kind::kv_loader) != 0;
    if (n->count(actor_kind::decode) == 0)
      o.pool_bytes = n->count(actor_kind::prefill) != 0 ? uint64_t(512) << 20 : uint64_t(16) << 20;
  }
  return o;
}

} // namespace

result<node_options> node_options_from_topology(const topology& topo, std::string_view node) {
  return options_of(topo, node, true);
}

result<node_options> node_options_for_node(const topology& topo, std::string_view node) {
  return options_of(topo, node, false);
}

result<std::unique_ptr<local_cluster>> local_cluster::start(const topology& topo,
                                                            std::string_view node) {
  auto o = node_options_from_topology(topo, node);
  if (!o)
    return std::move(o).err();
  return start(std::move(*o));
}

result<std::unique_ptr<local_cluster>> local_cluster::start(node_options options) {
  auto ctx = node_context::create(std::move(options));
  if (!ctx)
    return std::move(ctx).err();
  auto c = std::make_unique<local_cluster>(private_tag{});
  c->ctx_ = std::move(*ctx);
  c->cfg_ = std::make_unique<caf::actor_system_config>();
  init_message_types(*c->cfg_);
  c->cfg_->set("logger.console", caf::atom("none"));
  c->cfg_->set("scheduler.max-threads", 2);
  c->sys_ = std::make_unique<caf::actor_system>(*c->cfg_);
  auto& sys = *c->sys_;
  auto* ctxp = c->ctx_.get();
  auto loader = spawn_kv_loader(sys, ctxp);
  auto encoder = spawn_encoder(sys, ctxp, loader);
  // Store after use runs in an encoder of its own: a compile is background
  // work that yields the device layer by layer, and must not hold up the
  // encodes of requests behind it in one mailbox.
  auto storer = spawn_encoder(sys, ctxp, loader);
  auto decode = spawn_decode(sys, ctxp);
  auto compress = spawn_compress(sys, ctxp, decode);
  // One linker per prefill worker; the router picks among them.
  router_peers rp{nullptr, encoder, {loader}, decode, {}, nullptr};
  const int n_workers = std::max(1, ctxp->options.prefill_workers);
  for (int i = 0; i < n_workers; ++i) {
    auto prefill = spawn_prefill(sys, ctxp, prefill_peers{storer, decode, compress, nullptr});
    auto linker = spawn_linker(sys, ctxp, linker_peers{encoder, loader, prefill});
    rp.prefill.push_back(prefill_route{"local " + std::to_string(i), linker, encoder, {}});
    c->workers_.push_back({linker, prefill});
  }
  rp.linker = rp.prefill.front().linker;
  c->router_ = spawn_router(sys, ctxp, std::move(rp));
  c->all_ = {c->router_};
  for (const auto& [linker, prefill] : c->workers_) {
    c->all_.push_back(linker);
    c->all_.push_back(prefill);
  }
  for (auto a : {compress, decode, encoder, storer, loader})
    c->all_.push_back(a);
  const auto& o = ctxp->options;
  const auto pool = ctxp->engine->pool().stats();
  c->actors_ = {
      "router     cooperative  max_inflight " + std::to_string(o.max_inflight) + ", queue " +
          std::to_string(o.max_queue),
      "linker     cooperative  default policy " + o.default_policy.to_string(),
      "prefill    detached     " + o.device + ", max_tokens " +
          (o.prefill_max_tokens > 0 ? std::to_string(o.prefill_max_tokens)
                                    : std::to_string(ctxp->engine->config().text.context_length()) +
                                          " (the model's context)") +
          ", chunks of " + std::to_string(o.prefill_chunk_tokens) + ", prefix cache " +
          (o.prefix_caching ? "on" : "off") + ", store after use " + o.store_after_use +
          (n_workers > 1 ? ", " + std::to_string(n_workers) + " workers (strategy " +
                               to_string(o.route_strategy) + ")"
                         : std::string{}),
      "compress   detached     " + o.device + ", default " + o.default_compression.to_string(),
      "decode     detached     " + o.device + ", max_batch " + std::to_string(o.decode_max_batch) +
          ", pool " + std::to_string(pool.blocks_total) + " blocks x " +
          std::to_string(pool.block_size) + " tokens",
      "encoder    detached     " + o.device + ", cache " +
          std::to_string(o.encoder_cache_bytes >> 20) + " MiB",
      "kv_loader  detached     " + o.library_dir.string() + " (" +
          std::string(ctxp->loader->io_name()) + ")",
  };
  return c;
}

local_cluster::local_cluster(private_tag) {}

size_t local_cluster::prefill_workers() const {
  return workers_.size();
}

status local_cluster::stop_prefill_worker(size_t i) {
  if (i >= workers_.size())
    return make_error(errc::invalid_argument, "no local prefill worker ", std::to_string(i),
                      " (this node runs ", std::to_string(workers_.size()), ")");
  for (auto& a : {workers_[i].first, workers_[i].second})
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  return {};
}

local_cluster::~local_cluster() {
  if (net_ && net_->receiver) {
    // The decode side's evidence that KV receipt overlapped the prefill
    // passes (the DecodeTask is sent after the pass; see kv_relay.hpp).
    // Printed before the teardown below, which can take a while with
    // peers still connected (a supervisor that kills a slow stop must not
    // lose it).
    const auto st = net_->receiver->stats();
    if (st.taken > 0) {
      std::printf("data plane: %llu transfers taken, %llu layers, %llu of them had arrived "
                  "before they were asked for (decode node: before the DecodeTask, i.e. during "
                  "the prefill pass)\n",
                  static_cast<unsigned long long>(st.taken),
                  static_cast<unsigned long long>(st.layers_taken),
                  static_cast<unsigned long long>(st.layers_early));
      std::fflush(stdout);
    }
  }
  {
    std::lock_guard lock{clients_mutex_};
    for (auto& [stream, client] : clients_)
      caf::anon_send_exit(client, caf::exit_reason::user_shutdown);
    clients_.clear();
  }
  for (auto& a : all_)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  all_.clear();
  workers_.clear(); // a detached actor's thread ends once its last handle is gone
  router_ = nullptr;
  sys_.reset(); // waits for every actor, detached ones included
}

std::shared_ptr<token_stream> local_cluster::submit(const wire::generate_request& req) {
  auto stream = std::make_shared<token_stream>(steady::now());
  if (!router_) {
    stream->end(make_error(errc::unsupported, "this node runs no router; send requests to the "
                                              "node with the frontend"));
    return stream;
  }
  const int64_t deadline =
      req.deadline_unix_ns != 0
          ? req.deadline_unix_ns
          : unix_now_ns() + int64_t(ctx_->options.default_deadline_ms) * 1'000'000;
  auto msg = make_generate_request_msg(req);
  auto client = sys_->spawn(client_actor, stream, router_, std::move(msg), deadline);
  stream->attach(client);
  std::lock_guard lock{clients_mutex_};
  if (clients_.size() >= 256)
    std::erase_if(clients_, [](const auto& c) {
      auto s = c.first.lock();
      return !s || s->finished();
    });
  clients_.emplace_back(stream, std::move(client));
  return stream;
}

result<upload_result> local_cluster::upload(std::string_view tenant, std::span<const uint8_t> image,
                                            std::chrono::milliseconds timeout) {
  if (!router_)
    return make_error(errc::unsupported, "this node runs no router; upload through the node with "
                                         "the frontend");
  wire::encode_request req;
  req.tenant = std::string{tenant};
  req.deadline_unix_ns = unix_now_ns() + timeout.count() * 1'000'000;
  req.image = wire::image_data_segment{{image.begin(), image.end()}, {}};
  req.compile = true;
  caf::scoped_actor self{*sys_};
  result<upload_result> out = make_error(errc::internal, "no answer to the upload");
  self->request(router_, timeout + hop_slack, encode_atom_v, make_encode_request_msg(req))
      .receive(
          [&](const encode_result_msg& r) {
            if (auto st = to_status(r->error()); !st) {
              out = st.err();
              return;
            }
            upload_result u;
            u.image_key = from_key(r->key());
            u.n_tokens = r->n_tokens();
            u.encoder_cache_hit = r->encoder_cache_hit();
            out = u;
          },
          [&](const caf::error& err) { out = from_caf_error(err); });
  return out;
}

bool local_cluster::wait_idle(std::chrono::milliseconds grace) const {
  const auto until = std::chrono::steady_clock::now() + grace;
  auto idle = [this] {
    return ctx_->jobs.size() == 0 && ctx_->sequences.size() == 0 &&
           ctx_->compress_jobs.size() == 0 &&
           (!ctx_->engine || ctx_->engine->pool().stats().sequences == 0);
  };
  while (!idle()) {
    if (std::chrono::steady_clock::now() >= until)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  return true;
}

status local_cluster::remove(std::string_view tenant, const digest& image_key,
                             std::chrono::milliseconds timeout) {
  if (!router_)
    return make_error(errc::unsupported, "this node runs no router; delete through the node with "
                                         "the frontend");
  wire::library_lookup req;
  req.tenant = std::string{tenant};
  req.keys = {image_key};
  req.include_shared = false;
  caf::scoped_actor self{*sys_};
  status out = make_error(errc::internal, "no answer to the delete");
  self->request(router_, timeout + hop_slack, remove_atom_v, make_library_lookup_msg(req))
      .receive([&](const store_result_msg& r) { out = to_status(r->error()); },
               [&](const caf::error& err) { out = from_caf_error(err); });
  return out;
}

} // namespace mosaic::actors
