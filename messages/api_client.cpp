#include "messages/api_client.hpp"

#include <zmq.hpp>

namespace mosaic::api {

struct api_client::impl {
  zmq::context_t ctx{1};
  zmq::socket_t socket{ctx, zmq::socket_type::dealer};
};

namespace {

error zmq_failure(const zmq::error_t& e, const char* what) {
  return make_error(errc::unavailable, "ZeroMQ ", what, ": ", e.what());
}

} // namespace

api_client::api_client(std::unique_ptr<impl> p, std::string endpoint)
  : impl_(std::move(p)), endpoint_(std::move(endpoint)) {}

api_client::~api_client() = default;

result<std::unique_ptr<api_client>> api_client::connect(const std::string& endpoint) {
  try {
    auto p = std::make_unique<impl>();
    p->socket.set(zmq::sockopt::linger, 0);
    p->socket.set(zmq::sockopt::sndhwm, 0); // never drop a request frame
    p->socket.set(zmq::sockopt::rcvhwm, 0); // nor a token frame
    p->socket.connect(endpoint);
    return std::unique_ptr<api_client>(new api_client(std::move(p), endpoint));
  } catch (const zmq::error_t& e) {
    return make_error(errc::invalid_argument, "cannot connect to ", endpoint, " (", e.what(),
                      "); use tcp://HOST:PORT");
  }
}

status api_client::send_raw(std::span<const uint8_t> bytes) {
  try {
    if (!impl_->socket.send(zmq::const_buffer{bytes.data(), bytes.size()}, zmq::send_flags::none))
      return make_error(errc::unavailable, "ZeroMQ send: the frame was not queued");
    return {};
  } catch (const zmq::error_t& e) {
    return zmq_failure(e, "send");
  }
}

result<uint64_t> api_client::send(const chat_request& request) {
  const uint64_t id = next_id_++;
  MOSAIC_TRY(send_raw(encode(client_frame{id, request})));
  return id;
}

status api_client::cancel(uint64_t id) {
  return send_raw(encode(client_frame{id, cancel_request{}}));
}

result<std::optional<server_frame>> api_client::receive(std::chrono::milliseconds timeout) {
  try {
    zmq::pollitem_t item{impl_->socket.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0)
      return std::optional<server_frame>{};
    zmq::message_t msg;
    if (!impl_->socket.recv(msg, zmq::recv_flags::dontwait))
      return std::optional<server_frame>{};
    auto f = decode_server_frame({static_cast<const uint8_t*>(msg.data()), msg.size()});
    if (!f)
      return std::move(f).err();
    return std::optional<server_frame>{std::move(*f)};
  } catch (const zmq::error_t& e) {
    return zmq_failure(e, "receive");
  }
}

result<answer> api_client::complete(const chat_request& request,
                                    std::chrono::milliseconds timeout) {
  auto id = send(request);
  if (!id)
    return std::move(id).err();
  const auto until = std::chrono::steady_clock::now() + timeout;
  answer out;
  while (std::chrono::steady_clock::now() < until) {
    auto f = receive(std::chrono::milliseconds{50});
    if (!f)
      return std::move(f).err();
    if (!*f || (*f)->request_id != *id)
      continue;
    auto& body = (*f)->body;
    if (auto* t = std::get_if<token_frame>(&body)) {
      out.text += t->text;
      out.tokens.push_back(std::move(*t));
    } else if (auto* d = std::get_if<finish_frame>(&body)) {
      out.finish = std::move(*d);
      return out;
    } else {
      out.error = std::get<error_frame>(std::move(body));
      return out;
    }
  }
  (void)cancel(*id);
  return make_error(errc::timeout, "no answer to request ", std::to_string(*id), " from ",
                    endpoint_, " within ", std::to_string(timeout.count()), " ms");
}

} // namespace mosaic::api
