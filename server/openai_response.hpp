#pragma once

// OpenAI-compatible response bodies: `chat.completion`, `chat.completion.chunk`,
// `text_completion` (and its stream chunks), server-sent-event framing, and
// the mapping from Mosaic errors to OpenAI-style HTTP errors.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "engine/error.hpp"
#include "messages/builders.hpp"
#include "server/openai_request.hpp"

namespace mosaic::server {

/// Which endpoint a response belongs to.
enum class api_kind { chat, completion };

/// What every response and chunk of one request repeats.
struct response_header {
  api_kind kind = api_kind::chat;
  std::string id; ///< "chatcmpl-…" or "cmpl-…"
  std::string model;
  int64_t created = 0; ///< unix seconds
};

/// What the compress stage did to a request (FastCache), for the usage
/// extension `"mosaic": {"kv_compression": {...}}`.
struct compression_report {
  uint32_t prompt_tokens_kept = 0;
  uint64_t kv_bytes_before = 0;
  uint64_t kv_bytes_after = 0;
  double compress_seconds = 0.0;
  double ttft_seconds = 0.0; ///< at the front door, compression included
};

struct usage_counts {
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  /// prompt_tokens_details.cached_tokens: prompt tokens whose KV was not
  /// computed at every layer (prefix-cache hits + linked library image
  /// tokens the policy left cached).
  uint32_t cached_tokens = 0;
  std::optional<compression_report> compression{}; ///< compressed requests only
};

/// What a request asked to see besides the text: log-probabilities
/// (sampling.logprobs >= 0) and token ids (vLLM's return_token_ids).
struct answer_detail {
  bool logprobs = false;
  bool token_ids = false;
};

/// The generated tokens behind an answer or a stream chunk.
struct answer_tokens {
  std::vector<int32_t> ids;
  std::vector<std::string> texts; ///< what each token added to the answer's text
  /// Per token: its log-probability entry first, then the alternatives.
  std::vector<std::vector<wire::token_logprob>> logprobs;
  std::vector<int32_t> prompt_ids; ///< return_token_ids: the prompt's (first chunk / whole answer)
  size_t text_offset = 0;          ///< completions: where texts[0] starts in the answer

  /// Appends `ev`'s token (a token event, not the last).
  void add(const wire::token_event& ev);
};

/// "stop", "length", or "" (cancelled / error / timeout have no OpenAI
/// equivalent and never reach a successful response).
std::string_view finish_reason_name(msg::FinishReason finish);

/// The whole answer: {"id","object":"chat.completion","created","model",
/// "choices":[{"index":0,"message":{"role":"assistant","content":…},
/// "finish_reason":…}],"usage":{prompt_tokens,completion_tokens,total_tokens}}
/// (or "text_completion" with choices[].text).
/// With `detail`, choices[0].logprobs (chat: {"content": [{token, logprob,
/// bytes, top_logprobs}]}; completions: {tokens, token_logprobs,
/// top_logprobs, text_offset}), choices[0].token_ids and prompt_token_ids
/// as asked. Each chat entry also names its "token_id" (Mosaic's extension).
std::string full_response_json(const response_header& h, std::string_view text,
                               msg::FinishReason finish, const usage_counts& usage,
                               const answer_detail& detail = {}, const answer_tokens& tokens = {});

/// One stream chunk. Chat: `role` puts {"role":"assistant"} in the delta,
/// `content` the text; `finish` (not none) sets finish_reason. With `usage`
/// the chunk has empty choices and the usage object (include_usage).
struct chunk_fields {
  bool role = false;
  std::optional<std::string> content;
  msg::FinishReason finish = msg::FinishReason::none;
  std::optional<usage_counts> usage;
  answer_detail detail{};
  const answer_tokens* tokens = nullptr; ///< the chunk's token (with detail)
};
std::string chunk_json(const response_header& h, const chunk_fields& f);

/// "data: <json>\n\n".
std::string sse_event(std::string_view data);
/// "data: [DONE]\n\n".
std::string sse_done();

/// The HTTP error for a Mosaic error: invalid_argument/unsupported/
/// corrupt_data → 400, not_found → 404, permission_denied → 403,
/// overloaded → 503, timeout → 504, anything else → 500.
api_error api_error_from(const error& err);

/// A fresh random id with `prefix` ("chatcmpl-" + 24 hex characters).
std::string make_response_id(std::string_view prefix);

} // namespace mosaic::server
