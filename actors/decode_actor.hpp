#pragma once

// The decode worker: continuous batching over the node's paged KV pool.
// A decode task adopts a prefilled sequence by handle
// (node_context::sequences[request_id]) and joins the batch between two
// steps; each step decodes one token for up to `decode_max_batch`
// sequences. Every token goes to the request's sink as a token event the
// moment it is sampled; a sequence ends on EOS, a stop string, max_tokens,
// its deadline (errc::timeout), a cancel message, or its sink going down,
// and its blocks return to the pool at once. Detached: steps are heavy
// compute. A request the node's stage scheduler tracks
// (actors/stage_admission.hpp) streams its first token on arrival but
// joins the batch only when the scheduler's decode batch admits it; it
// leaves the scheduler when it ends.
//
//   (decode_atom, decode_task_msg, caf::actor sink) -> token_event_msg (the last)
//   (cancel_atom, cancel_msg)                        -> (nothing)
//   (wake_atom)                                      the scheduler may admit more
//   sink → (token_atom, token_event_msg) per token, the last with finish != none

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/node_context.hpp"

namespace mosaic::actors {

caf::actor spawn_decode(caf::actor_system& sys, node_context* ctx);

} // namespace mosaic::actors
