#pragma once

// How the HTTP front door holds connections (internal to server/).
// cpp-httplib 0.11 serves each connection on one thread of a fixed pool
// (32 by default) and bounds a header read only per recv: 32 clients
// that trickle a header byte every few seconds took every thread, and
// /health with them. Here:
//
// - `elastic_pool` starts a thread per connection as needed, up to
//   `max_connections`, and keeps finished ones for the next connection;
// - `guarded_server` takes each accepted socket before cpp-httplib reads
//   anything: over `max_connections_per_client` from one address (or over
//   `max_connections` in all) it answers 429 (503) and closes; otherwise it
//   serves the keep-alive loop itself through its own stream, which ends a
//   request whose line and headers have not all arrived `header_timeout`
//   after its first byte was awaited, and a body read idle for
//   `read_timeout`. Once `draining` is set every answer closes its
//   connection.
//
// The socket being served is known to the handler's thread
// (`current_socket`), which connection_watch uses to notice a client
// that left.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "server/http_server.hpp"
#include "server/openai_request.hpp"

namespace mosaic::server {

/// cpp-httplib's task queue: one thread per running connection, started
/// on demand up to `max_threads`; beyond that connections wait their turn.
/// A thread idle for `idle_exit` ends, down to `keep_threads`, so that a
/// burst's threads (and what each holds) go once it is over.
class elastic_pool : public httplib::TaskQueue {
public:
  explicit elastic_pool(int max_threads, int keep_threads = 8,
                        std::chrono::milliseconds idle_exit = std::chrono::seconds{5});
  ~elastic_pool() override;
  void enqueue(std::function<void()> fn) override;
  void shutdown() override;
  int threads() const;

private:
  void run();
  /// Joins the threads that ended idle (outside the lock: they are exiting).
  void join_retired();

  const int max_threads_;
  const int keep_threads_;
  const std::chrono::milliseconds idle_exit_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::list<std::thread> threads_;
  std::list<std::thread> retired_; ///< ended idle, not joined yet
  int idle_ = 0;
  bool stop_ = false;
};

class guarded_server : public httplib::Server {
public:
  explicit guarded_server(connection_limits limits);
  /// From now on every answer closes its connection (draining).
  void close_connections_after_answer() { draining_ = true; }
  int open_connections() const;
  const connection_limits& limits() const { return limits_; }
  /// Called with the status of each connection refused at accept.
  std::function<void(int)> on_refuse;

private:
  bool process_and_close_socket(socket_t sock) override;
  /// Waits for the next request on a kept-alive connection: false after
  /// keep_alive_timeout, or at once when draining.
  bool next_request(int sock) const;
  /// Counts `addr` in; false (nothing counted) when over a limit, with
  /// the status to refuse with.
  bool admit(const std::string& addr, int& status);
  void leave(const std::string& addr);

  const connection_limits limits_;
  std::atomic<bool> draining_{false};
  mutable std::mutex mutex_;
  std::map<std::string, int> per_client_;
  int open_ = 0;
};

/// The OpenAI error body for a status the transport or cpp-httplib
/// answers without a handler (404, 405, 413, 429, 503, …).
api_error status_error(int status);

/// The socket the calling thread serves (-1 outside a guarded_server
/// connection).
int current_socket();

} // namespace mosaic::server
