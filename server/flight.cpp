#include "server/flight.hpp"

#include <algorithm>

namespace mosaic::server {

namespace {

double seconds_between(flight_clock::time_point a, flight_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

} // namespace

bool is_error_finish(msg::FinishReason f) {
  return f == msg::FinishReason::error || f == msg::FinishReason::timeout ||
         f == msg::FinishReason::cancelled;
}

error event_error(const wire::token_event& ev) {
  if (ev.err.code != errc::none)
    return ev.err;
  if (ev.finish == msg::FinishReason::timeout)
    return make_error(errc::timeout, "the request passed its deadline");
  if (ev.finish == msg::FinishReason::cancelled)
    return make_error(errc::cancelled, "the request was cancelled");
  return make_error(errc::internal, "the request failed");
}

api_error timeout_error() {
  return api_error_from(make_error(errc::timeout, "no answer within the request deadline"));
}

api_error shutting_down_error() {
  return api_error{503, "server_error", "the server is shutting down; retry on another replica", "",
                   "shutting_down"};
}

usage_counts usage_of(const wire::token_event& ev, double ttft_seconds) {
  usage_counts u{ev.usage.prompt_tokens(), ev.usage.completion_tokens(), ev.usage.cached_tokens(),
                 std::nullopt};
  if (const auto& c = ev.compression)
    u.compression = compression_report{c->tokens_after(), c->kv_bytes_before(), c->kv_bytes_after(),
                                       c->compress_us() * 1e-6, ttft_seconds};
  return u;
}

flight::flight(front_door& fd, std::shared_ptr<generation_stream> stream, int n_images)
  : fd_(fd), stream_(std::move(stream)), n_images_(n_images),
    give_up_(arrived_ + fd.options.request_timeout + fd.options.deadline_grace) {
  fd_.metrics.request_started();
}

flight::~flight() {
  if (!done_)
    stream_->cancel();
  fd_.metrics.request_ended();
  --fd_.in_flight; // taken by start_flight
}

bool flight::expired() const {
  return fd_.stopping || flight_clock::now() >= give_up_;
}

std::optional<wire::token_event> flight::poll(std::chrono::milliseconds wait) {
  if (done_)
    return std::nullopt;
  auto ev = stream_->next(wait);
  if (!ev)
    return std::nullopt;
  const auto now = flight_clock::now();
  if (ev->finish == msg::FinishReason::none) {
    if (n_tokens_ == 0) {
      ttft_seconds_ = seconds_between(arrived_, now);
      fd_.metrics.observe_ttft(ttft_seconds_);
    } else
      fd_.metrics.observe_inter_token(seconds_between(last_token_, now));
    last_token_ = now;
    ++n_tokens_;
  } else {
    done_ = true;
  }
  return ev;
}

void flight::record_success(const wire::token_event& last) {
  fd_.metrics.observe_e2e(seconds_between(arrived_, flight_clock::now()));
  fd_.metrics.observe_queue_time(double(last.queue_us) / 1e6);
  request_tokens t;
  t.prompt = last.usage.prompt_tokens();
  t.generated = last.usage.completion_tokens();
  // The cluster's count (each image's own); a peer that sends none: the
  // most the images can take.
  t.image = last.image_tokens > 0 || n_images_ == 0
                ? last.image_tokens
                : uint32_t(n_images_) * uint32_t(fd_.info.image_tokens);
  t.reused = last.usage.reused_tokens();
  t.recomputed = last.usage.recomputed_tokens();
  t.cached = last.usage.cached_tokens();
  fd_.metrics.request_succeeded(finish_reason_name(last.finish), t);
  const double compress_s = last.compression ? last.compression->compress_us() * 1e-6 : 0.0;
  fd_.metrics.observe_ttft_without_compression(std::max(0.0, ttft_seconds_ - compress_s));
  if (const auto& c = last.compression)
    fd_.metrics.observe_compression(
        compress_s, c->kv_bytes_before() - std::min(c->kv_bytes_before(), c->kv_bytes_after()));
}

void flight::record_error(int http_status) {
  fd_.metrics.request_failed(http_status, n_tokens_);
}

parse_result<std::shared_ptr<flight>> start_flight(front_door& fd, wire::generate_request request,
                                                   const flight_request& who) {
  using out = parse_result<std::shared_ptr<flight>>;
  if (!who.model.empty() && who.model != fd.info.model)
    return out{std::nullopt,
               api_error{404, "not_found_error",
                         "the model '" + who.model + "' does not exist; this server serves '" +
                             fd.info.model + "' (see /v1/models)",
                         "model", "model_not_found"}};
  if (fd.draining)
    return out{std::nullopt, shutting_down_error()};
  request.tenant = who.tenant;
  request.model = fd.info.model;
  request.deadline_unix_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          (std::chrono::system_clock::now() + fd.options.request_timeout).time_since_epoch())
          .count();
  if (fd.in_flight.fetch_add(1) >= fd.options.max_concurrent) {
    --fd.in_flight;
    return out{std::nullopt, api_error_from(make_error(errc::overloaded, "overloaded: ",
                                                       std::to_string(fd.options.max_concurrent),
                                                       " requests in flight; retry later"))};
  }
  return out{std::make_shared<flight>(fd, fd.service.submit(request), who.n_images), {}};
}

const api_error& record_failure(front_door& fd, const api_error& e) {
  fd.metrics.request_failed(e.http_status);
  return e;
}

} // namespace mosaic::server
