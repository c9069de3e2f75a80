#include "actors/router_actor.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <unordered_map>
#include <unordered_set>

#include <caf/all.hpp>

#include "actors/peer_link.hpp"
#include "actors/pipeline_messages.hpp"
#include "actors/prefill_routing.hpp"
#include "messages/error_convert.hpp"
#include "messages/readers.hpp"

namespace mosaic::actors {

namespace {

/// A request admitted or waiting for admission.
struct routed_request {
  uint64_t id = 0;
  int64_t deadline_unix_ns = 0;
  wire::generate_request req; ///< with the router's id and deadline
  std::chrono::steady_clock::time_point arrived;
  caf::actor sink;
  caf::typed_response_promise<token_event_msg> rp;
  // -- routing ------------------------------------------------------------------
  uint32_t n_images = 0;
  uint64_t tokens = 0;       ///< prompt tokens, estimated (the load it adds to a worker)
  std::vector<digest> keys;  ///< route keys of its images (cache_aware, several workers)
  std::vector<bool> refused; ///< per worker: refused it unsent (not asked again)
  bool by_key = false;       ///< names an image by key (only libraries that hold it can serve it)
};

/// An upload on its way to a worker's library.
struct upload_job {
  wire::encode_request req;
  std::vector<digest> keys; ///< its route key (several workers)
  caf::typed_response_promise<encode_result_msg> rp;
  int tries = 0;
};

/// A prefill worker and what the router knows of it.
struct worker {
  prefill_route route;
  bool alive = true; ///< local: false once its linker stopped
  uint32_t inflight = 0;
  uint64_t tokens = 0; ///< prompt tokens of its requests (and uploads) in flight
};

struct router_state {
  node_context* ctx = nullptr;
  router_peers peers;
  uint64_t next_id = 1;
  int inflight = 0;
  std::unordered_set<uint64_t> running;
  std::deque<routed_request> queue;
  std::vector<worker> workers;
  affinity_index held;
  size_t rr_next = 0;
  uint32_t image_tokens = 0;
  std::unordered_map<uint64_t, std::shared_ptr<upload_job>> uploads_waiting; ///< by request id
  static inline const char* name = "router";
};

using router_ptr = caf::stateful_actor<router_state>*;

/// Publishes the admission queue's length (node_stats::waiting).
void queue_changed(router_state& st) {
  st.ctx->counters.admission_queue = st.queue.size();
}

void pump(router_ptr self);

bool is_up(const router_state& st, const worker& w) {
  if (!w.alive)
    return false;
  return w.route.node.empty() || !st.peers.health || st.peers.health->up(w.route.node);
}

/// The worker for a request (or upload) with these images; nullopt when
/// none is up. `refused`: workers not to ask (empty: none).
std::optional<route_choice> choose(router_state& st, uint32_t n_images,
                                   const std::vector<digest>& keys,
                                   const std::vector<bool>& refused) {
  std::vector<route_candidate> c(st.workers.size());
  for (size_t i = 0; i < st.workers.size(); ++i) {
    const auto& w = st.workers[i];
    c[i].up = is_up(st, w) && (i >= refused.size() || !refused[i]);
    c[i].inflight_requests = w.inflight;
    c[i].inflight_tokens = w.tokens;
    c[i].held_images = keys.empty() ? 0 : st.held.count_held(i, keys);
  }
  const auto& o = st.ctx->options;
  auto pick = pick_prefill(c, o.route_strategy, {o.route_miss_weight, o.route_load_weight},
                           n_images, st.image_tokens, st.rr_next);
  if (pick)
    st.rr_next = (pick->worker + 1) % st.workers.size();
  return pick;
}

/// "no prefill worker is up (node 'p0' down, local 1 stopped)".
error none_up(const router_state& st) {
  std::string why;
  for (const auto& w : st.workers)
    why += (why.empty() ? "" : ", ") + w.route.name + (w.alive ? " down" : " stopped");
  return make_error(errc::unavailable, "no prefill worker is up (", why,
                    "); retry when one is back");
}

/// Prompt tokens of a request, estimated without tokenising: the images'
/// tokens plus about four bytes of text per token.
uint64_t estimate_tokens(const wire::generate_request& req, uint32_t image_tokens,
                         uint32_t& n_images) {
  uint64_t text = 0;
  n_images = 0;
  for (const auto& seg : req.segments) {
    if (const auto* t = std::get_if<wire::text_segment>(&seg))
      text += t->text.size();
    else
      ++n_images;
  }
  return uint64_t(n_images) * image_tokens + text / 4 + 1;
}

/// True when `err` says the request never reached the worker: a local
/// linker that had stopped, or a peer link refusing while its node is down.
bool never_reached(const caf::error& err) {
  return err == caf::make_error(caf::sec::request_receiver_down) ||
         refused_unsent(from_caf_error(err));
}

/// Counts and answers a request that ends here.
void end_request(router_ptr self, routed_request& r, const error& err) {
  self->state.ctx->counters.failed++;
  if (err.code == errc::overloaded)
    self->state.ctx->counters.overloaded++;
  r.rp.deliver(to_caf_error(err));
}

void send_to_worker(router_ptr self, std::shared_ptr<routed_request> r);

/// Takes a slot and sends the request to a prefill worker.
void dispatch(router_ptr self, routed_request r) {
  auto& st = self->state;
  st.inflight++;
  st.running.insert(r.id);
  r.req.admission_wait_us =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::steady_clock::now() - r.arrived)
                                .count());
  send_to_worker(self, std::make_shared<routed_request>(std::move(r)));
}

