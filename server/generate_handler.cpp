// POST /v1/chat/completions and /v1/completions: parse, admit, submit to
// the cluster, then answer with one JSON body or a server-sent-event
// stream. The first event is awaited before answering so that a request
// the cluster refuses (overloaded, bad image, unknown library reference)
// still gets its HTTP status; after that, errors arrive as SSE events.
// A client that goes away cancels its request: a stream notices when a
// write fails, a waiting handler through its connection_watch.

#include <algorithm>
#include <chrono>

#include "server/connection_watch.hpp"
#include "server/flight.hpp"
#include "server/request_convert.hpp"

namespace mosaic::server {

namespace {

constexpr auto poll_interval = std::chrono::milliseconds{100};

/// The HTTP side of a flight: response framing and the client's socket.
struct http_flight {
  http_flight(std::shared_ptr<flight> fl, response_header h)
    : f(std::move(fl)), header(std::move(h)) {}

  std::shared_ptr<flight> f;
  response_header header;
  connection_watch watch;
  bool include_usage = false;
  answer_detail detail;  ///< logprobs / token ids asked for
  size_t text_sent = 0;  ///< bytes of answer text streamed so far
  bool role_sent = false;
  bool client_gone = false;
  bool counted = false; ///< the outcome is in the metrics
  flight_clock::time_point checked = flight_clock::now(); ///< last look at the connection
  std::optional<wire::token_event> pending;               ///< the first event, sent by the stream

