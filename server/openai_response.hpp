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

/// "stop", "length", or "" (cancelled / error / timeout have no OpenAI
/// equivalent and never reach a successful response).
std::string_view finish_reason_name(msg::FinishReason finish);

/// The whole answer: {"id","object":"chat.completion","created","model",
/// "choices":[{"index":0,"message":{"role":"assistant","content":…},
/// "finish_reason":…}],"usage":{prompt_tokens,completion_tokens,total_tokens}}
/// (or "text_completion" with choices[].text).
std::string full_response_json(const response_header& h, std::string_view text,
                               msg::FinishReason finish, const usage_counts& usage);

/// One stream chunk. Chat: `role` puts {"role":"assistant"} in the delta,
/// `content` the text; `finish` (not none) sets finish_reason. With `usage`
/// the chunk has empty choices and the usage object (include_usage).
struct chunk_fields {
  bool role = false;
  std::optional<std::string> content;
  msg::FinishReason finish = msg::FinishReason::none;
  std::optional<usage_counts> usage;
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