/// Frees the request's slot and admits the next waiting one.
void release(router_ptr self, uint64_t id) {
  self->state.inflight--;
  self->state.running.erase(id);
  pump(self);
}

void send_to_worker(router_ptr self, std::shared_ptr<routed_request> r) {
  auto& st = self->state;
  auto* ctx = st.ctx;
  auto pick = choose(st, r->n_images, r->keys, r->refused);
  if (!pick) {
    release(self, r->id);
    return end_request(self, *r, none_up(st));
  }
  const size_t i = pick->worker;
  auto& w = st.workers[i];
  w.inflight++;
  w.tokens += r->tokens;
  if (pick->held_images > 0) {
    ctx->counters.routed_by_affinity++;
    ctx->counters.routed_images_held += pick->held_images;
  }
  {
    std::lock_guard lock{ctx->routed_mutex};
    ctx->routed_per_worker[i]++;
  }
  auto left = [self, i, tokens = r->tokens] {
    auto& w = self->state.workers[i];
    w.inflight--;
    w.tokens -= tokens;
  };
  self->request(w.route.linker, until_deadline(r->deadline_unix_ns), generate_atom_v,
                make_generate_request_msg(r->req), r->sink)
      .then(
          [self, r, ctx, left, i](const token_event_msg& last) mutable {
            left();
            const bool ok = last->error() == nullptr;
            if (ok) // a hit was in its library; a miss is stored there after use
              for (const auto& k : r->keys)
                self->state.held.record(i, k);
            (ok ? ctx->counters.completed : ctx->counters.failed)++;
            release(self, r->id); // admit the next request before answering this one
            r->rp.deliver(last);
          },
          [self, r, ctx, left, i](const caf::error& err) mutable {
            left();
            auto& st = self->state;
            const bool unsent = never_reached(err);
            // A key another worker's library may hold: the linker failed
            // it at lookup, before anything started.
            const bool elsewhere =
                r->by_key && st.workers.size() > 1 && from_caf_error(err).code == errc::not_found;
            if ((unsent || elsewhere) && !deadline_passed(r->deadline_unix_ns)) {
              if (unsent && st.workers[i].route.node.empty())
                st.workers[i].alive = false;
              r->refused.resize(st.workers.size());
              r->refused[i] = true;
              bool other = false;
              for (size_t j = 0; j < st.workers.size(); ++j)
                other = other || (!r->refused[j] && is_up(st, st.workers[j]));
              if (unsent || other)
                return send_to_worker(self, r); // failover: it has not started anywhere
            }
            ctx->counters.failed++;
            release(self, r->id);
            r->rp.deliver(err);
          });
}

