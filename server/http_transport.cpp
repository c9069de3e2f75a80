#include "server/http_transport.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>


namespace mosaic::server {

namespace {

using clock_type = std::chrono::steady_clock;

thread_local int served_socket = -1;

/// The numeric address and port of `sa`, as cpp-httplib writes them.
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

void peer_of(int sock, std::string& addr, int& port) {
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  if (getpeername(sock, reinterpret_cast<sockaddr*>(&sa), &len) != 0 || !address_of(sa, addr, port))
    addr.clear(), port = -1;
}

void local_of(int sock, std::string& addr, int& port) {
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  if (getsockname(sock, reinterpret_cast<sockaddr*>(&sa), &len) != 0 || !address_of(sa, addr, port))
    addr.clear(), port = -1;
}

/// poll() for `events` up to `wait` (0: look only); false on timeout or error.
bool wait_for(int sock, short events, std::chrono::milliseconds wait) {
  pollfd p{sock, events, 0};
  for (;;) {
    const int r = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(wait.count(), 0)));
    if (r < 0 && errno == EINTR)
      continue;
    return r > 0 && (p.revents & (events | POLLHUP | POLLERR)) != 0;
  }
}

std::chrono::milliseconds until(clock_type::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t - clock_type::now());
}

/// Bytes read from a connection and not yet parsed: the parser reads
/// headers a byte at a time, and a client may pipeline its next request
/// behind the current one (the buffer outlives each request's stream).
struct read_buffer {
  char bytes[4096];
  size_t offset = 0, size = 0;
};

/// One request's view of its connection for cpp-httplib's parser: until
/// headers_done() every read shares one deadline, after it each read may
/// idle up to read_timeout.
class socket_stream : public httplib::Stream {
public:
  socket_stream(int sock, const connection_limits& limits, read_buffer& buffer)
    : sock_(sock), limits_(limits), header_deadline_(clock_type::now() + limits.header_timeout),
      in_(buffer) {}

  void headers_done() { in_headers_ = false; }

