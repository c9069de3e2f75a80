#pragma once

// The OpenAI-compatible HTTP front door (cpp-httplib):
//
//   POST   /v1/chat/completions   chat.completion, or SSE chat.completion.chunk
//   POST   /v1/completions        text_completion, or SSE chunks
//   GET    /v1/models             the served model
//   GET    /health                200 while serving
//   GET    /metrics               Prometheus text format
//   POST   /v1/mosaic/images      upload an image into the caller's library
//   DELETE /v1/mosaic/images/{id} delete one of the caller's images
//
// Every error is OpenAI's error JSON with the right status (400, 401, 404,
// 413, 503, 504, …). It serves `generation_service` (the cluster), never
// the engine.
//
//   auto http = http_server::start(options, service);   // listens at once
//   int port = (*http)->port();

#include <chrono>
#include <memory>
#include <string>

#include "engine/error.hpp"
#include "server/api_keys.hpp"
#include "server/generation_service.hpp"
#include "server/openai_request.hpp"
#include "server/request_convert.hpp"

namespace mosaic::server {

class front_door_metrics;
struct front_door;

/// How the front door holds connections (server/http_transport.hpp).
struct connection_limits {
  int max_connections = 1024;           ///< connections served at once (threads)
  int max_connections_per_client = 256; ///< from one client address
  std::chrono::milliseconds header_timeout{10000}; ///< request line + headers, in all
  std::chrono::milliseconds read_timeout{30000};   ///< one body read, idle
  std::chrono::milliseconds write_timeout{30000};  ///< one write, blocked
  std::chrono::milliseconds keep_alive_timeout{5000}; ///< idle between requests
  int keep_alive_max_count = 100000; ///< requests on one connection
};

struct http_options {
  std::string host = "127.0.0.1";
  int port = 8000; ///< 0: any free port (see http_server::port)
  request_limits limits;
  admission_limits admission;
  api_keys keys; ///< none: every request is tenant "default"
  /// Deadline given to the cluster; the front door answers 504 past it.
  std::chrono::milliseconds request_timeout{60000};
  std::chrono::milliseconds upload_timeout{60000};
  /// How long past the deadline the front door waits for the cluster to
  /// report the timeout before answering 504 itself.
  std::chrono::milliseconds deadline_grace{5000};
  /// Connections, per client and in all, and their timeouts
  /// (server/http_transport.hpp).
  connection_limits connections;
  /// Generation requests in flight before new ones get 503.
  int max_concurrent = 256;
};

class http_server {
public:
  /// Binds and starts serving on a background thread. `service` must
  /// outlive the server.
  static result<std::unique_ptr<http_server>> start(http_options options,
                                                    generation_service& service);
  /// Stops: open streams end, then the listener and its threads.
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// The port it listens on (the chosen one when asked for 0).
  int port() const;
  const std::string& host() const;
  front_door_metrics& metrics();
  /// The state its handlers share (server/front_door.hpp), for the
  /// ZeroMQ API to serve under the same keys, limits and metrics.
  front_door& door();
  /// Stops serving; idempotent.
  void stop();
  /// Graceful stop (SIGTERM): /health answers 503 and new requests 503,
  /// the listener closes, requests running may finish for up to `grace`;
  /// streams still open then end with an SSE error event, other requests
  /// with 503; then stop(). Returns the requests that were cut.
  int drain(std::chrono::milliseconds grace);

  struct impl;
  explicit http_server(std::unique_ptr<impl> p);

private:
  std::unique_ptr<impl> impl_;
};

} // namespace mosaic::server
