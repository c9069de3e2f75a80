#include "server/http_server.hpp"

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "server/front_door.hpp"

namespace mosaic::server {

namespace {

using json = nlohmann::json;

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
  default:
    e.type = status >= 500 ? "server_error" : "invalid_request_error";
    e.message = "HTTP " + std::to_string(status);
  }
  return e;
}

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
  svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
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
  // Empty-bodied errors (404, 413 from the payload limit, …) become JSON.
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty())
      res.set_content(status_error(res.status).to_json(), "application/json");
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
  httplib::Server svr;
  std::thread listener;
  std::atomic<bool> listener_exited{false};
  int port = 0;
};

http_server::http_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

result<std::unique_ptr<http_server>> http_server::start(http_options options,
                                                        generation_service& service) {
  if (options.port < 0 || options.port > 65535)
    return make_error(errc::invalid_argument, "HTTP port ", std::to_string(options.port),
                      " is out of range; use 1-65535 (or 0 for any free port)");
  const int threads = options.threads > 0 ? options.threads : 1;
  auto p = std::make_unique<impl>(std::move(options), service);
  auto& svr = p->svr;
  // httplib's API takes ownership of a raw pointer here.
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  svr.set_payload_max_length(p->fd.options.limits.max_body_bytes);
  svr.set_read_timeout(30, 0);
  svr.set_write_timeout(30, 0);
  // cpp-httplib closes a connection after 5 requests by default; clients
  // that keep one connection (SDKs, benchmark tools) would reconnect.
  svr.set_keep_alive_max_count(100000);
  svr.set_keep_alive_timeout(5);
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
  impl_->fd.stopping = true;
  impl_->svr.stop();
  if (impl_->listener.joinable())
    impl_->listener.join();
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
