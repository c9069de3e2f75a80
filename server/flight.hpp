#pragma once

// Internal to server/: one generation request between its admission at
// the front door and its answer, shared by the HTTP handlers and the
// ZeroMQ API so that both apply the same admission rules and record the
// same metrics.
//
//   auto f = start_flight(fd, std::move(request), {.model = asked, .tenant = who});
//   if (!f) reply(record_failure(fd, f.error));
//   while (auto ev = (*f.value)->poll(100ms)) ...   // TTFT / ITL recorded here

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "server/front_door.hpp"

namespace mosaic::server {

using flight_clock = std::chrono::steady_clock;

/// True for the finishes that are errors (error, timeout, cancelled).
bool is_error_finish(msg::FinishReason f);
/// The error an error-finished event stands for.
error event_error(const wire::token_event& ev);
/// 504: no answer within the request deadline.
api_error timeout_error();
/// 503 for requests that arrive while the server drains, or still run when it stops.
api_error shutting_down_error();
/// The answer's usage object; with the compression extension (whose TTFT
/// is `ttft_seconds`) when the request's KV was compressed.
usage_counts usage_of(const wire::token_event& ev, double ttft_seconds);

/// A request in flight: its stream, its timings and the in-flight count.
class flight {
public:
  flight(front_door& fd, std::shared_ptr<generation_stream> stream, int n_images);
  /// Cancels the stream unless it ended; leaves the in-flight count.
  ~flight();
  flight(const flight&) = delete;
  flight& operator=(const flight&) = delete;

  /// The next event within `wait`, recording TTFT / ITL; nullopt when
  /// none came (see expired()).
  std::optional<wire::token_event> poll(std::chrono::milliseconds wait);
  /// Past the deadline (plus grace) or the front door is stopping.
  bool expired() const;
  /// Counts a request that ended with "stop" or "length".
  void record_success(const wire::token_event& last);
  /// Counts a request that failed after it began (an error event, the
  /// client left: 499, the server stopped: 503) with the tokens it was sent.
  void record_error(int http_status);
  void cancel() { stream_->cancel(); }
  bool done() const { return done_; }
  front_door& door() { return fd_; }
  /// Arrival → first token (0 before it).
  double ttft_seconds() const { return ttft_seconds_; }

private:
  front_door& fd_;
  std::shared_ptr<generation_stream> stream_;
  int n_images_ = 0;
  flight_clock::time_point arrived_ = flight_clock::now();
  flight_clock::time_point give_up_;
  flight_clock::time_point last_token_;
  uint32_t n_tokens_ = 0;
  double ttft_seconds_ = 0.0;
  bool done_ = false;
};

/// What the caller knows of a request beyond the cluster request itself.
struct flight_request {
  std::string model;  ///< the model the client named ("" : the served one)
  std::string tenant; ///< authenticated
  int n_images = 0;
};

/// Admits `request` at the front door: checks the model name, stamps the
/// tenant, the served model and the deadline, applies `max_concurrent`
/// (503) and submits it to the cluster. The error is not recorded yet
/// (record_failure).
parse_result<std::shared_ptr<flight>> start_flight(front_door& fd, wire::generate_request request,
                                                   const flight_request& who);

/// Counts a request answered with `e` in the metrics and returns it.
const api_error& record_failure(front_door& fd, const api_error& e);

} // namespace mosaic::server
