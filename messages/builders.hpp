#pragma once

// Plain C++ structs for the most used messages and the functions that turn
// them into fb_message values, so that actor code stays short:
//
//   auto msg = make_token_event_msg({.request_id = id, .token_id = t, .text = piece});
//
// The structs mirror the schemas (messages/*.fbs), whose comments define
// each field's meaning; readers for the other direction live in
// messages/readers.hpp.

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/error.hpp"
#include "messages/messages.hpp"

namespace mosaic::wire {

// -- shared pieces ------------------------------------------------------------

/// A tensor held in a node's pool (see msg::TensorHandle).
struct tensor_handle {
  std::string node{};
  std::string endpoint{};
  uint64_t id = 0;
  msg::DType dtype = msg::DType::f32;
  std::vector<uint32_t> shape{}; // e.g. [n_tokens, hidden]
  bool operator==(const tensor_handle&) const = default;
};

/// A request's KV in a paged pool (see msg::KvHandle).
struct kv_handle {
  std::string node{};
  std::string endpoint{};
  uint64_t sequence = 0;
  uint32_t n_tokens = 0;
  uint32_t n_layers = 0;
  uint32_t kv_dim = 0;
  msg::DType dtype = msg::DType::f32;
  bool operator==(const kv_handle&) const = default;
};

struct sampling {
  uint32_t max_tokens = 256;
  float temperature = 1.0f;
  float top_p = 1.0f;
  std::optional<uint64_t> seed{}; ///< none: nondeterministic
  std::vector<std::string> stop{};
  int32_t top_k = 0;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::vector<int32_t> stop_token_ids{};
  bool ignore_eos = false;
  uint32_t min_tokens = 0;
  bool include_stop_str_in_output = false;
  int32_t logprobs = -1; ///< -1: none; N: the chosen token's and the N most likely
  bool return_token_ids = false;
  bool operator==(const sampling&) const = default;
};

/// Most alternatives a token may carry (OpenAI's top_logprobs limit): the
/// front door's bound, the workers' clamp, the readers' (plus the chosen).
inline constexpr int32_t max_top_logprobs = 20;

/// msg::TokenLogprob.
struct token_logprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
  std::string text{};
  bool operator==(const token_logprob&) const = default;
};

struct text_segment {
  std::string text{};
  bool operator==(const text_segment&) const = default;
};

/// An image named by its 32-byte library key.
struct image_key_segment {
  library_key_bytes key{};
  bool operator==(const image_key_segment&) const = default;
};

/// An image sent inline as encoded file bytes (PNG/JPEG).
struct image_data_segment {
  std::vector<uint8_t> encoded{};
  std::string mime{};
  bool operator==(const image_data_segment&) const = default;
};

using segment = std::variant<text_segment, image_key_segment, image_data_segment>;
using image_source = std::variant<image_key_segment, image_data_segment>;

// -- requests and token events ------------------------------------------------

struct generate_request {
  uint64_t request_id = 0;
  std::string tenant{};
  int64_t deadline_unix_ns = 0; ///< 0: none given
  std::string model{};
  std::vector<segment> segments{};
  wire::sampling sampling{};
  bool stream = false;
  std::string reuse_policy{};     ///< empty: node default
  uint64_t admission_wait_us = 0; ///< set by the router on admission
  std::string kv_compression{};   ///< empty: node default
  std::string cache_salt{};       ///< prefix-cache salt (vLLM's cache_salt); empty: none
  bool operator==(const generate_request&) const = default;
};

struct encode_request {
  uint64_t request_id = 0;
  std::string tenant{};
  int64_t deadline_unix_ns = 0;
  image_source image{};
  bool compile = false;
  bool shared = false;
  uint64_t decoded = 0; ///< node_context::decoded handle on the sender's node; 0: none
  bool operator==(const encode_request&) const = default;
};

struct encode_result {
  uint64_t request_id = 0;
  library_key_bytes key{};
  uint32_t n_tokens = 0;
  tensor_handle embeddings{}; // [n_tokens, hidden]
  bool encoder_cache_hit = false;
  bool compiled = false;
  uint64_t encode_us = 0;
  error err{}; ///< errc::none: success
};

struct token_event {
  uint64_t request_id = 0;
  uint32_t index = 0;
  int32_t token_id = 0;
  std::string text{};
  msg::FinishReason finish = msg::FinishReason::none;
  msg::Usage usage{};
  error err{};           ///< set with finish == error
  uint64_t queue_us = 0; ///< last event: time waited before work started
  std::optional<msg::CompressionUsage> compression{}; ///< last event of a compressed request
  std::vector<token_logprob> logprobs{};   ///< this token's, then the top N (sampling.logprobs)
  std::vector<int32_t> prompt_token_ids{}; ///< first event, with sampling.return_token_ids
  uint32_t image_tokens = 0;               ///< last event: the prompt's image tokens
};

// -- library ------------------------------------------------------------------

struct library_lookup {
  uint64_t request_id = 0;
  std::string tenant{};
  std::vector<library_key_bytes> keys{};
  bool include_shared = true;
};

struct lookup_entry {
  library_key_bytes key{};
  msg::Tier tier = msg::Tier::miss;
  uint64_t entry_id = 0;
  uint32_t n_tokens = 0;
  uint64_t bytes = 0;
  bool shared = false;
  bool operator==(const lookup_entry&) const = default;
};

struct library_lookup_result {
  uint64_t request_id = 0;
  std::vector<lookup_entry> entries{}; ///< in the order of the keys asked
  error err{};
};

