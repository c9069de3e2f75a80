#pragma once

// Client-side helpers of the HTTP tests: an httplib client on loopback
// with bounded timeouts, and a parser of server-sent events.

#include <string>
#include <vector>

#include <httplib.h>

namespace mosaic::server::test {

inline httplib::Client loopback_client(int port) {
  httplib::Client cli{"127.0.0.1", port};
  cli.set_connection_timeout(5, 0);
  cli.set_read_timeout(30, 0);
  cli.set_write_timeout(10, 0);
  return cli;
}

/// The payloads of "data: …" events, in order.
inline std::vector<std::string> sse_payloads(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    auto end = body.find("\n\n", pos);
    if (end == std::string::npos)
      break;
    auto event = body.substr(pos, end - pos);
    if (event.rfind("data: ", 0) == 0)
      out.push_back(event.substr(6));
    pos = end + 2;
  }
  return out;
}

} // namespace mosaic::server::test
