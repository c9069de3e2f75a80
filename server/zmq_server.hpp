#pragma once

// The ZeroMQ API of the front door: a ROUTER socket on the frontend's
// zmq_port carrying chat requests and token streams as FlatBuffers frames
// (messages/api.fbs; messages/api_client.hpp is a client). It shares the
// HTTP server's front door: the same API keys and tenants, the same
// parsing limits and checks (server/openai_request.hpp), the same
// max_concurrent count, deadline and metrics. One thread owns the socket:
// it reads frames, admits requests and forwards their token events.
//
//   auto http = http_server::start(options, service);
//   auto zmq = zmq_server::start({"127.0.0.1", 0}, **http);
//   std::string where = (*zmq)->endpoint();            // tcp://127.0.0.1:PORT

#include <memory>
#include <string>

#include "engine/error.hpp"
#include "server/http_server.hpp"

namespace mosaic::server {

struct zmq_options {
  std::string host = "127.0.0.1";
  int port = 8001; ///< 0: any free port (see zmq_server::port)
};

class zmq_server {
public:
  /// Binds and starts serving. `http` (whose front door it shares) must
  /// outlive this server.
  static result<std::unique_ptr<zmq_server>> start(zmq_options options, http_server& http);
  /// Stops: requests in flight are cancelled.
  ~zmq_server();
  zmq_server(const zmq_server&) = delete;
  zmq_server& operator=(const zmq_server&) = delete;

  int port() const;
  /// "tcp://HOST:PORT", what a client connects to.
  std::string endpoint() const;
  void stop();

  struct impl;
  explicit zmq_server(std::unique_ptr<impl> p);

private:
  std::unique_ptr<impl> impl_;
};

} // namespace mosaic::server
