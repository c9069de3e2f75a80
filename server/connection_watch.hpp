#pragma once

// Notices that the client of an HTTP request went away while its handler
// is still waiting (a non-streaming generation). cpp-httplib 0.11 gives a
// handler no access to its socket, so the watch finds it: the request's
// 4-tuple (Request::local_addr/local_port/remote_addr/remote_port) names
// exactly one connected TCP socket of this process, and that socket stays
// open until the handler returns (httplib closes it afterwards), so the
// descriptor found cannot be reused under the watch. The search reads
// /proc/self/fd once, on the first check; requests that finish before
// their first check never pay for it.
//
//   connection_watch watch{req};
//   if (watch.peer_closed()) stream->cancel();

#include <string>

#include <httplib.h>

namespace mosaic::server {

class connection_watch {
public:
  explicit connection_watch(const httplib::Request& req);
  /// True once the peer closed or reset the connection (FIN, RST). False
  /// while it is open, and when its socket cannot be found.
  bool peer_closed();

private:
  std::string local_addr_, remote_addr_;
  int local_port_ = -1, remote_port_ = -1;
  int fd_ = -1;
  bool searched_ = false;
};

} // namespace mosaic::server
