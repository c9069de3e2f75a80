#include "server/zmq_server.hpp"

#include <atomic>
#include <iterator>
#include <map>
#include <thread>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "messages/api_frames.hpp"
#include "messages/fb_message.hpp"
#include "server/flight.hpp"
#include "server/request_convert.hpp"

namespace mosaic::server {

namespace {

using namespace std::chrono_literals;

/// Frames read per loop pass before token events are forwarded again.
constexpr int max_frames_per_pass = 256;
/// Events forwarded per request and pass (one request cannot starve others).
constexpr int max_events_per_pass = 1024;

/// A client's request in flight.
struct zmq_request {
  std::string identity;
  std::vector<std::string> envelope; ///< frames between identity and payload (REQ's "")
  uint64_t id = 0;
  std::shared_ptr<flight> f;
  uint32_t image_tokens = 0; ///< of its prompt
};

api::error_frame to_frame(const api_error& e) {
  return {static_cast<uint16_t>(e.http_status), e.type, e.message, e.param, e.code};
}

/// The same content parts an OpenAI JSON body gives, with the same checks
/// (limits on image bytes; library references parsed by parse_image_url).
std::optional<api_error> convert_part(const api::part& in, const request_limits& limits,
                                      const std::string& param, content_part& out) {
  if (const auto* text = std::get_if<std::string>(&in)) {
    out.text = *text;
    return std::nullopt;
  }
  out.is_image = true;
  if (const auto* ref = std::get_if<api::image_ref>(&in)) {
    const std::string url =
        ref->id.starts_with("mosaic://") ? ref->id : "mosaic://library/" + ref->id;
    auto img = parse_image_url(url, limits, param);
    if (!img)
      return img.error;
    out.image = std::move(*img.value);
    return std::nullopt;
  }
  const auto& bytes = std::get<api::image_bytes>(in);
  if (bytes.data.empty())
    return invalid_request(param, "the image is empty");
  if (auto e = check_image_bytes(bytes.data.size(), limits, param))
    return e;
  out.image.mime = bytes.mime;
  out.image.bytes = bytes.data;
  return std::nullopt;
}

/// A ZeroMQ chat request as the chat_request the HTTP parser produces,
/// checked by the same functions.
parse_result<chat_request> to_chat_request(const api::chat_request& in,
                                           const request_limits& limits) {
  using out_t = parse_result<chat_request>;
  chat_request req;
  req.model = in.model;
  req.stream = true;
  req.sampling.max_tokens = in.max_tokens;
  req.sampling.temperature = in.temperature;
  req.sampling.top_p = in.top_p;
  req.sampling.seed = in.seed;
  req.sampling.stop = in.stop;
  if (!in.policy.empty())
    req.mosaic.policy = in.policy;
  if (auto e = check_sampling(req.sampling, limits))
    return out_t{std::nullopt, std::move(*e)};
  if (auto e = check_turns(req, limits, in.messages.size()))
    return out_t{std::nullopt, std::move(*e)};
  for (size_t m = 0; m < in.messages.size(); ++m) {
    chat_turn turn;
    turn.role = in.messages[m].role;
    const auto& parts = in.messages[m].content;
    for (size_t p = 0; p < parts.size(); ++p) {
      content_part part;
      const auto param = "messages[" + std::to_string(m) + "].content[" + std::to_string(p) + "]";
      if (auto e = convert_part(parts[p], limits, param, part))
        return out_t{std::nullopt, std::move(*e)};
      turn.content.push_back(std::move(part));
    }
    req.messages.push_back(std::move(turn));
  }
  if (auto e = check_turns(req, limits))
    return out_t{std::nullopt, std::move(*e)};
  return out_t{std::move(req), {}};
}

} // namespace

struct zmq_server::impl {
  impl(zmq_options o, front_door& door) : options(std::move(o)), fd(door) {}

  zmq_options options;
  front_door& fd;
  zmq::context_t ctx{1};
  zmq::socket_t socket{ctx, zmq::socket_type::router};
  std::map<std::pair<std::string, uint64_t>, zmq_request> active;
  std::thread io;
  std::atomic<bool> stopping{false};
  int port = 0;

