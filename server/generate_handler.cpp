// POST /v1/chat/completions and /v1/completions: parse, admit, submit to
// the cluster, then answer with one JSON body or a server-sent-event
// stream. The first event is awaited before answering so that a request
// the cluster refuses (overloaded, bad image, unknown library reference)
// still gets its HTTP status; after that, errors arrive as SSE events.

#include <algorithm>
#include <chrono>

#include "server/front_door.hpp"
#include "server/request_convert.hpp"

namespace mosaic::server {

namespace {

using clock_type = std::chrono::steady_clock;
constexpr auto poll_interval = std::chrono::milliseconds{100};

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

bool is_error_finish(msg::FinishReason f) {
  return f == msg::FinishReason::error || f == msg::FinishReason::timeout ||
         f == msg::FinishReason::cancelled;
}

/// The error an error-finished event stands for.
error event_error(const wire::token_event& ev) {
  if (ev.err.code != errc::none)
    return ev.err;
  if (ev.finish == msg::FinishReason::timeout)
    return make_error(errc::timeout, "the request passed its deadline");
  if (ev.finish == msg::FinishReason::cancelled)
    return make_error(errc::cancelled, "the request was cancelled");
  return make_error(errc::internal, "the request failed");
}

/// One request in flight: its stream, timings and the in-flight gauge.
struct flight {
  flight(front_door& f, std::shared_ptr<generation_stream> s, response_header h, int images)
    : fd(f), stream(std::move(s)), header(std::move(h)), n_images(images) {
    fd.metrics.request_started();
  }
  ~flight() {
    if (!done)
      stream->cancel();
    fd.metrics.request_ended();
    --fd.in_flight; // taken by handle_generate
  }
  flight(const flight&) = delete;
  flight& operator=(const flight&) = delete;

  /// The next event, recording TTFT / ITL; nullopt past the deadline.
  std::optional<wire::token_event> next() {
    while (clock_type::now() < give_up && !fd.stopping) {
      auto ev = stream->next(poll_interval);
      if (!ev)
        continue;
      const auto now = clock_type::now();
      if (ev->finish == msg::FinishReason::none) {
        if (n_tokens == 0) {
          ttft_seconds = seconds_between(arrived, now);
          fd.metrics.observe_ttft(ttft_seconds);
        } else
          fd.metrics.observe_inter_token(seconds_between(last_token, now));
        last_token = now;
        ++n_tokens;
      } else {
        done = true;
      }
      return ev;
    }
    return std::nullopt;
  }

  /// Counts a finished request in the metrics.
  void record_success(const wire::token_event& last) {
    fd.metrics.observe_e2e(seconds_between(arrived, clock_type::now()));
    request_tokens t;
    t.prompt = last.usage.prompt_tokens();
    t.generated = last.usage.completion_tokens();
    t.image = uint32_t(n_images) * uint32_t(fd.info.image_tokens);
    t.reused = last.usage.reused_tokens();
    t.recomputed = last.usage.recomputed_tokens();
    fd.metrics.request_succeeded(finish_reason_name(last.finish), t);
    const double compress_s = last.compression ? last.compression->compress_us() * 1e-6 : 0.0;
    fd.metrics.observe_ttft_without_compression(std::max(0.0, ttft_seconds - compress_s));
    if (const auto& c = last.compression)
      fd.metrics.observe_compression(
          compress_s, c->kv_bytes_before() - std::min(c->kv_bytes_before(), c->kv_bytes_after()));
  }

  /// The usage object of the answer (with the compression extension).
  usage_counts usage_of(const wire::token_event& ev) const {
    usage_counts u{ev.usage.prompt_tokens(), ev.usage.completion_tokens(), std::nullopt};
    if (const auto& c = ev.compression)
      u.compression =
          compression_report{c->tokens_after(), c->kv_bytes_before(), c->kv_bytes_after(),
                             c->compress_us() * 1e-6, ttft_seconds};
    return u;
  }

