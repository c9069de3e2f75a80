#pragma once

// OpenAI-compatible request bodies (`/v1/chat/completions`,
// `/v1/completions`) parsed into validated plain structs. Every rejection
// is an `api_error` that renders as OpenAI's error JSON, naming the field.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mosaic::server {

/// An OpenAI-style error: HTTP status, `error.type`, `error.message`,
/// `error.param` (the offending field, JSON-path-like), `error.code`.
struct api_error {
  int http_status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;
  std::string code;

  /// {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}
  std::string to_json() const;
};

/// A 400 `invalid_request_error` naming the offending field.
api_error invalid_request(std::string param, std::string message);

/// Limits applied while parsing (the front door's configuration).
struct request_limits {
  size_t max_body_bytes = 64u << 20;
  int max_images = 16;
  size_t max_image_bytes = 20u << 20; ///< decoded bytes of one image
  int max_tokens_cap = 4096;          ///< largest max_tokens accepted
  int max_stop_strings = 4;
  size_t max_stop_length = 256;
  int max_messages = 256;
};

/// An image part: inline bytes from a data URL, or a library reference
/// (`mosaic://library/<id>`).
struct image_part {
  std::string mime;           ///< "image/png" or "image/jpeg" (data URLs)
  std::vector<uint8_t> bytes; ///< decoded base64 payload (data URLs)
  std::string library_id;     ///< hex id (library references)
  bool is_reference() const { return !library_id.empty(); }
};

/// One part of a message's content, in order.
struct content_part {
  bool is_image = false;
  std::string text; ///< when !is_image
  image_part image; ///< when is_image
};

struct chat_turn {
  std::string role; ///< system | user | assistant
  std::vector<content_part> content;
};

struct sampling_params {
  int max_tokens = 256;
  float temperature = 1.0f;
  float top_p = 1.0f;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  // vLLM's extra fields (docs/server.md), with vLLM's meaning.
  int top_k = 0; ///< -1 or 0: off
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int min_tokens = 0;
  bool include_stop_str_in_output = false;
  /// -1: none; N: each token's log-probability and the N most likely
  /// (chat: logprobs + top_logprobs; completions: logprobs = N).
  int logprobs = -1;
  bool return_token_ids = false; ///< vLLM's: prompt_token_ids and token_ids in the answer
};

/// Mosaic's per-request extension object
/// `"mosaic": {"policy": "mpic:32", "compression": "snapkv:img=0.25"}`, and
/// the request's other serving options beyond sampling.
struct mosaic_options {
  std::optional<std::string> policy;      ///< validated by engine/policy_spec
  std::optional<std::string> compression; ///< KV compression; validated by engine/compression_spec
  /// vLLM's top-level `cache_salt`: only requests of the tenant with the
  /// same salt share prefix-cache blocks; "" = none.
  std::string cache_salt;
};

/// The longest `cache_salt` accepted (vLLM suggests 43 characters).
inline constexpr size_t max_cache_salt_bytes = 1024;

struct chat_request {
  std::string model;
  std::vector<chat_turn> messages;
  sampling_params sampling;
  bool stream = false;
  bool include_usage = false; ///< stream_options.include_usage
  mosaic_options mosaic;
  int image_count() const;
};

struct completion_request {
  std::string model;
  std::string prompt;
  sampling_params sampling;
  bool stream = false;
  bool include_usage = false;
  mosaic_options mosaic;
};

/// Either a parsed request or the error to send back.
template <class T>
struct parse_result {
  std::optional<T> value;
  api_error error;
  explicit operator bool() const { return value.has_value(); }
};

parse_result<chat_request> parse_chat_request(std::string_view body, const request_limits& limits);

// -- checks on parsed values, shared by the JSON parsers and the ZeroMQ API --

/// max_tokens in [1, max_tokens_cap], temperature in [0, 2], top_p in
/// (0, 1], the stop strings' count and lengths.
std::optional<api_error> check_sampling(const sampling_params& s, const request_limits& limits);
/// The messages: 1 to max_messages (`n_messages`: their count when
/// `req` is not filled yet; 0: req.messages.size()), known roles, images
/// only in user messages and at most max_images of them.
std::optional<api_error> check_turns(const chat_request& req, const request_limits& limits,
                                     size_t n_messages = 0);
/// `count` images so far: 400 past max_images (param: the image's part).
std::optional<api_error> check_image_count(int count, const request_limits& limits,
                                           std::string param);
/// One image's decoded size: 413 `image_too_large` past max_image_bytes.
std::optional<api_error> check_image_bytes(size_t bytes, const request_limits& limits,
                                           std::string param);
parse_result<completion_request> parse_completion_request(std::string_view body,
                                                          const request_limits& limits);

/// Parses `data:image/png;base64,...` (png or jpeg only) or
/// `mosaic://library/<hex id>`.
parse_result<image_part> parse_image_url(std::string_view url, const request_limits& limits,
                                         std::string_view param);

/// Standard base64 (RFC 4648, padding required); nullopt when malformed.
std::optional<std::vector<uint8_t>> decode_base64(std::string_view text);

} // namespace mosaic::server
