#pragma once

// The hand-off every pipeline stage ends with: send the request on to the
// next worker and answer the sender with that worker's answer (the
// request's last token event), so that the response chain reaches the
// client. When the next worker fails or never answers, `cleanup` first
// frees what was left for it in a handle table (its blocks return to the
// pool), then the error goes back.

#include <cstdint>
#include <utility>

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/result.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/pipeline_messages.hpp"

namespace mosaic::actors {

/// As forward_request, answering `rp` (a promise made when the request
/// arrived: a stage that queues requests hands them on later, from
/// another message's handler).
template <class Self, class Atom, class Msg, class Cleanup>
void forward_into(Self* self, caf::typed_response_promise<token_event_msg> rp,
                  const caf::actor& worker, int64_t deadline_unix_ns, Atom atom, Msg msg,
                  const caf::actor& sink, Cleanup cleanup) {
  self->request(worker, until_deadline(deadline_unix_ns), atom, std::move(msg), sink)
      .then([rp](const token_event_msg& last) mutable { rp.deliver(last); },
            [rp, cleanup](const caf::error& err) mutable {
              cleanup();
              rp.deliver(err);
            });
}

template <class Self, class Atom, class Msg, class Cleanup>
caf::result<token_event_msg> forward_request(Self* self, const caf::actor& worker,
                                             int64_t deadline_unix_ns, Atom atom, Msg msg,
                                             const caf::actor& sink, Cleanup cleanup) {
  auto rp = self->template make_response_promise<token_event_msg>();
  forward_into(self, rp, worker, deadline_unix_ns, atom, std::move(msg), sink, std::move(cleanup));
  return rp;
}

} // namespace mosaic::actors