  front_door& fd;
  std::shared_ptr<generation_stream> stream;
  response_header header;
  int n_images = 0;
  clock_type::time_point arrived = clock_type::now();
  clock_type::time_point give_up;
  clock_type::time_point last_token;
  uint32_t n_tokens = 0;
  double ttft_seconds = 0.0;
  bool done = false;
  bool include_usage = false;
  bool role_sent = false;
  std::optional<wire::token_event> pending; ///< the first event, sent by the stream
};

api_error timeout_error() {
  return api_error_from(make_error(errc::timeout, "no answer within the request deadline"));
}

void fail(front_door& fd, httplib::Response& res, const api_error& e) {
  fd.metrics.request_failed(e.http_status);
  send_error(res, e);
}

void answer_whole(flight& f, wire::token_event first, httplib::Response& res) {
  std::string text;
  std::optional<wire::token_event> ev = std::move(first);
  while (ev && ev->finish == msg::FinishReason::none) {
    text += ev->text;
    ev = f.next();
  }
  if (!ev)
    return fail(f.fd, res, timeout_error());
  if (is_error_finish(ev->finish))
    return fail(f.fd, res, api_error_from(event_error(*ev)));
  f.record_success(*ev);
  res.set_content(full_response_json(f.header, text, ev->finish, f.usage_of(*ev)),
                  "application/json");
}

/// Writes the stream's next piece; false when the stream is over.
bool stream_step(flight& f, httplib::DataSink& sink) {
  auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
  auto finish_stream = [&](const std::string& last) {
    write(last);
    write(sse_done());
    sink.done();
    return true;
  };
  std::optional<wire::token_event> ev;
  if (f.pending) {
    ev = std::move(f.pending);
    f.pending.reset();
  } else {
    ev = f.next();
  }
  if (!ev) {
    f.fd.metrics.request_failed(504);
    return finish_stream(sse_event(timeout_error().to_json()));
  }
  if (is_error_finish(ev->finish)) {
    auto e = api_error_from(event_error(*ev));
    f.fd.metrics.request_failed(e.http_status);
    return finish_stream(sse_event(e.to_json()));
  }
  chunk_fields c;
  if (f.header.kind == api_kind::chat && !f.role_sent) {
    // OpenAI's first chunk: the role, with empty content.
    f.role_sent = true;
    chunk_fields role;
    role.role = true;
    role.content = std::string{};
    if (!write(sse_event(chunk_json(f.header, role))))
      return false;
  }
  if (ev->finish == msg::FinishReason::none) {
    c.content = ev->text;
    return write(sse_event(chunk_json(f.header, c)));
  }
  f.record_success(*ev);
  c.finish = ev->finish;
  if (f.header.kind == api_kind::chat)
    c.content.reset();
  else
    c.content = std::string{};
  std::string tail = sse_event(chunk_json(f.header, c));
  if (f.include_usage) {
    chunk_fields u;
    u.usage = f.usage_of(*ev);
    tail += sse_event(chunk_json(f.header, u));
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
  int n_images = 0;
  std::string model;
  if (kind == api_kind::chat) {
    auto parsed = parse_chat_request(req.body, fd.options.limits);
    if (!parsed)
      return fail(fd, res, parsed.error);
    include_usage = parsed.value->include_usage;
    n_images = parsed.value->image_count();
    model = parsed.value->model;
    built = to_generate_request(*parsed.value, fd.info, fd.options.admission);
  } else {
    auto parsed = parse_completion_request(req.body, fd.options.limits);
    if (!parsed)
      return fail(fd, res, parsed.error);
    include_usage = parsed.value->include_usage;
    model = parsed.value->model;
    built = to_generate_request(*parsed.value, fd.info);
  }
  if (!model.empty() && model != fd.info.model)
    return fail(fd, res,
                api_error{404, "not_found_error",
                          "the model '" + model + "' does not exist; this server serves '" +
                              fd.info.model + "' (see /v1/models)",
                          "model", "model_not_found"});
  if (!built)
    return fail(fd, res, built.error);
  auto& request = *built.value;
  request.tenant = *tenant;
  request.model = fd.info.model;
  const auto timeout = fd.options.request_timeout;
  request.deadline_unix_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 (std::chrono::system_clock::now() + timeout).time_since_epoch())
                                 .count();

  response_header header{kind, make_response_id(kind == api_kind::chat ? "chatcmpl-" : "cmpl-"),
                         fd.info.model,
                         std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count()};
  if (fd.in_flight.fetch_add(1) >= fd.options.max_concurrent) {
    --fd.in_flight;
    return fail(fd, res,
                api_error_from(make_error(errc::overloaded,
                                          "overloaded: ", std::to_string(fd.options.max_concurrent),
                                          " requests in flight; retry later")));
  }
  auto f = std::make_shared<flight>(fd, fd.service.submit(request), std::move(header), n_images);
  f->give_up = f->arrived + timeout + fd.options.deadline_grace;
  f->include_usage = include_usage;

  auto first = f->next();
  if (!first)
    return fail(fd, res, timeout_error());
  if (is_error_finish(first->finish))
    return fail(fd, res, api_error_from(event_error(*first)));
  if (!request.stream)
    return answer_whole(*f, std::move(*first), res);

  f->pending = std::move(first);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [f](size_t, httplib::DataSink& sink) {
        if (f->fd.stopping || !stream_step(*f, sink)) {
          f->stream->cancel(); // the client went away (or we are stopping)
          return false;
        }
        return true;
      },
      [f](bool success) {
        if (!success || !f->done)
          f->stream->cancel();
      });
}

} // namespace mosaic::server
