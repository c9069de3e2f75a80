#include "server/http_server.hpp"

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "server/front_door.hpp"
#include "server/http_transport.hpp"

namespace mosaic::server {

namespace {

using json = nlohmann::json;

void add_routes(front_door& fd, httplib::Server& svr) {
  svr.Post("/v1/chat/completions", [&fd](const httplib::Request& req, httplib::Response& res) {
    handle_generate(fd, req, res, api_kind::chat);
  });
  svr.Post("/v1/completions", [&fd](const httplib::Request& req, httplib::Response& res) {
    handle_generate(fd, req, res, api_kind::completion);
  });
  svr.Get("/v1/models", [&fd](const httplib::Request& req, httplib::Response& res) {
    if (!authenticate(fd, req, res))
      return;
    json model = {
        {"id", fd.info.model},  {"object", "model"},     {"created", fd.info.created_unix_s},
        {"owned_by", "mosaic"}, {"root", fd.info.model}, {"max_model_len", fd.info.context_length}};
    json body = {{"object", "list"}, {"data", json::array({model})}};
    res.set_content(body.dump(), "application/json");
  });
  svr.Get("/health", [&fd](const httplib::Request&, httplib::Response& res) {
    if (fd.draining) { // a load balancer stops sending here
      res.status = 503;
      res.set_content(R"({"status":"draining"})", "application/json");
      return;
    }
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  svr.Get("/metrics", [&fd](const httplib::Request&, httplib::Response& res) {
    fd.metrics.update_cluster(fd.service.stats());
    res.set_content(fd.metrics.expose(fd.info.model), "text/plain; version=0.0.4; charset=utf-8");
  });
  svr.Post("/v1/mosaic/images", [&fd](const httplib::Request& req, httplib::Response& res) {
    handle_upload(fd, req, res);
  });
  svr.Delete(
      R"(/v1/mosaic/images/([^/]*))",
      [&fd](const httplib::Request& req, httplib::Response& res) { handle_delete(fd, req, res); });
  // Errors cpp-httplib answers itself (404, 413 from the payload limit,
  // 400 for a malformed request, …) have empty bodies: they become JSON
  // and are counted (a handler's own errors are counted where made).
  svr.set_error_handler([&fd](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      fd.metrics.request_failed(res.status);
      res.set_content(status_error(res.status).to_json(), "application/json");
    }
  });
  svr.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        api_error e{500, "server_error", "internal error", "", "internal"};
        try {
          if (ep)
            std::rethrow_exception(ep);
        } catch (const std::exception& ex) {
          e.message = std::string{"internal error: "} + ex.what();
        } catch (...) {
        }
        send_error(res, e);
      });
}

} // namespace

void send_error(httplib::Response& res, const api_error& err) {
  res.status = err.http_status;
  res.set_content(err.to_json(), "application/json");
  if (err.http_status == 401)
    res.set_header("WWW-Authenticate", "Bearer");
}

std::optional<std::string> authenticate(front_door& fd, const httplib::Request& req,
                                        httplib::Response& res) {
  auto who = fd.options.keys.authenticate(req.get_header_value("Authorization"));
  if (!who) {
    fd.metrics.request_failed(who.error.http_status);
    send_error(res, who.error);
    return std::nullopt;
  }
  return std::move(*who.value);
}

struct http_server::impl {
  impl(http_options o, generation_service& s) : fd{std::move(o), s, s.info(), {}, {}, {}} {}
  front_door fd;
  guarded_server svr{fd.options.connections};
  std::thread listener;
  std::atomic<bool> listener_exited{false};
  bool listener_closed = false;
  int listen_fd = -1;

  /// Closes the listener. Not with cpp-httplib's stop(): that marks the
  /// server socket invalid, which also aborts every streaming answer at
  /// once. shutdown() fails the listener's accept instead; cpp-httplib then
  /// closes the socket and waits for the open connections to end.
  void close_listener() {
    if (listener_closed || listener_exited)
      return;
    listener_closed = true;
    if (listen_fd < 0 || ::shutdown(listen_fd, SHUT_RDWR) != 0)
      svr.stop();
  }
  int port = 0;
};

