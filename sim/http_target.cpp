#include "sim/http_target.hpp"

#include <charconv>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "sim/procedural_image.hpp"

namespace mosaic::sim {

namespace {

using json = nlohmann::json;

httplib::Headers auth_headers(const front_door_session& s) {
  if (s.api_key.empty())
    return {};
  return {{"Authorization", "Bearer " + s.api_key}};
}

std::unique_ptr<httplib::Client> make_client(const front_door_session& s,
                                             std::chrono::seconds read_timeout) {
  auto cli = std::make_unique<httplib::Client>(s.endpoint.host, s.endpoint.port);
  cli->set_connection_timeout(std::chrono::duration_cast<std::chrono::seconds>(s.connect_timeout));
  cli->set_read_timeout(read_timeout);
  cli->set_write_timeout(std::chrono::seconds{30});
  return cli;
}

/// The server's error message from an OpenAI error body, else the body.
std::string error_message(int status, const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  std::string msg = body.substr(0, 300);
  if (j.is_object() && j.contains("error") && j["error"].is_object() &&
      j["error"].contains("message") && j["error"]["message"].is_string())
    msg = j["error"]["message"].get<std::string>();
  return "HTTP " + std::to_string(status) + ": " + msg;
}

error transport_error(const front_door_session& s, httplib::Error e, std::string_view what) {
  return make_error(
      errc::unavailable, what, " at ", s.endpoint.url(), " failed: ", httplib::to_string(e),
      e == httplib::Error::Connection ? " (is the server running there? check the host and port)"
                                      : "");
}

/// The URL a request names image `idx` by; "" when it is not available.
std::string image_url(const front_door_session& s, int idx) {
  const auto i = size_t(idx);
  if (s.data_urls)
    return i < s.image_urls.size() ? s.image_urls[i] : std::string{};
  return i < s.image_ids.size() && !s.image_ids[i].empty() ? "mosaic://library/" + s.image_ids[i]
                                                           : std::string{};
}

/// The request body; null when an image of `req` is not available.
json chat_body(const front_door_session& s, const sim_request& req, const std::string& policy,
               int max_tokens, uint64_t seed, const std::string& cache_salt) {
  json content = json::array();
  for (const auto& p : req.pieces) {
    if (p.is_image) {
      auto url = image_url(s, p.image);
      if (url.empty())
        return nullptr;
      content.push_back({{"type", "image_url"}, {"image_url", {{"url", std::move(url)}}}});
    } else if (!p.text.empty())
      content.push_back({{"type", "text"}, {"text", p.text}});
  }
  json body = {{"model", s.model},
               {"messages", json::array({{{"role", "user"}, {"content", content}}})},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}},
               {"max_tokens", max_tokens},
               {"temperature", 0},
               {"seed", seed}};
  if (!policy.empty() && s.is_mosaic())
    body["mosaic"] = {{"policy", policy}};
  if (!cache_salt.empty())
    body["cache_salt"] = cache_salt;
  // vLLM renders a chat template without BOS unless asked; Mosaic always
  // starts the prompt with BOS: this makes their prompt ids the same.
  if (s.server == "vllm")
    body["add_special_tokens"] = true;
  return body;
}

} // namespace

result<http_endpoint> parse_http_url(std::string_view url) {
  constexpr std::string_view scheme = "http://";
  if (url.substr(0, scheme.size()) != scheme)
    return make_error(errc::invalid_argument, "'", url, "' is not an http:// URL");
  auto rest = url.substr(scheme.size());
  if (!rest.empty() && rest.back() == '/')
    rest.remove_suffix(1);
  const auto colon = rest.rfind(':');
  if (rest.find('/') != std::string_view::npos)
    return make_error(errc::invalid_argument, "'", url,
                      "': give the front door's root as http://HOST:PORT, without a path");
  http_endpoint e;
  e.host = std::string{rest.substr(0, colon)};
  if (colon != std::string_view::npos) {
    const auto port = rest.substr(colon + 1);
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), e.port);
    if (ec != std::errc{} || end != port.data() + port.size() || e.port <= 0 || e.port > 65535)
      return make_error(errc::invalid_argument, "'", url, "': the port '", port,
                        "' is not a number in 1..65535");
  }
  if (e.host.empty())
    return make_error(errc::invalid_argument, "'", url, "' names no host");
  return e;
}

result<front_door_session> connect_front_door(const http_endpoint& endpoint, std::string api_key,
                                              std::chrono::seconds connect_timeout) {
  front_door_session s;
  s.endpoint = endpoint;
  s.api_key = std::move(api_key);
  s.connect_timeout = connect_timeout;
  auto cli = make_client(s, connect_timeout * 3);
  auto res = cli->Get("/v1/models", auth_headers(s));
  if (!res)
    return transport_error(s, res.error(), "GET /v1/models");
  if (res->status != 200)
    return make_error(errc::unavailable, "GET /v1/models at ", endpoint.url(), ": ",
                      error_message(res->status, res->body));
  auto j = json::parse(res->body, nullptr, false);
  if (!j.is_object() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
      !j["data"][0].is_object() || !j["data"][0].contains("id") || !j["data"][0]["id"].is_string())
    return make_error(errc::unavailable, endpoint.url(),
                      " answered GET /v1/models without a model; is it an OpenAI-compatible "
                      "server?");
  const auto& m = j["data"][0];
  s.model = m["id"].get<std::string>();
  s.server = m.contains("owned_by") && m["owned_by"].is_string() &&
                     !m["owned_by"].get<std::string>().empty()
                 ? m["owned_by"].get<std::string>().substr(0, 64)
                 : "openai-compatible";
  return s;
}