/// Admits waiting requests while slots are free.
void pump(router_ptr self) {
  auto& st = self->state;
  while (st.inflight < st.ctx->options.max_inflight && !st.queue.empty()) {
    auto r = std::move(st.queue.front());
    st.queue.pop_front();
    queue_changed(st);
    if (deadline_passed(r.deadline_unix_ns)) {
      end_request(self, r,
                  make_error(errc::overloaded, "overloaded: request ", std::to_string(r.id),
                             " waited for admission past its deadline; retry later"));
      continue;
    }
    dispatch(self, std::move(r));
  }
}

caf::result<token_event_msg> on_generate(router_ptr self, const generate_request_msg& m,
                                         const caf::actor& sink) {
  auto& st = self->state;
  auto req = read_generate_request(m);
  if (!req)
    return to_caf_error(req.err());
  req->request_id = st.next_id++;
  if (req->deadline_unix_ns == 0)
    req->deadline_unix_ns =
        unix_now_ns() + int64_t(st.ctx->options.default_deadline_ms) * 1'000'000;
  if (req->sampling.max_tokens == 0)
    req->sampling.max_tokens = static_cast<uint32_t>(st.ctx->options.default_max_tokens);
  if (deadline_passed(req->deadline_unix_ns)) {
    st.ctx->counters.failed++;
    return to_caf_error(make_error(errc::timeout, "request ", std::to_string(req->request_id),
                                   " arrived after its deadline"));
  }
  st.ctx->counters.requests++;
  routed_request r;
  r.id = req->request_id;
  r.deadline_unix_ns = req->deadline_unix_ns;
  r.req = std::move(*req);
  r.arrived = std::chrono::steady_clock::now();
  r.sink = sink;
  r.rp = self->make_response_promise<token_event_msg>();
  r.tokens = estimate_tokens(r.req, st.image_tokens, r.n_images);
  r.by_key = std::any_of(r.req.segments.begin(), r.req.segments.end(), [](const auto& s) {
    return std::holds_alternative<wire::image_key_segment>(s);
  });
  if (st.workers.size() > 1 && st.ctx->options.route_strategy == router_strategy::cache_aware &&
      r.n_images > 0)
    r.keys = route_keys(r.req);
  auto rp = r.rp;
  if (st.inflight < st.ctx->options.max_inflight) {
    dispatch(self, std::move(r));
  } else if (st.queue.size() < size_t(st.ctx->options.max_queue)) {
    self->delayed_send(self, until_deadline(r.deadline_unix_ns, std::chrono::milliseconds{0}),
                       generate_atom_v, r.id);
    st.queue.push_back(std::move(r));
    queue_changed(st);
  } else {
    end_request(self, r,
                make_error(errc::overloaded, "overloaded: ", std::to_string(st.inflight),
                           " requests running and ", std::to_string(st.queue.size()),
                           " waiting; retry later"));
  }
  return rp;
}

/// A queued request's deadline: fail it with overloaded if still waiting.
void on_admission_deadline(router_ptr self, uint64_t id) {
  auto& q = self->state.queue;
  auto it = std::find_if(q.begin(), q.end(), [id](const auto& r) { return r.id == id; });
  if (it == q.end())
    return;
  auto r = std::move(*it);
  q.erase(it);
  queue_changed(self->state);
  end_request(self, r,
              make_error(errc::overloaded, "overloaded: request ", std::to_string(id),
                         " waited for admission until its deadline; retry later"));
}

