#pragma once

// Builders and readers for the pipeline messages that messages/builders.hpp
// does not cover (store, link plan / prefill task), plus the small pieces
// every actor of the pipeline uses: deadline → request timeout, error
// conversion, the final event of a request.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <caf/error.hpp>
#include <caf/timespan.hpp>

#include "actors/node_context.hpp"
#include "engine/model/sha256.hpp"
#include "engine/model/tokenizer.hpp"
#include "engine/sampler.hpp"
#include "messages/builders.hpp"
#include "messages/caf_types.hpp"

namespace mosaic::actors {

/// Extra time every hop adds to a request's remaining deadline before its
/// `request()` times out: the worker that owns the deadline ends the
/// request with errc::timeout itself; the CAF timeout only catches a hop
/// that never answers (a dead or stuck actor).
inline constexpr std::chrono::milliseconds hop_slack{2000};

/// The engine sampler's parameters of a request (`seed` given apart: the
/// prefill and decode workers draw from different streams). With
/// min_tokens, end-of-sequence (`eos_id`, unless ignore_eos) and the stop
/// tokens cannot be sampled before that many tokens.
sampling_params engine_sampling(const wire::sampling& s, uint64_t seed, int32_t eos_id);

/// A step's log-probabilities as token events carry them (sampling.logprobs
/// = `top`; none when it is negative): `chosen`'s, then the `top` most
/// likely (at most wire::max_top_logprobs), each with its piece's text.
std::vector<wire::token_logprob> wire_logprobs(std::span<const float> logits, int32_t chosen,
                                               int32_t top, const tokenizer& tok);

/// The prompt's ids as the model reads them: each image_token_id of `ids`
/// (one per image) repeated as many times as that image has tokens.
std::vector<int32_t> expanded_prompt_ids(std::span<const int32_t> ids, int32_t image_token_id,
                                         std::span<const int> image_tokens);

/// Where each image's tokens end in the prompt as the model reads it
/// (`ids` as expanded_prompt_ids expands them), in prompt order.
std::vector<int> image_end_offsets(std::span<const int32_t> ids, int32_t image_token_id,
                                   std::span<const int> image_tokens);

/// The image token counts of `job`'s images, in prompt order.
std::vector<int> image_token_counts(const prefill_job& job);

/// Time left until `deadline_unix_ns` plus `slack`, at least 1 ms.
caf::timespan until_deadline(int64_t deadline_unix_ns, std::chrono::milliseconds slack = hop_slack);

/// True once `deadline_unix_ns` (0: none) has passed.
bool deadline_passed(int64_t deadline_unix_ns);

/// `key` as the schema struct / back.
msg::LibraryKey to_key(const digest& key);
digest from_key(const msg::LibraryKey* key);

// -- store --------------------------------------------------------------------

/// A store request for `image_key` in `tenant`'s static library.
/// encoder → kv_loader: the compiled image is behind `compiled_id`
/// (node_context::compiled). prefill → encoder ("store after use"): only
/// the encoder output is behind `embeddings_id` (node_context::embeddings);
/// the encoder compiles it first.
/// `grid`: M-RoPE models, the image's token grid (the encoder compiles
/// with it).
store_request_msg make_store_request_msg(uint64_t request_id, std::string_view tenant,
                                         const digest& image_key, uint32_t n_tokens,
                                         uint64_t compiled_id, uint64_t embeddings_id = 0,
                                         token_grid grid = {});
/// The token grid a store request carries ({} when none or out of range).
token_grid grid_of(const msg::StoreRequest& m);
/// kv_loader → sender: the entry's library key, or the error.
store_result_msg make_store_result_msg(uint64_t request_id, const digest& library_key,
                                       uint64_t bytes, const error& err);

// -- prefill task ---------------------------------------------------------------

/// linker → prefill: the request's link plan in outline (tokens, segments
/// with each image's key, tier and load handle, the policy); the job with
/// its handles is node_context::jobs[request_id].
prefill_task_msg make_prefill_task_msg(const prefill_job& job, int32_t image_token_id);

/// A final token event (finish != none) carrying an error.
token_event_msg make_error_event(uint64_t request_id, const error& err);

} // namespace mosaic::actors