  /// Sends `f` to a client; false when the client is gone (ROUTER_MANDATORY).
  bool send(const std::string& identity, const std::vector<std::string>& envelope,
            const api::server_frame& f) {
    const auto bytes = api::encode(f);
    std::vector<zmq::const_buffer> parts;
    parts.emplace_back(identity.data(), identity.size());
    for (const auto& e : envelope)
      parts.emplace_back(e.data(), e.size());
    parts.emplace_back(bytes.data(), bytes.size());
    try {
      return zmq::send_multipart(socket, parts, zmq::send_flags::dontwait).has_value();
    } catch (const zmq::error_t&) {
      return false; // EHOSTUNREACH: the peer disconnected
    }
  }

  void send_error(const std::string& identity, const std::vector<std::string>& envelope,
                  uint64_t id, const api_error& e) {
    record_failure(fd, e);
    send(identity, envelope, {id, to_frame(e)});
  }

  void on_chat(const std::string& identity, const std::vector<std::string>& envelope, uint64_t id,
               const api::chat_request& in) {
    if (active.count({identity, id}) != 0)
      return send_error(identity, envelope, id,
                        invalid_request("request_id", "request id " + std::to_string(id) +
                                                          " is already in flight on this "
                                                          "connection; use a fresh id"));
    auto tenant =
        fd.options.keys.authenticate(in.api_key.empty() ? std::string{} : "Bearer " + in.api_key);
    if (!tenant)
      return send_error(identity, envelope, id, tenant.error);
    auto chat = to_chat_request(in, fd.options.limits);
    if (!chat)
      return send_error(identity, envelope, id, chat.error);
    auto built = to_generate_request(*chat.value, fd.info, fd.options.admission);
    if (!built)
      return send_error(identity, envelope, id, built.error);
    flight_request who{in.model, std::move(*tenant.value), chat.value->image_count()};
    auto started = start_flight(fd, std::move(*built.value), who);
    if (!started)
      return send_error(identity, envelope, id, started.error);
    active.emplace(std::pair{identity, id},
                   zmq_request{identity, envelope, id, std::move(*started.value),
                               uint32_t(who.n_images) * uint32_t(fd.info.image_tokens)});
  }

  void on_frame(std::vector<zmq::message_t>& parts) {
    if (parts.size() < 2)
      return; // a ROUTER always prepends the identity; nothing to answer
    const std::string identity = parts.front().to_string();
    std::vector<std::string> envelope;
    for (size_t i = 1; i + 1 < parts.size(); ++i)
      envelope.push_back(parts[i].to_string());
    const auto& payload = parts.back();
    if (envelope.size() > 1)
      return send_error(identity, envelope, 0,
                        invalid_request("", "send one frame per message (a FlatBuffers "
                                            "ClientFrame), optionally after one empty frame"));
    auto frame =
        api::decode_client_frame({static_cast<const uint8_t*>(payload.data()), payload.size()});
    if (!frame) {
      auto e = invalid_request("", "malformed frame: " + frame.err().message);
      e.code = "malformed_frame";
      return send_error(identity, envelope, 0, e);
    }
    if (payload.size() > fd.options.limits.max_body_bytes)
      return send_error(identity, envelope, frame->request_id,
                        api_error{413, "invalid_request_error",
                                  "the frame is " + std::to_string(payload.size()) +
                                      " bytes; the limit is " +
                                      std::to_string(fd.options.limits.max_body_bytes),
                                  "", "body_too_large"});
    if (const auto* chat = std::get_if<api::chat_request>(&frame->body))
      return on_chat(identity, envelope, frame->request_id, *chat);
    auto it = active.find({identity, frame->request_id});
    if (it == active.end())
      return;         // already over: its last frame is on the way
    active.erase(it); // the flight cancels its stream
    send_error(identity, envelope, frame->request_id,
               api_error{499, "invalid_request_error", "the request was cancelled by the client",
                         "", "cancelled"});
  }