void on_cancel(router_ptr self, const cancel_msg& m) {
  auto& st = self->state;
  const uint64_t id = m->request_id();
  auto it =
      std::find_if(st.queue.begin(), st.queue.end(), [id](const auto& r) { return r.id == id; });
  if (it != st.queue.end()) {
    auto r = std::move(*it);
    st.queue.erase(it);
    queue_changed(st);
    st.ctx->counters.cancelled++;
    end_request(self, r,
                make_error(errc::cancelled, "request ", std::to_string(id),
                           " was cancelled while waiting"));
    return;
  }
  if (st.running.count(id) != 0)
    self->send(st.peers.decode, cancel_atom_v, m);
}

/// Compiles and stores an upload into the library of the worker it is
/// routed to. A link that refuses it unsent (its peer's link is still
/// connecting, e.g. right after startup) is asked again 50 ms later, at
/// most 40 times and not past the deadline.
void send_upload(router_ptr self, std::shared_ptr<upload_job> job) {
  auto& st = self->state;
  auto pick = choose(st, 1, job->keys, {});
  if (!pick) {
    job->rp.deliver(to_caf_error(none_up(st)));
    return;
  }
  const size_t i = pick->worker;
  auto& w = st.workers[i];
  w.tokens += st.image_tokens;
  auto uploader = w.route.uploader ? w.route.uploader : st.peers.encoder;
  self->request(uploader, until_deadline(job->req.deadline_unix_ns), encode_atom_v,
                make_encode_request_msg(job->req))
      .then(
          [self, job, i](const encode_result_msg& r) mutable {
            auto& st = self->state;
            st.workers[i].tokens -= st.image_tokens;
            if (to_status(r->error()) && st.workers.size() > 1) { // compiled into its library
              for (const auto& k : job->keys)
                st.held.record(i, k);
              st.held.record(i, route_key_of_image_key(job->req.tenant, from_key(r->key())));
            }
            job->rp.deliver(r);
          },
          [self, job, i](const caf::error& err) mutable {
            auto& st = self->state;
            st.workers[i].tokens -= st.image_tokens;
            if (never_reached(err) && ++job->tries < 40 &&
                !deadline_passed(job->req.deadline_unix_ns)) {
              st.uploads_waiting.emplace(job->req.request_id, job);
              self->delayed_send(self, std::chrono::milliseconds{50}, encode_atom_v,
                                 job->req.request_id);
              return;
            }
            job->rp.deliver(err);
          });
}

caf::result<encode_result_msg> on_upload(router_ptr self, const encode_request_msg& m) {
  auto& st = self->state;
  wire::encode_request req;
  req.request_id = st.next_id++;
  req.tenant = m->tenant() ? m->tenant()->str() : std::string{};
  req.deadline_unix_ns =
      m->deadline_unix_ns() != 0
          ? m->deadline_unix_ns()
          : unix_now_ns() + int64_t(st.ctx->options.default_deadline_ms) * 1'000'000;
  req.compile = m->compile();
  req.shared = m->shared();
  const auto* data = m->image() ? m->image()->source_as_ImageData() : nullptr;
  if (data == nullptr || data->encoded() == nullptr)
    return to_caf_error(make_error(errc::invalid_argument, "an upload must carry image bytes"));
  wire::image_data_segment img;
  img.encoded.assign(data->encoded()->begin(), data->encoded()->end());
  img.mime = data->mime() ? data->mime()->str() : std::string{};
  auto job = std::make_shared<upload_job>();
  if (st.workers.size() > 1)
    job->keys.push_back(route_key_of_bytes(req.tenant, img.encoded));
  req.image = std::move(img);
  job->req = std::move(req);
  job->rp = self->make_response_promise<encode_result_msg>();
  send_upload(self, job);
  return job->rp;
}

/// Retries a waiting upload (its uploader link was not connected yet).
void on_upload_retry(router_ptr self, uint64_t id) {
  auto& waiting = self->state.uploads_waiting;
  auto it = waiting.find(id);
  if (it == waiting.end())
    return;
  auto job = std::move(it->second);
  waiting.erase(it);
  send_upload(self, std::move(job));
}

