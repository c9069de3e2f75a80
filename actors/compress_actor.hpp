#pragma once

// The compress stage (FastCache, arXiv 2503.08461) between prefill and
// decode: for a request whose compression is not none, the prefill worker
// leaves its KV and plan in node_context::compress_jobs[request_id] and
// sends the decode task here instead of to decode. The stage runs
// `compress_kv` (engine/kv_compression.hpp) into the same paged pool,
// frees the uncompressed blocks the moment it finishes, and hands decode
// the compressed sequence (node_context::sequences[request_id]) with the
// position of the first decoded token and what compression did (reported
// with the request's last token event). When the pool has no room for the
// compressed copy the request decodes uncompressed (counted in
// `compress_fallbacks`); other compression errors fail the request.
// Detached: compression is compute (snapkv re-runs the observation window).
// With a stage scheduler (actors/stage_admission.hpp) the stage runs the
// compress batches it forms, once every batch member's task has arrived.
//
//   (compress_atom, compress_task_msg, caf::actor sink) -> token_event_msg (the last)
//   (wake_atom)  a compress batch may form

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/node_context.hpp"

namespace mosaic::actors {

caf::actor spawn_compress(caf::actor_system& sys, node_context* ctx, caf::actor decode);

} // namespace mosaic::actors