http_server::http_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

result<std::unique_ptr<http_server>> http_server::start(http_options options,
                                                        generation_service& service) {
  if (options.port < 0 || options.port > 65535)
    return make_error(errc::invalid_argument, "HTTP port ", std::to_string(options.port),
                      " is out of range; use 1-65535 (or 0 for any free port)");
  const auto& c = options.connections;
  if (c.max_connections < 1 || c.max_connections_per_client < 1 || c.keep_alive_max_count < 1 ||
      c.header_timeout.count() <= 0 || c.read_timeout.count() <= 0 ||
      c.write_timeout.count() <= 0 || c.keep_alive_timeout.count() < 0)
    return make_error(errc::invalid_argument,
                      "HTTP connection limits must be positive (max_connections, "
                      "max_connections_per_client, timeouts)");
  auto p = std::make_unique<impl>(std::move(options), service);
  auto& svr = p->svr;
  svr.set_payload_max_length(p->fd.options.limits.max_body_bytes);
  svr.on_refuse = [fd = &p->fd](int status) { fd->metrics.request_failed(status); };
  // Headers, bodies and SSE chunks are separate small writes: without
  // TCP_NODELAY, Nagle holds each until the client's (delayed) ACK.
  svr.set_tcp_nodelay(true);
  // cpp-httplib 0.11 listens with a backlog of 5: a burst of clients
  // overflows it. Note the listening socket to raise it after the bind.
  int listen_fd = -1;
  svr.set_socket_options([&listen_fd](int sock) {
    httplib::default_socket_options(sock);
    listen_fd = sock;
  });
  add_routes(p->fd, svr);
  const auto& host = p->fd.options.host;
  if (p->fd.options.port == 0) {
    p->port = svr.bind_to_any_port(host);
    if (p->port <= 0)
      return make_error(errc::unavailable, "cannot listen on ", host,
                        "; pass a local address such as 127.0.0.1");
  } else {
    if (!svr.bind_to_port(host, p->fd.options.port))
      return make_error(errc::unavailable, "cannot listen on ", host, ":",
                        std::to_string(p->fd.options.port),
                        "; the port is taken or the address is not local (try --http-port)");
    p->port = p->fd.options.port;
  }
  if (listen_fd >= 0)
    ::listen(listen_fd, SOMAXCONN); // on a listening socket: only the backlog changes
  p->listen_fd = listen_fd;
  auto* s = &svr;
  auto* exited = &p->listener_exited;
  p->listener = std::thread{[s, exited] {
    s->listen_after_bind();
    *exited = true;
  }};
  // httplib's stop() only wakes a listener that is already running: wait
  // for it (a thread start; microseconds), so that a server stopped right
  // away does not block in accept.
  while (!svr.is_running() && !p->listener_exited)
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  return std::make_unique<http_server>(std::move(p));
}

http_server::~http_server() {
  stop();
}

void http_server::stop() {
  if (!impl_)
    return;
  auto& fd = impl_->fd;
  fd.draining = true;
  impl_->svr.close_connections_after_answer();
  fd.stopping = true; // streams end with an error event, waiting answers with 503
  impl_->close_listener();
  if (impl_->listener.joinable())
    impl_->listener.join(); // cpp-httplib waits for every connection
}

int http_server::drain(std::chrono::milliseconds grace) {
  if (!impl_)
    return 0;
  auto& fd = impl_->fd;
  fd.draining = true;
  impl_->svr.close_connections_after_answer();
  // New connections are refused and each open one ends after its current
  // answer; running requests go on.
  impl_->close_listener();
  const auto until = std::chrono::steady_clock::now() + grace;
  while (fd.in_flight > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  const int cut = fd.in_flight;
  stop();
  return cut;
}

int http_server::port() const {
  return impl_->port;
}
const std::string& http_server::host() const {
  return impl_->fd.options.host;
}
front_door_metrics& http_server::metrics() {
  return impl_->fd.metrics;
}
front_door& http_server::door() {
  return impl_->fd;
}

} // namespace mosaic::server