struct load_request {
  uint64_t request_id = 0;
  std::string tenant{};
  int64_t deadline_unix_ns = 0;
  library_key_bytes key{};
  uint64_t entry_id = 0;
  uint32_t first_layer = 0;
  uint32_t n_layers = 0; ///< 0: all from first_layer
};

struct layer_ready {
  uint64_t request_id = 0;
  library_key_bytes key{};
  uint64_t entry_id = 0;
  uint32_t layer = 0;
  tensor_handle k{}; // [n_tokens, kv_dim] pre-RoPE
  tensor_handle v{}; // [n_tokens, kv_dim]
  uint64_t load_us = 0;
  error err{}; ///< set: compute this image instead
};

// -- prefill, decode, transfer --------------------------------------------------

struct prefill_done {
  uint64_t request_id = 0;
  kv_handle kv{};
  int32_t first_token = 0;
  uint32_t prompt_tokens = 0;
  uint32_t recomputed_tokens = 0;
  uint32_t reused_tokens = 0;
  msg::PrefillTimings timings{};
  error err{};
};

struct decode_task {
  uint64_t request_id = 0;
  std::string tenant{};
  int64_t deadline_unix_ns = 0;
  kv_handle kv{};
  int32_t first_token = 0;
  uint32_t prompt_tokens = 0;
  wire::sampling sampling{};
  bool stream = false;
  uint64_t queue_us = 0; ///< router admission + prefill queue waits
  uint32_t position = 0; ///< of the first decoded token; 0: kv.n_tokens
  std::optional<msg::CompressionUsage> compression{};
  uint32_t reused_tokens = 0;        ///< prompt tokens linked from a library entry
  uint32_t recomputed_tokens = 0;    ///< of those, computed at one layer or more
  uint32_t cached_tokens = 0;        ///< not computed at every layer (usage.cached_tokens)
  uint32_t prefix_cached_tokens = 0; ///< of those, prefix-cache hits
  std::vector<int32_t> prompt_ids{}; ///< with a repetition_penalty or return_token_ids
  std::vector<token_logprob> first_logprobs{}; ///< the first token's (sampling.logprobs >= 0)
  uint32_t image_tokens = 0;                   ///< the prompt's image tokens
};

struct kv_chunk {
  uint64_t transfer_id = 0;
  uint32_t seq = 0;
  uint32_t layer = 0;
  msg::KvPart part = msg::KvPart::k;
  uint64_t offset = 0;
  uint32_t bytes = 0;
  uint64_t checksum = 0; ///< XXH3-64 of the chunk bytes
};

struct heartbeat {
  std::string node{};
  uint64_t seq = 0;
  int64_t sent_unix_ns = 0;
  uint32_t queued_requests = 0;
  uint32_t running_requests = 0;
  float kv_cache_usage = 0.0f;
};

} // namespace mosaic::wire

namespace mosaic {

// -- builders -----------------------------------------------------------------

generate_request_msg make_generate_request_msg(const wire::generate_request& req);
encode_request_msg make_encode_request_msg(const wire::encode_request& req);
encode_result_msg make_encode_result_msg(const wire::encode_result& res);
token_event_msg make_token_event_msg(const wire::token_event& ev);
cancel_msg make_cancel_msg(uint64_t request_id, std::string_view reason);
library_lookup_msg make_library_lookup_msg(const wire::library_lookup& req);
library_lookup_result_msg make_library_lookup_result_msg(const wire::library_lookup_result& res);
load_request_msg make_load_request_msg(const wire::load_request& req);
layer_ready_msg make_layer_ready_msg(const wire::layer_ready& ev);
prefill_done_msg make_prefill_done_msg(const wire::prefill_done& res);
decode_task_msg make_decode_task_msg(const wire::decode_task& task);
/// prefill → compress: `task` is what decode gets once the KV is compressed.
compress_task_msg make_compress_task_msg(const wire::decode_task& task,
                                         std::string_view compression);
kv_transfer_begin_msg make_kv_transfer_begin_msg(uint64_t transfer_id, uint64_t request_id,
                                                 const wire::kv_handle& source,
                                                 uint64_t total_bytes, uint32_t n_chunks);
kv_chunk_msg make_kv_chunk_msg(const wire::kv_chunk& chunk);
kv_transfer_end_msg make_kv_transfer_end_msg(uint64_t transfer_id, uint64_t request_id,
                                             uint32_t n_chunks, uint64_t total_bytes,
                                             const error& err = {});
heartbeat_msg make_heartbeat_msg(const wire::heartbeat& hb);

// -- pieces for hand-built messages -------------------------------------------

flatbuffers::Offset<msg::TensorHandle> add_tensor_handle(flatbuffers::FlatBufferBuilder& fbb,
                                                         const wire::tensor_handle& h);
flatbuffers::Offset<msg::KvHandle> add_kv_handle(flatbuffers::FlatBufferBuilder& fbb,
                                                 const wire::kv_handle& h);
flatbuffers::Offset<msg::SamplingParams> add_sampling(flatbuffers::FlatBufferBuilder& fbb,
                                                      const wire::sampling& s);
flatbuffers::Offset<msg::ImageSegment> add_image_segment(flatbuffers::FlatBufferBuilder& fbb,
                                                         const wire::image_source& image);
flatbuffers::Offset<msg::Segment> add_segment(flatbuffers::FlatBufferBuilder& fbb,
                                              const wire::segment& seg);

} // namespace mosaic