  bool is_readable() const override { return in_.size > 0 || wait_for(sock_, POLLIN, read_wait()); }
  bool is_writable() const override {
    if (!wait_for(sock_, POLLOUT, limits_.write_timeout))
      return false;
    // Alive unless the peer closed: readable with nothing to read.
    if (!wait_for(sock_, POLLIN, std::chrono::milliseconds{0}))
      return true;
    char c;
    return ::recv(sock_, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
  }
  ssize_t read(char* ptr, size_t size) override {
    if (in_.size == 0) {
      if (!wait_for(sock_, POLLIN, read_wait()))
        return -1;
      ssize_t n;
      do
        n = ::recv(sock_, in_.bytes, sizeof in_.bytes, 0);
      while (n < 0 && errno == EINTR);
      if (n <= 0)
        return n;
      in_.offset = 0;
      in_.size = size_t(n);
    }
    const size_t n = std::min(size, in_.size);
    std::memcpy(ptr, in_.bytes + in_.offset, n);
    in_.offset += n;
    in_.size -= n;
    return ssize_t(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!wait_for(sock_, POLLOUT, limits_.write_timeout))
      return -1;
    ssize_t n;
    do
      n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { peer_of(sock_, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { local_of(sock_, ip, port); }
  socket_t socket() const override { return sock_; }

private:
  std::chrono::milliseconds read_wait() const {
    if (!in_headers_)
      return limits_.read_timeout;
    return std::max(until(header_deadline_), std::chrono::milliseconds{0});
  }

  int sock_;
  const connection_limits& limits_;
  clock_type::time_point header_deadline_;
  bool in_headers_ = true;
  read_buffer& in_;
};

/// A whole refusal, written without reading the request.
void refuse(int sock, int status) {
  const auto err = status_error(status);
  const std::string body = err.to_json();
  const std::string reason = status == 429 ? "Too Many Requests" : "Service Unavailable";
  const std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                           "\r\nContent-Type: application/json\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  const std::string all = head + body;
  if (wait_for(sock, POLLOUT, std::chrono::milliseconds{1000}))
    (void)::send(sock, all.data(), all.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

} // namespace

api_error status_error(int status) {
  api_error e;
  e.http_status = status;
  switch (status) {
  case 404:
    e.type = "not_found_error";
    e.message = "no such endpoint; see /v1/models, /v1/chat/completions, /v1/completions";
    break;
  case 405:
    e.message = "method not allowed on this endpoint";
    break;
  case 413:
    e.message = "the request body is too large; send smaller images or fewer of them";
    break;
  case 429:
    e.type = "rate_limit_error";
    e.message = "too many connections from this client address; close idle ones and retry";
    e.code = "too_many_connections";
    break;
  case 503:
    e.type = "server_error";
    e.message = "the server holds as many connections as it serves; retry later";
    e.code = "too_many_connections";
    break;
  default:
    e.type = status >= 500 ? "server_error" : "invalid_request_error";
    e.message = "HTTP " + std::to_string(status);
  }
  return e;
}

int current_socket() {
  return served_socket;
}

// -- elastic_pool -----------------------------------------------------------------

elastic_pool::elastic_pool(int max_threads, int keep_threads, std::chrono::milliseconds idle_exit)
  : max_threads_(std::max(max_threads, 1)), keep_threads_(std::max(keep_threads, 0)),
    idle_exit_(idle_exit) {}

elastic_pool::~elastic_pool() {
  shutdown();
}

void elastic_pool::enqueue(std::function<void()> fn) {
  join_retired();
  std::unique_lock lock{mutex_};
  if (stop_)
    return;
  jobs_.push_back(std::move(fn));
  if (idle_ >= int(jobs_.size()) || int(threads_.size()) >= max_threads_) {
    cv_.notify_one();
    return;
  }
  threads_.emplace_back([this] { run(); });
}

void elastic_pool::run() {
  std::unique_lock lock{mutex_};
  for (;;) {
    ++idle_;
    const bool woken = cv_.wait_for(lock, idle_exit_, [this] { return stop_ || !jobs_.empty(); });
    --idle_;
    if (!woken && !stop_ && int(threads_.size()) > keep_threads_) {
      // Idle too long: this thread ends; the next enqueue joins it.
      const auto me = std::this_thread::get_id();
      auto it = std::find_if(threads_.begin(), threads_.end(),
                             [me](const std::thread& t) { return t.get_id() == me; });
      if (it != threads_.end())
        retired_.splice(retired_.end(), threads_, it);
      return;
    }
    if (jobs_.empty()) {
      if (stop_)
        return;
      continue;
    }
    auto fn = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    fn();
    lock.lock();
  }
}

void elastic_pool::join_retired() {
  std::list<std::thread> done;
  {
    std::lock_guard lock{mutex_};
    done.swap(retired_);
  }
  for (auto& t : done)
    t.join();
}

void elastic_pool::shutdown() {
  std::list<std::thread> threads;
  {
    std::lock_guard lock{mutex_};
    stop_ = true;
    threads.swap(threads_);
    threads.splice(threads.end(), retired_);
  }
  cv_.notify_all();
  for (auto& t : threads)
    if (t.joinable())
      t.join();
}

int elastic_pool::threads() const {
  std::lock_guard lock{mutex_};
  return int(threads_.size());
}

// -- guarded_server ---------------------------------------------------------------

guarded_server::guarded_server(connection_limits limits) : limits_(limits) {
  new_task_queue = [n = limits_.max_connections] { return new elastic_pool(n); };
  // Only for the Keep-Alive header cpp-httplib writes; the loop is ours.
  set_keep_alive_max_count(size_t(std::max(limits_.keep_alive_max_count, 1)));
  set_keep_alive_timeout(std::chrono::duration_cast<std::chrono::seconds>(limits_.keep_alive_timeout).count());
}

int guarded_server::open_connections() const {
  std::lock_guard lock{mutex_};
  return open_;
}

bool guarded_server::admit(const std::string& addr, int& status) {
  std::lock_guard lock{mutex_};
  if (open_ >= limits_.max_connections) {
    status = 503;
    return false;
  }
  auto& mine = per_client_[addr];
  if (mine >= limits_.max_connections_per_client) {
    if (mine == 0)
      per_client_.erase(addr);
    status = 429;
    return false;
  }
  ++mine;
  ++open_;
  return true;
}

void guarded_server::leave(const std::string& addr) {
  std::lock_guard lock{mutex_};
  --open_;
  if (auto it = per_client_.find(addr); it != per_client_.end() && --it->second <= 0)
    per_client_.erase(it);
}

bool guarded_server::next_request(int sock) const {
  // In slices, so that an idle connection ends soon after a drain starts.
  const auto end = clock_type::now() + limits_.keep_alive_timeout;
  for (;;) {
    const auto left = until(end);
    if (wait_for(sock, POLLIN, std::min(left, std::chrono::milliseconds{100})))
      return true;
    if (draining_ || left.count() <= 100)
      return false;
  }
}

bool guarded_server::process_and_close_socket(socket_t sock) {
  std::string addr;
  int port = -1;
  peer_of(sock, addr, port);
  int status = 0;
  bool ret = false;
  if (!admit(addr, status)) {
    refuse(sock, status);
    if (on_refuse)
      on_refuse(status);
  } else {
    const int on = 1;
    ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    served_socket = sock;
    read_buffer buffer;
    int left = std::max(limits_.keep_alive_max_count, 1);
    while (svr_sock_ != INVALID_SOCKET && left > 0 && (buffer.size > 0 || next_request(sock))) {
      socket_stream strm(sock, limits_, buffer);
      bool closed = false;
      const bool last = left == 1 || draining_;
      ret = process_request(strm, last, closed, [&strm](httplib::Request& req) {
        strm.headers_done();
        // curl's -d declares a form, and cpp-httplib caps form bodies at
        // 8 KiB (413). Every body here is JSON or raw image bytes, whatever
        // its declared type: a form is read as bytes.
        auto it = req.headers.find("Content-Type");
        if (it != req.headers.end() &&
            it->second.rfind("application/x-www-form-urlencoded", 0) == 0)
          it->second = "application/octet-stream";
      });
      if (!ret || closed || last)
        break;
      --left;
    }
    served_socket = -1;
    leave(addr);
  }
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return ret;
}

} // namespace mosaic::server