  /// Forwards the events of every request; ends the finished ones.
  void pump() {
    std::vector<std::string> gone;
    for (auto it = active.begin(); it != active.end();) {
      auto& r = it->second;
      bool ended = false, delivered = true;
      for (int n = 0; n < max_events_per_pass && !ended && delivered; ++n) {
        auto ev = r.f->poll(0ms);
        if (!ev)
          break;
        if (ev->finish == msg::FinishReason::none) {
          delivered = send(r.identity, r.envelope,
                           {r.id, api::token_frame{ev->index, ev->token_id, ev->text}});
          continue;
        }
        ended = true;
        if (is_error_finish(ev->finish)) {
          auto e = api_error_from(event_error(*ev));
          record_failure(fd, e);
          delivered = send(r.identity, r.envelope, {r.id, to_frame(e)});
          continue;
        }
        r.f->record_success(*ev);
        const auto usage = usage_of(*ev, r.f->ttft_seconds());
        delivered = send(
            r.identity, r.envelope,
            {r.id, api::finish_frame{std::string{finish_reason_name(ev->finish)},
                                     usage.prompt_tokens, usage.completion_tokens,
                                     ev->image_tokens > 0 ? ev->image_tokens : r.image_tokens}});
      }
      if (!ended && delivered && r.f->expired()) {
        ended = true;
        record_failure(fd, timeout_error());
        delivered = send(r.identity, r.envelope, {r.id, to_frame(timeout_error())});
      }
      if (!delivered) {
        gone.push_back(r.identity);
        if (!ended)
          record_failure(fd, api_error{499, "invalid_request_error", "client gone", "", ""});
        ended = true;
      }
      it = ended ? active.erase(it) : std::next(it);
    }
    // A client that is gone cancels every request it has in flight.
    for (const auto& identity : gone)
      for (auto it = active.begin(); it != active.end();)
        it = it->first.first == identity ? active.erase(it) : std::next(it);
  }

  void serve() {
    while (!stopping) {
      try {
        zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
        // While requests run, wake every millisecond to forward their
        // tokens (the streams have no callback to wake this thread).
        zmq::poll(&item, 1, active.empty() ? 50ms : 1ms);
        for (int i = 0; i < max_frames_per_pass; ++i) {
          std::vector<zmq::message_t> parts;
          if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait))
            break;
          on_frame(parts);
        }
        pump();
      } catch (const zmq::error_t&) {
        if (stopping)
          break;
      }
    }
    active.clear(); // cancels what is left
  }
};

zmq_server::zmq_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

result<std::unique_ptr<zmq_server>> zmq_server::start(zmq_options options, http_server& http) {
  if (options.port < 0 || options.port > 65535)
    return make_error(errc::invalid_argument, "ZeroMQ port ", std::to_string(options.port),
                      " is out of range; use 1-65535 (or 0 for any free port)");
  auto p = std::make_unique<impl>(std::move(options), http.door());
  const auto& o = p->options;
  const std::string where =
      "tcp://" + o.host + ":" + (o.port == 0 ? std::string{"*"} : std::to_string(o.port));
  try {
    p->socket.set(zmq::sockopt::linger, 0);
    p->socket.set(zmq::sockopt::router_mandatory, 1); // a gone client is a send error
    p->socket.set(zmq::sockopt::sndhwm, 0); // token frames wait for slow clients, never dropped
    p->socket.set(zmq::sockopt::maxmsgsize, int64_t(max_message_bytes));
    p->socket.bind(where);
    const auto endpoint = p->socket.get(zmq::sockopt::last_endpoint);
    p->port = std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
  } catch (const std::exception& e) {
    return make_error(errc::unavailable, "cannot listen on ", where, " (", e.what(),
                      "); the port is taken or the address is not local (try --zmq-port)");
  }
  auto* s = p.get();
  p->io = std::thread{[s] { s->serve(); }};
  return std::make_unique<zmq_server>(std::move(p));
}

zmq_server::~zmq_server() {
  stop();
}

void zmq_server::stop() {
  if (!impl_ || !impl_->io.joinable())
    return;
  impl_->stopping = true;
  impl_->io.join();
}

int zmq_server::port() const {
  return impl_->port;
}

std::string zmq_server::endpoint() const {
  return "tcp://" + impl_->options.host + ":" + std::to_string(impl_->port);
}

} // namespace mosaic::server
