#pragma once

// The remote target: an OpenAI-compatible HTTP server driven open loop,
// either a running `mosaic serve` front door (docs/server.md) or a peer
// (vLLM, SGLang, any server of the chat completions API). Each request is
// POST /v1/chat/completions with "stream": true on its own connection (so
// a slow request never holds back the next one), greedy decoding; every
// SSE chunk's arrival time is recorded as a token time. Only a Mosaic
// front door gets the reuse policy (`"mosaic": {"policy": ...}`): a peer
// is sent nothing it does not know. Every run may carry its own
// `cache_salt` (vLLM's field, which Mosaic shares), so that it starts
// from a cold prefix cache whatever ran before it on the server.
//
// A Mosaic front door is told apart by `owned_by: "mosaic"` in its
// GET /v1/models answer. Its images are uploaded once before any run
// (POST /v1/mosaic/images, into the sim tenant's static library), so that
// every policy starts with them compiled. Requests then refer to them as
// mosaic://library/<id> or, with data URLs, send the same PNG bytes as to
// a peer (the server finds the compiled entry by content). Before every
// run `warm_images` sends each image once in a one-token request (with
// the run's salt), the same requests to every server.
//
// The SSE stream carries text, not token ids: a token's id in
// `request_outcome::tokens` is a 31-bit FNV-1a hash of its text piece,
// which is what compare mode's agreement with `full` needs (same pieces in
// the same order).

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "engine/error.hpp"
#include "sim/target.hpp"

namespace mosaic::sim {

/// `http://HOST:PORT[/]`, split.
struct http_endpoint {
  std::string host;
  int port = 80;
  std::string url() const { return "http://" + host + ":" + std::to_string(port); }
};

/// Parses an http:// URL (no path, no https). invalid_argument otherwise.
result<http_endpoint> parse_http_url(std::string_view url);

/// One server and what every run against it shares.
struct front_door_session {
  http_endpoint endpoint;
  std::string api_key; ///< "" = no Authorization header
  std::string model;   ///< as /v1/models lists it
  /// Who serves it: /v1/models' `owned_by` ("mosaic", "vllm", "sglang",
  /// ...; "openai-compatible" when it says nothing).
  std::string server;
  /// Images go as data URLs (image_urls) rather than library references.
  bool data_urls = false;
  std::vector<std::string> image_ids;  ///< [pool] library id; "" = not uploaded
  std::vector<int> image_tokens;       ///< [pool] prompt tokens of the image (Mosaic)
  std::vector<std::string> image_urls; ///< [pool] data:image/png;base64,... ("" = not made)
  std::chrono::seconds connect_timeout{3};
  bool is_mosaic() const { return server == "mosaic"; }
};

/// Connects: GET /v1/models must answer 200 with a model. `unavailable`
/// naming the URL when nothing answers (within `connect_timeout`),
/// the server's own message when it refuses (e.g. 401).
result<front_door_session> connect_front_door(const http_endpoint& endpoint, std::string api_key,
                                              std::chrono::seconds connect_timeout);

/// Makes every image `w` uses available to requests: on a Mosaic front
/// door uploads it (POST /v1/mosaic/images, PNG bytes) and records its
/// library id; with `data_urls`, also writes its data URL. A peer cannot
/// be given images in advance: `data_urls` is required there. Returns how
/// many images were uploaded.
result<int> upload_images(front_door_session& s, const workload& w);

/// One `max_tokens: 1` request per image of `w`, one after another, each
/// the image and "Describe the image.", with `cache_salt` when not empty.
/// On Mosaic with policy full_reuse (no recompute): loads every entry so
/// the RAM tier holds the workload's images in pool order before a run.
/// Every server gets the same requests, so each has seen every image once.
status warm_images(const front_door_session& s, const workload& w, const std::string& cache_salt);

struct http_target_options {
  std::string policy; ///< reuse policy of every request ("" = the server's default; Mosaic only)
  uint64_t seed = 0;  ///< sampling seed (greedy decoding; only used with temperature > 0)
  std::chrono::seconds request_timeout{300}; ///< per request, first byte to last
  std::string cache_salt{};                  ///< every request's `cache_salt` ("" = none sent)
};

class http_target final : public target {
public:
  /// `session` must outlive the target and have the workload's images uploaded.
  http_target(const front_door_session& session, http_target_options options);
  ~http_target() override;

  void submit(const sim_request& req, on_token token, on_done done) override;
  void drain(std::chrono::milliseconds timeout) override;
  std::string describe() const override;

private:
  struct flight; // one request's connection
  const front_door_session* session_;
  http_target_options options_;
  std::mutex mutex_;
  std::vector<std::shared_ptr<flight>> flights_;
  std::vector<std::thread> threads_; ///< one per request, joined by drain()
};

/// The 31-bit FNV-1a hash standing for a token's id (see above).
int32_t token_piece_id(std::string_view piece);

/// Standard base64 (RFC 4648, with padding) of `bytes`.
std::string base64(std::span<const uint8_t> bytes);

/// Splits `buffer`'s complete server-sent events off its front and returns
/// their `data:` payloads in order (the rest stays for the next read).
std::vector<std::string> take_sse_payloads(std::string& buffer);

} // namespace mosaic::sim
