#pragma once

// The frames of the ZeroMQ API (messages/api.fbs) as plain C++ values,
// and their encoding. Decoding runs the FlatBuffers verifier (through
// fb_message::from_bytes): a buffer that fails it is errc::corrupt_data,
// never read.
//
//   auto bytes = api::encode(api::client_frame{7, api::chat_request{...}});
//   auto frame = api::decode_server_frame(received);   // result<server_frame>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "engine/error.hpp"

namespace mosaic::api {

/// PNG/JPEG file bytes.
struct image_bytes {
  std::vector<uint8_t> data;
  std::string mime; ///< empty: from the bytes
  bool operator==(const image_bytes&) const = default;
};

/// An uploaded image: 64 hex digits, bare or as mosaic://library/<id>.
struct image_ref {
  std::string id;
  bool operator==(const image_ref&) const = default;
};

/// Text, or an image.
using part = std::variant<std::string, image_bytes, image_ref>;

struct message {
  std::string role = "user"; ///< user | system | assistant
  std::vector<part> content;
  bool operator==(const message&) const = default;
};

struct chat_request {
  std::string api_key;
  std::string model; ///< empty: the served model
  std::vector<message> messages;
  int32_t max_tokens = 256;
  float temperature = 1.0f;
  float top_p = 1.0f;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::string policy; ///< empty: the topology's
  bool operator==(const chat_request&) const = default;
};

struct cancel_request {
  bool operator==(const cancel_request&) const = default;
};

struct client_frame {
  uint64_t request_id = 0;
  std::variant<chat_request, cancel_request> body;
  bool operator==(const client_frame&) const = default;
};

struct token_frame {
  uint32_t index = 0;
  int32_t token_id = 0;
  std::string text;
  bool operator==(const token_frame&) const = default;
};

struct finish_frame {
  std::string finish_reason; ///< "stop" | "length"
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  uint32_t image_tokens = 0; ///< of the prompt tokens
  bool operator==(const finish_frame&) const = default;
};

/// An HTTP-like status and OpenAI's error fields.
struct error_frame {
  uint16_t status = 400;
  std::string type;
  std::string message;
  std::string param;
  std::string code;
  bool operator==(const error_frame&) const = default;
};

struct server_frame {
  uint64_t request_id = 0;
  std::variant<token_frame, finish_frame, error_frame> body;
  bool operator==(const server_frame&) const = default;
};

std::vector<uint8_t> encode(const client_frame& f);
std::vector<uint8_t> encode(const server_frame& f);

/// Verifies and reads a client's frame. corrupt_data: not a ClientFrame
/// (wrong identifier, fails the verifier, over max_message_bytes);
/// invalid_argument: it verifies but is not a usable request (an unknown
/// role or union member).
result<client_frame> decode_client_frame(std::span<const uint8_t> bytes);
/// Verifies and reads a server's frame (errors as above).
result<server_frame> decode_server_frame(std::span<const uint8_t> bytes);

} // namespace mosaic::api
