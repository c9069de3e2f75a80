#include "server/connection_watch.hpp"

#include <poll.h>

#include "server/http_transport.hpp"

namespace mosaic::server {

connection_watch::connection_watch() : fd_(current_socket()) {}

bool connection_watch::peer_closed() const {
  if (fd_ < 0)
    return false;
  pollfd p{fd_, POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0)
    return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

} // namespace mosaic::server
