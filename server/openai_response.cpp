#include "server/openai_response.hpp"

#include <algorithm>
#include <cmath>
#include <random>

#include <nlohmann/json.hpp>

namespace mosaic::server {

namespace {

using json = nlohmann::json;

json usage_json(const usage_counts& u) {
  json j = {{"prompt_tokens", u.prompt_tokens},
            {"completion_tokens", u.completion_tokens},
            {"total_tokens", u.prompt_tokens + u.completion_tokens},
            {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
  if (const auto& c = u.compression) {
    const uint64_t saved = c->kv_bytes_before - std::min(c->kv_bytes_before, c->kv_bytes_after);
    j["mosaic"] = {{"kv_compression",
                    {{"prompt_tokens_kept", c->prompt_tokens_kept},
                     {"kv_bytes_before", c->kv_bytes_before},
                     {"kv_bytes_after", c->kv_bytes_after},
                     {"kv_bytes_saved", saved},
                     {"compress_seconds", c->compress_seconds},
                     {"ttft_seconds", c->ttft_seconds},
                     {"ttft_without_compression_seconds",
                      std::max(0.0, c->ttft_seconds - c->compress_seconds)}}}};
  }
  return j;
}

json finish_json(msg::FinishReason finish) {
  auto name = finish_reason_name(finish);
  return name.empty() ? json(nullptr) : json(std::string{name});
}

json envelope(const response_header& h, std::string_view object) {
  return {{"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model}};
}

/// -inf (a token the model rules out) as vLLM writes it: JSON has no infinity.
float finite_logprob(float v) {
  return std::isfinite(v) ? v : -9999.0f;
}

json bytes_of(std::string_view text) {
  json b = json::array();
  for (unsigned char c : text)
    b.push_back(int(c));
  return b;
}

/// Chat: {"content": [{token, token_id, logprob, bytes, top_logprobs}]}.
json chat_logprobs(const answer_tokens& t) {
  json content = json::array();
  for (const auto& lps : t.logprobs) {
    if (lps.empty())
      continue;
    auto entry = [](const wire::token_logprob& lp) {
      return json{{"token", lp.text},
                  {"token_id", lp.token_id},
                  {"logprob", finite_logprob(lp.logprob)},
                  {"bytes", bytes_of(lp.text)}};
    };
    json e = entry(lps[0]);
    json top = json::array();
    for (size_t i = 1; i < lps.size(); ++i)
      top.push_back(entry(lps[i]));
    e["top_logprobs"] = std::move(top);
    content.push_back(std::move(e));
  }
  return {{"content", std::move(content)}};
}

/// Completions: {tokens, token_logprobs, top_logprobs: [{text: logprob}],
/// text_offset}.
json completion_logprobs(const answer_tokens& t) {
  json tokens = json::array(), values = json::array(), tops = json::array(),
       offsets = json::array();
  size_t at = t.text_offset;
  for (size_t i = 0; i < t.logprobs.size(); ++i) {
    const auto& lps = t.logprobs[i];
    if (lps.empty())
      continue;
    tokens.push_back(lps[0].text);
    values.push_back(finite_logprob(lps[0].logprob));
    json top = json::object();
    for (size_t k = 1; k < lps.size(); ++k)
      if (!top.contains(lps[k].text)) // two ids with one text: the likelier
        top[lps[k].text] = finite_logprob(lps[k].logprob);
    tops.push_back(std::move(top));
    offsets.push_back(at);
    at += i < t.texts.size() ? t.texts[i].size() : 0;
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(values)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

/// Fills choice["logprobs"] / ["token_ids"] and j["prompt_token_ids"] as asked.
void add_detail(json& j, json& choice, bool chat, const answer_detail& d, const answer_tokens& t) {
  if (d.logprobs)
    choice["logprobs"] = chat ? chat_logprobs(t) : completion_logprobs(t);
  if (d.token_ids) {
    choice["token_ids"] = t.ids;
    if (!t.prompt_ids.empty())
      j["prompt_token_ids"] = t.prompt_ids;
  }
}

} // namespace

std::string_view finish_reason_name(msg::FinishReason finish) {
  switch (finish) {
  case msg::FinishReason::stop:
    return "stop";
  case msg::FinishReason::length:
    return "length";
  default:
    return "";
  }
}

void answer_tokens::add(const wire::token_event& ev) {
  ids.push_back(ev.token_id);
  texts.push_back(ev.text);
  logprobs.push_back(ev.logprobs);
  if (!ev.prompt_token_ids.empty())
    prompt_ids = ev.prompt_token_ids;
}

std::string full_response_json(const response_header& h, std::string_view text,
                               msg::FinishReason finish, const usage_counts& usage,
                               const answer_detail& detail, const answer_tokens& tokens) {
  const bool chat = h.kind == api_kind::chat;
  json j = envelope(h, chat ? "chat.completion" : "text_completion");
  json choice = {{"index", 0}, {"finish_reason", finish_json(finish)}};
  if (chat)
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  else {
    choice["text"] = text;
    choice["logprobs"] = nullptr;
  }
  add_detail(j, choice, chat, detail, tokens);
  j["choices"] = json::array({std::move(choice)});
  j["usage"] = usage_json(usage);
  // Invalid UTF-8 from a partial byte-fallback token must not throw.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string chunk_json(const response_header& h, const chunk_fields& f) {
  const bool chat = h.kind == api_kind::chat;
  json j = envelope(h, chat ? "chat.completion.chunk" : "text_completion");
  if (f.usage) {
    j["choices"] = json::array();
    j["usage"] = usage_json(*f.usage);
  } else {
    json choice = {{"index", 0}, {"finish_reason", finish_json(f.finish)}};
    if (chat) {
      json delta = json::object();
      if (f.role)
        delta["role"] = "assistant";
      if (f.content)
        delta["content"] = *f.content;
      choice["delta"] = std::move(delta);
    } else {
      choice["text"] = f.content.value_or("");
      choice["logprobs"] = nullptr;
    }
    if (f.tokens != nullptr)
      add_detail(j, choice, chat, f.detail, *f.tokens);
    j["choices"] = json::array({std::move(choice)});
  }
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string sse_event(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 8);
  out += "data: ";
  out += data;
  out += "\n\n";
  return out;
}

std::string sse_done() {
  return "data: [DONE]\n\n";
}

api_error api_error_from(const error& err) {
  api_error e;
  e.message = err.message.empty() ? to_string(err.code) : err.message;
  switch (err.code) {
  case errc::invalid_argument:
  case errc::unsupported:
  case errc::corrupt_data:
    e.http_status = 400;
    e.type = "invalid_request_error";
    break;
  case errc::not_found:
    e.http_status = 404;
    e.type = "not_found_error";
    break;
  case errc::permission_denied:
    e.http_status = 403;
    e.type = "permission_error";
    break;
  case errc::overloaded:
    e.http_status = 503;
    e.type = "overloaded_error";
    break;
  case errc::timeout:
    e.http_status = 504;
    e.type = "timeout_error";
    break;
  case errc::cancelled:
    e.http_status = 499;
    e.type = "cancelled";
    break;
  // The server's own storage: the client gets no paths or OS details.
  case errc::no_space:
    e.http_status = 507;
    e.type = "server_error";
    e.message = "the server's KV library is out of disk space; retry later";
    break;
  case errc::io_error:
    e.http_status = 500;
    e.type = "server_error";
    e.message = "the server could not read or write its storage; retry later";
    break;
  default:
    e.http_status = 500;
    e.type = "server_error";
    break;
  }
  e.code = to_string(err.code);
  return e;
}

std::string make_response_id(std::string_view prefix) {
  static constexpr char hex[] = "0123456789abcdef";
  std::random_device rd;
  std::mt19937_64 gen{(uint64_t(rd()) << 32) ^ rd()};
  std::string id{prefix};
  for (int i = 0; i < 24; ++i)
    id += hex[gen() & 15u];
  return id;
}

} // namespace mosaic::server
