#include "server/connection_watch.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdlib>

namespace mosaic::server {

namespace {

/// The numeric address and port of `sa`, as httplib writes them.
bool address_of(const sockaddr_storage& sa, std::string& addr, int& port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(sa);
    if (inet_ntop(AF_INET, &in.sin_addr, buf, sizeof buf) == nullptr)
      return false;
    port = ntohs(in.sin_port);
  } else if (sa.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(sa);
    if (inet_ntop(AF_INET6, &in6.sin6_addr, buf, sizeof buf) == nullptr)
      return false;
    port = ntohs(in6.sin6_port);
  } else {
    return false;
  }
  addr = buf;
  return true;
}

bool matches(int fd, const std::string& local_addr, int local_port, const std::string& remote_addr,
             int remote_port) {
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  std::string addr;
  int port = -1;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0 || !address_of(sa, addr, port) ||
      port != remote_port || addr != remote_addr)
    return false;
  len = sizeof sa;
  return getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0 &&
         address_of(sa, addr, port) && port == local_port && addr == local_addr;
}

int find_socket(const std::string& local_addr, int local_port, const std::string& remote_addr,
                int remote_port) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr)
    return -1;
  int found = -1;
  while (const dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dirfd(dir))
      continue;
    if (matches(int(fd), local_addr, local_port, remote_addr, remote_port)) {
      found = int(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

} // namespace

connection_watch::connection_watch(const httplib::Request& req)
  : local_addr_(req.local_addr), remote_addr_(req.remote_addr), local_port_(req.local_port),
    remote_port_(req.remote_port) {}

bool connection_watch::peer_closed() {
  if (!searched_) {
    searched_ = true;
    if (local_port_ > 0 && remote_port_ > 0)
      fd_ = find_socket(local_addr_, local_port_, remote_addr_, remote_port_);
  }
  if (fd_ < 0)
    return false;
  pollfd p{fd_, POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0)
    return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

} // namespace mosaic::server
