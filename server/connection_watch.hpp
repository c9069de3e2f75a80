#pragma once

// Notices that the client of an HTTP request went away while its handler
// is still waiting (a non-streaming generation). Made on the handler's
// thread, it takes the socket that thread serves (http_transport.hpp's
// current_socket); the socket stays open until the handler returns, so
// the descriptor cannot be reused under the watch.
//
//   connection_watch watch;
//   if (watch.peer_closed()) stream->cancel();

namespace mosaic::server {

class connection_watch {
public:
  connection_watch();
  /// True once the peer closed or reset the connection (FIN, RST). False
  /// while it is open, and off a served connection.
  bool peer_closed() const;

private:
  int fd_ = -1;
};

} // namespace mosaic::server
