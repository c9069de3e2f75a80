#pragma once

// Internal to server/: the state every HTTP handler shares, and the
// handler entry points (http_server.cpp routes to them).

#include <atomic>
#include <chrono>

#include <httplib.h>

#include "server/generation_service.hpp"
#include "server/http_server.hpp"
#include "server/metrics.hpp"
#include "server/openai_request.hpp"
#include "server/openai_response.hpp"

namespace mosaic::server {

struct front_door {
  http_options options;
  generation_service& service;
  service_info info;
  front_door_metrics metrics;
  std::atomic<bool> draining{false}; ///< SIGTERM: new requests get 503, running ones finish
  std::atomic<bool> stopping{false}; ///< running requests end now (past the drain)
  std::atomic<int> in_flight{0}; ///< generation requests being answered
};

/// Sends `err` as OpenAI error JSON with its status.
void send_error(httplib::Response& res, const api_error& err);
/// The caller's tenant, or nullopt after sending 401.
std::optional<std::string> authenticate(front_door& fd, const httplib::Request& req,
                                        httplib::Response& res);

/// POST /v1/chat/completions and /v1/completions.
void handle_generate(front_door& fd, const httplib::Request& req, httplib::Response& res,
                     api_kind kind);
/// POST /v1/mosaic/images and DELETE /v1/mosaic/images/{id}.
void handle_upload(front_door& fd, const httplib::Request& req, httplib::Response& res);
void handle_delete(front_door& fd, const httplib::Request& req, httplib::Response& res);

} // namespace mosaic::server
