#pragma once

// Parsed OpenAI requests → the cluster's generate request: message
// contents become text and image segments in order, library references
// become image keys, inline images are checked (format, bytes, pixels)
// before anything is queued.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "messages/builders.hpp"
#include "server/generation_service.hpp"
#include "server/openai_request.hpp"

namespace mosaic::server {

/// Front-door limits beyond what parsing checks.
struct admission_limits {
  uint64_t max_image_pixels = 4096ull * 4096ull; ///< width × height of one inline image
};

/// The 32-byte key of a 64-hex-digit id; nullopt when malformed.
std::optional<library_key_bytes> key_from_hex(std::string_view hex);
/// 64 lowercase hex digits.
std::string key_to_hex(const library_key_bytes& key);

/// Builds the cluster request of a chat request. A conversation is
/// written as LLaVA-1.5 turns ("… ASSISTANT: … USER: …") inside the user
/// turn the cluster's chat template adds; system text goes first.
/// Errors: an image that is not a readable PNG/JPEG or is too large (400),
/// max_tokens plus the images' tokens past the context (400).
parse_result<wire::generate_request> to_generate_request(const chat_request& req,
                                                         const service_info& info,
                                                         const admission_limits& limits);
parse_result<wire::generate_request> to_generate_request(const completion_request& req,
                                                         const service_info& info);

} // namespace mosaic::server