  /// The next event; nullopt past the deadline or when the client left
  /// (client_gone; the request is then cancelled).
  std::optional<wire::token_event> next() {
    while (!f->expired()) {
      // Tokens may flow without a pause: look at the connection on time
      // whether or not an event came.
      if (flight_clock::now() - checked >= poll_interval) {
        checked = flight_clock::now();
        if (watch.peer_closed()) {
          client_gone = true;
          f->cancel();
          return std::nullopt;
        }
      }
      if (auto ev = f->poll(poll_interval))
        return ev;
    }
    return std::nullopt;
  }
};

void fail(front_door& fd, httplib::Response& res, const api_error& e) {
  send_error(res, record_failure(fd, e));
}

/// Why no event came: the client left, the server stops, or the deadline passed.
api_error no_event_error(http_flight& h) {
  if (h.client_gone) // 499, nginx's "client closed request"; nobody reads the answer
    return api_error{499, "invalid_request_error", "the client closed the connection", "",
                     "client_closed"};
  return h.f->door().stopping ? shutting_down_error() : timeout_error();
}

void fail_without_event(http_flight& h, httplib::Response& res) {
  fail(h.f->door(), res, no_event_error(h));
}

void answer_whole(http_flight& h, wire::token_event first, httplib::Response& res) {
  std::string text;
  answer_tokens tokens;
  std::optional<wire::token_event> ev = std::move(first);
  const bool detail = h.detail.logprobs || h.detail.token_ids;
  while (ev && ev->finish == msg::FinishReason::none) {
    text += ev->text;
    if (detail)
      tokens.add(*ev);
    ev = h.next();
  }
  if (!ev)
    return fail_without_event(h, res);
  if (is_error_finish(ev->finish))
    return fail(h.f->door(), res, api_error_from(event_error(*ev)));
  h.f->record_success(*ev);
  if (!ev->prompt_token_ids.empty()) // no token came
    tokens.prompt_ids = ev->prompt_token_ids;
  res.set_content(full_response_json(h.header, text, ev->finish,
                                     usage_of(*ev, h.f->ttft_seconds()), h.detail, tokens),
                  "application/json");
}

/// Writes the stream's next piece; false when the stream is over.
bool stream_step(http_flight& h, httplib::DataSink& sink) {
  auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
  auto finish_stream = [&](const std::string& last) {
    write(last);
    write(sse_done());
    sink.done();
    return true;
  };
  std::optional<wire::token_event> ev;
  if (h.pending) {
    ev = std::move(h.pending);
    h.pending.reset();
  } else {
    ev = h.next();
  }
  if (!ev) {
    if (h.client_gone)
      return false; // counted by the stream's end (a cut)
    const auto e = no_event_error(h);
    h.counted = true;
    h.f->record_error(e.http_status);
    return finish_stream(sse_event(e.to_json()));
  }
  if (is_error_finish(ev->finish)) {
    auto e = api_error_from(event_error(*ev));
    h.counted = true;
    h.f->record_error(e.http_status);
    return finish_stream(sse_event(e.to_json()));
  }
  chunk_fields c;
  if (h.header.kind == api_kind::chat && !h.role_sent) {
    // OpenAI's first chunk: the role, with empty content.
    h.role_sent = true;
    chunk_fields role;
    role.role = true;
    role.content = std::string{};
    if (!write(sse_event(chunk_json(h.header, role))))
      return false;
  }
  answer_tokens tokens;
  const bool detail = h.detail.logprobs || h.detail.token_ids;
  if (detail) {
    c.detail = h.detail;
    c.tokens = &tokens;
  }
  if (ev->finish == msg::FinishReason::none) {
    if (detail) {
      tokens.text_offset = h.text_sent;
      tokens.add(*ev);
      h.text_sent += ev->text.size();
    }
    c.content = ev->text;
    return write(sse_event(chunk_json(h.header, c)));
  }
  h.counted = true;
  h.f->record_success(*ev);
  c.finish = ev->finish;
  tokens.prompt_ids = ev->prompt_token_ids; // none unless no token came
  c.detail.logprobs = false;
  if (h.header.kind == api_kind::chat)
    c.content.reset();
  else
    c.content = std::string{};
  std::string tail = sse_event(chunk_json(h.header, c));
  if (h.include_usage) {
    chunk_fields u;
    u.usage = usage_of(*ev, h.f->ttft_seconds());
    tail += sse_event(chunk_json(h.header, u));
  }
  return finish_stream(tail);
}

} // namespace

void handle_generate(front_door& fd, const httplib::Request& req, httplib::Response& res,
                     api_kind kind) {
  auto tenant = authenticate(fd, req, res);
  if (!tenant)
    return;
  parse_result<wire::generate_request> built;
  bool include_usage = false;
  answer_detail detail;
  flight_request who;
  who.tenant = std::move(*tenant);
  if (kind == api_kind::chat) {
    auto parsed = parse_chat_request(req.body, fd.options.limits);
    if (!parsed)
      return fail(fd, res, parsed.error);
    include_usage = parsed.value->include_usage;
    detail = {parsed.value->sampling.logprobs >= 0, parsed.value->sampling.return_token_ids};
    who.n_images = parsed.value->image_count();
    who.model = parsed.value->model;
    built = to_generate_request(*parsed.value, fd.info, fd.options.admission);
  } else {
    auto parsed = parse_completion_request(req.body, fd.options.limits);
    if (!parsed)
      return fail(fd, res, parsed.error);
    include_usage = parsed.value->include_usage;
    detail = {parsed.value->sampling.logprobs >= 0, parsed.value->sampling.return_token_ids};
    who.model = parsed.value->model;
    built = to_generate_request(*parsed.value, fd.info);
  }
  if (!built)
    return fail(fd, res, built.error);
  const bool stream = built.value->stream;
  auto started = start_flight(fd, std::move(*built.value), who);
  if (!started)
    return fail(fd, res, started.error);

  auto h = std::make_shared<http_flight>(
      std::move(*started.value),
      response_header{kind, make_response_id(kind == api_kind::chat ? "chatcmpl-" : "cmpl-"),
                      fd.info.model,
                      std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count()});
  h->include_usage = include_usage;
  h->detail = detail;

  auto first = h->next();
  if (!first)
    return fail_without_event(*h, res);
  if (is_error_finish(first->finish))
    return fail(fd, res, api_error_from(event_error(*first)));
  if (!stream)
    return answer_whole(*h, std::move(*first), res);

  h->pending = std::move(first);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [h](size_t, httplib::DataSink& sink) {
        if (!stream_step(*h, sink)) {
          h->f->cancel(); // the client went away
          return false;
        }
        return true;
      },
      [h](bool success) {
        if (!success || !h->f->done())
          h->f->cancel();
        if (!h->counted) { // cut: the client left mid-stream
          h->counted = true;
          h->f->record_error(h->f->door().stopping ? 503 : 499);
        }
      });
}

} // namespace mosaic::server