/// DELETE of a tenant's image: asks every library of the cluster. Done
/// when one removed it and every library answered; not_found when none
/// had it; unavailable when a library did not answer (a copy may remain).
caf::result<store_result_msg> on_remove(router_ptr self, const library_lookup_msg& m) {
  const auto& libs = self->state.peers.libraries;
  const uint64_t id = m->request_id();
  if (libs.empty())
    return make_store_result_msg(id, {}, 0,
                                 make_error(errc::not_found, "this cluster has no KV library"));
  struct gather {
    caf::typed_response_promise<store_result_msg> rp;
    size_t left = 0;
    bool removed = false;
    error failed{};  ///< a library refused (not not_found)
    error silent{};  ///< a library did not answer
  };
  auto g = std::make_shared<gather>();
  g->rp = self->make_response_promise<store_result_msg>();
  g->left = libs.size();
  auto done = [g, id] {
    if (--g->left != 0)
      return;
    error out{};
    if (g->failed.code != errc::none)
      out = g->failed;
    else if (g->silent.code != errc::none)
      out = make_error(errc::unavailable, g->removed ? "removed, but " : "",
                       "a library did not answer (", g->silent.message,
                       "); the image may remain there: retry the delete");
    else if (!g->removed)
      out = make_error(errc::not_found, "no library holds this image of the tenant");
    g->rp.deliver(make_store_result_msg(id, {}, 0, out));
  };
  for (const auto& lib : libs)
    self->request(lib, std::chrono::seconds{30}, remove_atom_v, m)
        .then(
            [g, done](const store_result_msg& r) {
              if (auto st = to_status(r->error()); st)
                g->removed = true;
              else if (st.err().code != errc::not_found && g->failed.code == errc::none)
                g->failed = st.err();
              done();
            },
            [g, done](const caf::error& err) {
              g->silent = from_caf_error(err);
              done();
            });
  return g->rp;
}

caf::behavior router_actor(router_ptr self, node_context* ctx, router_peers peers) {
  auto& st = self->state;
  st.ctx = ctx;
  st.peers = std::move(peers);
  st.next_id = first_request_id(st.peers.index);
  if (st.peers.prefill.empty())
    st.peers.prefill.push_back(prefill_route{"local", st.peers.linker, st.peers.encoder, {}});
  for (const auto& route : st.peers.prefill) {
    st.workers.push_back(worker{route});
    if (route.node.empty() && route.linker)
      self->monitor(route.linker);
  }
  st.held.resize(st.workers.size());
  st.image_tokens = ctx->engine ? static_cast<uint32_t>(ctx->engine->config().image_tokens()) : 0;
  // A local worker whose linker stopped gets no more requests.
  self->set_down_handler([self](caf::down_msg& dm) {
    for (auto& w : self->state.workers)
      if (w.route.linker && w.route.linker.address() == dm.source)
        w.alive = false;
  });
  return {
      [self](generate_atom, const generate_request_msg& m, const caf::actor& sink) {
        return on_generate(self, m, sink);
      },
      [self](generate_atom, uint64_t id) { on_admission_deadline(self, id); },
      [self](cancel_atom, const cancel_msg& m) { on_cancel(self, m); },
      [self](encode_atom, const encode_request_msg& m) { return on_upload(self, m); },
      [self](encode_atom, uint64_t id) { on_upload_retry(self, id); },
      [self](remove_atom, const library_lookup_msg& m) { return on_remove(self, m); },
  };
}

} // namespace

caf::actor spawn_router(caf::actor_system& sys, node_context* ctx, router_peers peers) {
  {
    // Before the actor starts: stats() shows every worker from the first call.
    std::lock_guard lock{ctx->routed_mutex};
    ctx->routed_per_worker.assign(std::max<size_t>(peers.prefill.size(), 1), 0);
  }
  return sys.spawn(router_actor, ctx, std::move(peers));
}

} // namespace mosaic::actors
