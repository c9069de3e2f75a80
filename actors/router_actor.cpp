#include "actors/router_actor.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <unordered_set>

#include <caf/all.hpp>

#include "actors/pipeline_messages.hpp"
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
};

struct router_state {
  node_context* ctx = nullptr;
  router_peers peers;
  uint64_t next_id = 1;
  int inflight = 0;
  std::unordered_set<uint64_t> running;
  std::deque<routed_request> queue;
  static inline const char* name = "router";
};

using router_ptr = caf::stateful_actor<router_state>*;

/// Publishes the admission queue's length (node_stats::waiting).
void queue_changed(router_state& st) {
  st.ctx->counters.admission_queue = st.queue.size();
}

void pump(router_ptr self);

/// Counts and answers a request that ends here.
void end_request(router_ptr self, routed_request& r, const error& err) {
  self->state.ctx->counters.failed++;
  if (err.code == errc::overloaded)
    self->state.ctx->counters.overloaded++;
  r.rp.deliver(to_caf_error(err));
}

void dispatch(router_ptr self, routed_request r) {
  auto& st = self->state;
  st.inflight++;
  st.running.insert(r.id);
  auto* ctx = st.ctx;
  auto done = [self, id = r.id] {
    self->state.inflight--;
    self->state.running.erase(id);
    pump(self);
  };
  auto rp = r.rp;
  r.req.admission_wait_us =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::steady_clock::now() - r.arrived)
                                .count());
  self->request(st.peers.linker, until_deadline(r.deadline_unix_ns), generate_atom_v,
                make_generate_request_msg(r.req), r.sink)
      .then(
          [rp, ctx, done](const token_event_msg& last) mutable {
            const bool ok = last->error() == nullptr;
            (ok ? ctx->counters.completed : ctx->counters.failed)++;
            done(); // admit the next request before answering this one
            rp.deliver(last);
          },
          [rp, ctx, done](const caf::error& err) mutable {
            ctx->counters.failed++;
            done();
            rp.deliver(err);
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
  req.image = std::move(img);
  auto rp = self->make_response_promise<encode_result_msg>();
  self->request(st.peers.encoder, until_deadline(req.deadline_unix_ns), encode_atom_v,
                make_encode_request_msg(req))
      .then([rp](const encode_result_msg& r) mutable { rp.deliver(r); },
            [rp](const caf::error& err) mutable { rp.deliver(err); });
  return rp;
}

caf::behavior router_actor(router_ptr self, node_context* ctx, router_peers peers) {
  self->state.ctx = ctx;
  self->state.peers = std::move(peers);
  return {
      [self](generate_atom, const generate_request_msg& m, const caf::actor& sink) {
        return on_generate(self, m, sink);
      },
      [self](generate_atom, uint64_t id) { on_admission_deadline(self, id); },
      [self](cancel_atom, const cancel_msg& m) { on_cancel(self, m); },
      [self](encode_atom, const encode_request_msg& m) { return on_upload(self, m); },
  };
}

} // namespace

caf::actor spawn_router(caf::actor_system& sys, node_context* ctx, router_peers peers) {
  return sys.spawn(router_actor, ctx, std::move(peers));
}

} // namespace mosaic::actors