std::string base64(std::span<const uint8_t> bytes) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = uint32_t(bytes[i]) << 16 | uint32_t(bytes[i + 1]) << 8 | bytes[i + 2];
    for (int shift : {18, 12, 6, 0})
      out += alphabet[(v >> shift) & 63];
  }
  if (const size_t rest = bytes.size() - i; rest > 0) {
    const uint32_t v = uint32_t(bytes[i]) << 16 | (rest == 2 ? uint32_t(bytes[i + 1]) << 8 : 0u);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += rest == 2 ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

result<int> upload_images(front_door_session& s, const workload& w) {
  if (!s.is_mosaic() && !s.data_urls)
    return make_error(errc::invalid_argument, s.endpoint.url(), " is served by ", s.server,
                      ", not Mosaic: it takes images as data URLs only");
  s.image_ids.resize(size_t(w.spec.image_pool));
  s.image_tokens.resize(size_t(w.spec.image_pool));
  s.image_urls.resize(size_t(w.spec.image_pool));
  auto cli = make_client(s, std::chrono::seconds{120});
  int uploaded = 0;
  for (int idx : w.used_images()) {
    const bool have_url = !s.data_urls || !s.image_urls[size_t(idx)].empty();
    const bool have_id = !s.is_mosaic() || !s.image_ids[size_t(idx)].empty();
    if (have_url && have_id)
      continue;
    const auto png = procedural_png(w.seed, idx, w.spec.image_size);
    if (!have_url)
      s.image_urls[size_t(idx)] = "data:image/png;base64," + base64(png);
    if (have_id)
      continue;
    auto res = cli->Post("/v1/mosaic/images", auth_headers(s),
                         reinterpret_cast<const char*>(png.data()), png.size(), "image/png");
    if (!res)
      return transport_error(s, res.error(), "uploading image " + std::to_string(idx));
    if (res->status != 200)
      return make_error(errc::unavailable, "uploading image ", std::to_string(idx), " to ",
                        s.endpoint.url(), ": ", error_message(res->status, res->body));
    auto j = json::parse(res->body, nullptr, false);
    if (!j.is_object() || !j.contains("id") || !j["id"].is_string() || !j.contains("n_tokens") ||
        !j["n_tokens"].is_number_integer())
      return make_error(errc::unavailable, "uploading image ", std::to_string(idx),
                        ": unexpected answer ", res->body.substr(0, 200));
    s.image_ids[size_t(idx)] = j["id"].get<std::string>();
    s.image_tokens[size_t(idx)] = j["n_tokens"].get<int>();
    ++uploaded;
  }
  return uploaded;
}

status warm_images(const front_door_session& s, const workload& w, const std::string& cache_salt) {
  auto cli = make_client(s, std::chrono::seconds{120});
  for (int idx : w.used_images()) {
    sim_request r;
    r.pieces.push_back({true, {}, idx});
    r.pieces.push_back({false, "Describe the image.", -1});
    auto body = chat_body(s, r, "full_reuse", 1, 0, cache_salt);
    if (body.is_null())
      return make_error(errc::invalid_argument, "image ", std::to_string(idx),
                        " was not uploaded; call upload_images first");
    body["stream"] = false;
    body.erase("stream_options");
    auto res = cli->Post("/v1/chat/completions", auth_headers(s), body.dump(), "application/json");
    if (!res)
      return transport_error(s, res.error(), "warming image " + std::to_string(idx));
    if (res->status != 200)
      return make_error(errc::unavailable, "warming image ", std::to_string(idx), ": ",
                        error_message(res->status, res->body));
  }
  return {};
}

int32_t token_piece_id(std::string_view piece) {
  uint32_t h = 2166136261u;
  for (unsigned char c : piece) {
    h ^= c;
    h *= 16777619u;
  }
  return int32_t(h & 0x7fffffffu);
}

std::vector<std::string> take_sse_payloads(std::string& buffer) {
  std::vector<std::string> out;
  size_t pos = 0;
  for (;;) {
    const auto end = buffer.find("\n\n", pos);
    if (end == std::string::npos)
      break;
    // An event may have several lines; its data lines are joined by '\n'.
    std::string data;
    bool has_data = false;
    size_t line = pos;
    while (line < end) {
      auto nl = buffer.find('\n', line);
      if (nl == std::string::npos || nl > end)
        nl = end;
      std::string_view l{buffer.data() + line, nl - line};
      if (!l.empty() && l.back() == '\r')
        l.remove_suffix(1);
      if (l.substr(0, 5) == "data:") {
        l.remove_prefix(5);
        if (!l.empty() && l.front() == ' ')
          l.remove_prefix(1);
        if (has_data)
          data += '\n';
        data += l;
        has_data = true;
      }
      line = nl + 1;
    }
    if (has_data)
      out.push_back(std::move(data));
    pos = end + 2;
  }
  buffer.erase(0, pos);
  return out;
}

struct http_target::flight {
  std::mutex mutex;
  httplib::Client* client = nullptr; ///< while the request runs
  bool cancelled = false;
  void cancel() {
    std::lock_guard lock{mutex};
    cancelled = true;
    if (client != nullptr)
      client->stop();
  }
};

http_target::http_target(const front_door_session& session, http_target_options options)
  : session_(&session), options_(std::move(options)) {}

http_target::~http_target() {
  drain(std::chrono::milliseconds{0});
}

void http_target::submit(const sim_request& req, on_token token, on_done done) {
  auto f = std::make_shared<flight>();
  int image_tokens = 0;
  for (const auto& p : req.pieces)
    if (p.is_image && size_t(p.image) < session_->image_tokens.size())
      image_tokens += session_->image_tokens[size_t(p.image)];
  std::string body;
  if (auto j = chat_body(*session_, req, options_.policy, req.max_tokens, options_.seed,
                         options_.cache_salt);
      !j.is_null())
    body = j.dump();
  std::lock_guard lock{mutex_};
  flights_.push_back(f);
  threads_.emplace_back([this, f, body = std::move(body), image_tokens, token = std::move(token),
                         done = std::move(done)] {
    request_outcome out;
    out.image_tokens = image_tokens;
    if (body.empty()) {
      out.error = "an image of the request was not uploaded";
      done(out, clock::now());
      return;
    }
    auto cli = make_client(*session_, options_.request_timeout);
    {
      std::lock_guard l{f->mutex};
      if (f->cancelled) {
        out.error = "cancelled before it was sent";
        done(out, clock::now());
        return;
      }
      f->client = cli.get();
    }
    int status = 0;
    std::string buffer, error_body, stream_error;
    bool finished = false;
    httplib::Request hr;
    hr.method = "POST";
    hr.path = "/v1/chat/completions";
    hr.headers = auth_headers(*session_);
    hr.headers.emplace("Accept", "text/event-stream");
    hr.set_header("Content-Type", "application/json");
    hr.body = body;
    hr.response_handler = [&](const httplib::Response& r) {
      status = r.status;
      return true;
    };
    hr.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      const auto at = clock::now();
      if (status != 200) {
        error_body.append(data, n);
        return error_body.size() < (1u << 20);
      }
      buffer.append(data, n);
      for (auto& payload : take_sse_payloads(buffer)) {
        if (payload == "[DONE]") {
          finished = true;
          continue;
        }
        auto j = json::parse(payload, nullptr, false);
        if (!j.is_object()) {
          stream_error = "unparsable event: " + payload.substr(0, 200);
          return false;
        }
        if (j.contains("error")) {
          stream_error = error_message(status, payload);
          continue;
        }
        if (j.contains("usage") && j["usage"].is_object()) {
          const auto& u = j["usage"];
          if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer())
            out.prompt_tokens = u["prompt_tokens"].get<int>();
        }
        if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty())
          continue;
        const auto& delta = j["choices"][0]["delta"];
        // The first chunk carries the role and empty content: not a token.
        if (!delta.is_object() || delta.contains("role") || !delta.contains("content") ||
            !delta["content"].is_string())
          continue;
        const auto piece = delta["content"].get<std::string>();
        const int32_t id = token_piece_id(piece);
        out.tokens.push_back(id);
        token(id, at);
      }
      return true;
    };
    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    const bool sent = cli->send(hr, res, err);
    {
      std::lock_guard l{f->mutex};
      f->client = nullptr;
      if (f->cancelled && !finished)
        stream_error = "cancelled: no end by the drain timeout";
    }
    if (!stream_error.empty())
      out.error = stream_error;
    else if (status != 0 && status != 200)
      out.error = error_message(status, error_body);
    else if (!sent)
      out.error = transport_error(*session_, err, "POST /v1/chat/completions").message;
    else if (!finished)
      out.error = "the stream ended without [DONE]";
    out.ok = out.error.empty();
    done(out, clock::now());
  });
}

void http_target::drain(std::chrono::milliseconds timeout) {
  std::vector<std::thread> threads;
  std::vector<std::shared_ptr<flight>> flights;
  {
    std::lock_guard lock{mutex_};
    threads.swap(threads_);
    flights.swap(flights_);
  }
  // Requests end on their own (each has the request timeout); past the
  // drain timeout the rest are cut off.
  std::atomic<bool> joined{false};
  std::thread watchdog{[&] {
    const auto until = clock::now() + timeout;
    while (!joined.load() && clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    if (!joined.load())
      for (auto& f : flights)
        f->cancel();
  }};
  for (auto& t : threads)
    t.join();
  joined = true;
  watchdog.join();
}

std::string http_target::describe() const {
  return session_->server + " at " + session_->endpoint.url() + " (" + session_->model + ")";
}

} // namespace mosaic::sim
