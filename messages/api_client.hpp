#pragma once

// A client of the front door's ZeroMQ API (docs/server.md): one DEALER
// socket connected to the frontend's ROUTER socket, any number of requests
// in flight, told apart by the request id in every frame. It lives in
// messages/ (beside the frame codec) so that both the simulator and the
// server's tests can use it: sim/ may not depend on server/.
//
// Not thread-safe, like the ZeroMQ socket it owns: one thread drives it.
//
//   auto c = api_client::connect("tcp://127.0.0.1:8001");
//   auto id = (*c)->send(request);                   // ids 1, 2, ...
//   while (auto f = (*c)->receive(100ms)) ...        // token, finish or error frames
//   auto answer = (*c)->complete(request, 30s);      // send and collect one answer

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/error.hpp"
#include "messages/api_frames.hpp"

namespace mosaic::api {

/// What `complete` collected for one request.
struct answer {
  std::vector<token_frame> tokens;
  std::string text; ///< the tokens' pieces, joined
  std::optional<finish_frame> finish;
  std::optional<error_frame> error; ///< set instead of finish when it failed
};

class api_client {
public:
  /// Connects to `endpoint` ("tcp://127.0.0.1:8001"). ZeroMQ connects in
  /// the background: a server that is not there yet is waited for.
  static result<std::unique_ptr<api_client>> connect(const std::string& endpoint);
  ~api_client();
  api_client(const api_client&) = delete;
  api_client& operator=(const api_client&) = delete;

  /// Sends `request` under a fresh id (1, 2, ...) and returns the id.
  result<uint64_t> send(const chat_request& request);
  /// Asks the server to stop request `id`.
  status cancel(uint64_t id);
  /// Sends `bytes` as one frame as they are (tests of malformed frames).
  status send_raw(std::span<const uint8_t> bytes);
  /// The next frame within `timeout`; nullopt when none came. A frame
  /// that fails verification is errc::corrupt_data.
  result<std::optional<server_frame>> receive(std::chrono::milliseconds timeout);
  /// Sends `request` and collects its frames until its finish or error
  /// frame; errc::timeout when `timeout` passes first (the request is
  /// then cancelled). Frames of other requests arriving meanwhile are
  /// dropped: use send/receive to run several at once.
  result<answer> complete(const chat_request& request, std::chrono::milliseconds timeout);

  const std::string& endpoint() const { return endpoint_; }

  struct impl;

private:
  explicit api_client(std::unique_ptr<impl> p, std::string endpoint);
  std::unique_ptr<impl> impl_;
  std::string endpoint_;
  uint64_t next_id_ = 1;
};

} // namespace mosaic::api
