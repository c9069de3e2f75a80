#pragma once

// The remote target: a running `mosaic serve` front door driven over its
// OpenAI-compatible HTTP API (docs/server.md), open loop. Each request is
// POST /v1/chat/completions with "stream": true on its own connection (so
// a slow request never holds back the next one), its reuse policy in the
// `"mosaic": {"policy": ...}` object, greedy decoding; every SSE chunk's
// arrival time is recorded as a token time.
//
// Images are uploaded once before any run (POST /v1/mosaic/images, into
// the sim tenant's static library) and referenced as
// mosaic://library/<id>, then `warm_images` touches each of them with a
// one-token request before every policy's run: every policy starts with
// the images compiled, in the library and in the same RAM-tier order
// (docs/sim.md, "Remote targets").
//
// The SSE stream carries text, not token ids: a token's id in
// `request_outcome::tokens` is a 31-bit FNV-1a hash of its text piece,
// which is what compare mode's agreement with `full` needs (same pieces in
// the same order).

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
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

/// One front door and what every run against it shares.
struct front_door_session {
  http_endpoint endpoint;
  std::string api_key;                ///< "" = no Authorization header
  std::string model;                  ///< as /v1/models lists it
  std::vector<std::string> image_ids; ///< [pool] library id; "" = not uploaded
  std::vector<int> image_tokens;      ///< [pool] prompt tokens of the image
  std::chrono::seconds connect_timeout{3};
};

/// Connects: GET /v1/models must answer 200 with a model. `unavailable`
/// naming the URL when nothing answers (within `connect_timeout`),
/// the server's own message when it refuses (e.g. 401).
result<front_door_session> connect_front_door(const http_endpoint& endpoint, std::string api_key,
                                              std::chrono::seconds connect_timeout);

/// Uploads every image `w` uses (POST /v1/mosaic/images, PNG bytes) and
/// records its library id. Returns how many were uploaded.
result<int> upload_images(front_door_session& s, const workload& w);

/// One `max_tokens: 1` request per uploaded image, one after another,
/// with policy full_reuse (no recompute): loads every entry so the RAM
/// tier holds the workload's images in pool order before a run.
status warm_images(const front_door_session& s, const workload& w);

struct http_target_options {
  std::string policy; ///< reuse policy of every request ("" = the server's default)
  uint64_t seed = 0;  ///< sampling seed (greedy decoding; only used with temperature > 0)
  std::chrono::seconds request_timeout{300}; ///< per request, first byte to last
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

/// Splits `buffer`'s complete server-sent events off its front and returns
/// their `data:` payloads in order (the rest stays for the next read).
std::vector<std::string> take_sse_payloads(std::string& buffer);

} // namespace mosaic::sim
