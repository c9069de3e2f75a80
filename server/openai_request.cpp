#include "server/openai_request.hpp"

#include <array>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "engine/compression_spec.hpp"
#include "messages/builders.hpp"
#include "server/json_parse.hpp"

namespace mosaic::server {

namespace {

using json = nlohmann::json;

template <class T>
parse_result<T> fail(api_error err) {
  return parse_result<T>{std::nullopt, std::move(err)};
}

// -- field readers: each returns an error naming the field, or nothing ------

std::optional<api_error> read_int(const json& obj, const char* key, int lo, int hi, int& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null())
    return std::nullopt;
  if (!it->is_number_integer())
    return invalid_request(key, std::string{"'"} + key + "' must be an integer");
  auto v = it->get<int64_t>();
  if (v < lo || v > hi)
    return invalid_request(key, std::string{"'"} + key + "' must be between " + std::to_string(lo) +
                                    " and " + std::to_string(hi) + ", got " + std::to_string(v));
  out = static_cast<int>(v);
  return std::nullopt;
}

constexpr double max_float = double(std::numeric_limits<float>::max());

std::optional<api_error> read_float(const json& obj, const char* key, double lo, double hi,
                                    float& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null())
    return std::nullopt;
  if (!it->is_number())
    return invalid_request(key, std::string{"'"} + key + "' must be a number");
  double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi)
    return invalid_request(key, std::string{"'"} + key + "' must be between " + std::to_string(lo) +
                                    " and " + std::to_string(hi));
  out = static_cast<float>(v);
  return std::nullopt;
}

std::optional<api_error> read_bool(const json& obj, const char* key, bool& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null())
    return std::nullopt;
  if (!it->is_boolean())
    return invalid_request(key, std::string{"'"} + key + "' must be true or false");
  out = it->get<bool>();
  return std::nullopt;
}

/// Fields accepted by both endpoints that change nothing we do not
/// support; anything else unknown is rejected like OpenAI's API does.
bool is_ignored_field(std::string_view key) {
  return key == "user" || key == "metadata" || key == "store" || key == "service_tier";
}

std::optional<api_error> read_common(const json& body, const request_limits& limits,
                                     sampling_params& s, bool& stream, bool& include_usage,
                                     mosaic_options& mosaic) {
  // Features that would change the answer and that Mosaic does not have:
  // refuse them rather than silently ignore them.
  if (auto it = body.find("n"); it != body.end() && !it->is_null() && *it != 1)
    return invalid_request("n", "'n' must be 1: Mosaic returns one choice per request");
  if (auto it = body.find("echo"); it != body.end() && !it->is_null() && *it != false)
    return invalid_request("echo", "'echo' is not supported");
  // Plain text is what Mosaic answers; structured output it cannot promise.
  if (auto it = body.find("response_format"); it != body.end() && !it->is_null()) {
    const auto type = it->is_object() ? it->find("type") : it->end();
    if (!it->is_object() || type == it->end() || !type->is_string())
      return invalid_request("response_format",
                             "'response_format' must be an object with a string 'type'");
    if (type->get<std::string>() != "text")
      return invalid_request("response_format",
                             "response_format type '" + type->get<std::string>() +
                                 "' is not supported; only {\"type\": \"text\"} (the default)");
  }

  // Types here; ranges in check_sampling (shared with the ZeroMQ API).
  constexpr int any_int = std::numeric_limits<int>::max();
  if (auto e = read_int(body, "max_tokens", -any_int, any_int, s.max_tokens))
    return e;
  if (auto e = read_int(body, "max_completion_tokens", -any_int, any_int, s.max_tokens))
    return e;
  if (auto e = read_float(body, "temperature", -max_float, max_float, s.temperature))
    return e;
  if (auto e = read_float(body, "top_p", -max_float, max_float, s.top_p))
    return e;
  if (auto it = body.find("seed"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer())
      return invalid_request("seed", "'seed' must be an integer");
    s.seed =
        it->is_number_unsigned() ? it->get<uint64_t>() : static_cast<uint64_t>(it->get<int64_t>());
  }
  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      s.stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const auto& x : *it) {
        if (!x.is_string())
          return invalid_request("stop", "'stop' must be a string or an array of strings");
        s.stop.push_back(x.get<std::string>());
      }
    } else {
      return invalid_request("stop", "'stop' must be a string or an array of strings");
    }
  }
  // vLLM's extras: benchmark clients send them to fix the output length.
  if (auto e = read_int(body, "top_k", -any_int, any_int, s.top_k))
    return e;
  if (auto e = read_int(body, "min_tokens", -any_int, any_int, s.min_tokens))
    return e;
  for (auto [key, out] :
       {std::pair{"min_p", &s.min_p}, std::pair{"repetition_penalty", &s.repetition_penalty},
        std::pair{"presence_penalty", &s.presence_penalty},
        std::pair{"frequency_penalty", &s.frequency_penalty}})
    if (auto e = read_float(body, key, -max_float, max_float, *out))
      return e;
  if (auto e = read_bool(body, "ignore_eos", s.ignore_eos))
    return e;
  if (auto e = read_bool(body, "include_stop_str_in_output", s.include_stop_str_in_output))
    return e;
  if (auto e = read_bool(body, "return_token_ids", s.return_token_ids))
    return e;
  if (auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
    if (!it->is_array())
      return invalid_request("stop_token_ids", "'stop_token_ids' must be an array of token ids");
    for (const auto& x : *it) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 ||
          x.get<int64_t>() > std::numeric_limits<int32_t>::max())
        return invalid_request("stop_token_ids", "'stop_token_ids' must hold token ids (>= 0)");
      s.stop_token_ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
    }
  }
  // Accepted with the only meaning Mosaic has: its detokenizer never
  // returns special tokens; the LLaVA-1.5 chat template takes no options.
  bool skip_special = true;
  if (auto e = read_bool(body, "skip_special_tokens", skip_special))
    return e;
  if (auto it = body.find("chat_template_kwargs");
      it != body.end() && !it->is_null() && !it->is_object())
    return invalid_request("chat_template_kwargs", "'chat_template_kwargs' must be an object");
  if (auto e = check_sampling(s, limits))
    return e;
  if (auto e = read_bool(body, "stream", stream))
    return e;
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object())
      return invalid_request("stream_options", "'stream_options' must be an object");
    if (!stream)
      return invalid_request("stream_options",
                             "'stream_options' is only allowed with 'stream': true");
    if (auto e = read_bool(*it, "include_usage", include_usage))
      return e;
  }
  if (auto it = body.find("cache_salt"); it != body.end() && !it->is_null()) {
    if (!it->is_string() || it->get_ref<const std::string&>().empty() ||
        it->get_ref<const std::string&>().size() > max_cache_salt_bytes)
      return invalid_request("cache_salt", "'cache_salt' must be a non-empty string of at most " +
                                               std::to_string(max_cache_salt_bytes) + " bytes");
    mosaic.cache_salt = it->get<std::string>();
  }
  if (auto it = body.find("mosaic"); it != body.end() && !it->is_null()) {
    if (!it->is_object())
      return invalid_request("mosaic",
                             "'mosaic' must be an object such as {\"policy\": \"mpic:32\"}");
    for (const auto& [key, value] : it->items()) {
      if (key != "policy" && key != "compression")
        return invalid_request("mosaic." + key,
                               "unknown field 'mosaic." + key + "'; known: policy, compression");
      if (key == "policy") {
        if (!value.is_string())
          return invalid_request("mosaic.policy",
                                 "'mosaic.policy' must be a string such as \"mpic:32\"");
        mosaic.policy = value.get<std::string>();
        continue;
      }
      if (!value.is_string())
        return invalid_request("mosaic.compression",
                               "'mosaic.compression' must be a string such as "
                               "\"snapkv:img=0.25,txt=0.5\" or \"none\"");
      auto spec = parse_compression(value.get<std::string>());
      if (!spec)
        return invalid_request("mosaic.compression", spec.err().message);
      mosaic.compression = value.get<std::string>();
    }
  }
  return std::nullopt;
}

constexpr std::string_view common_fields[] = {"model",
                                              "max_tokens",
                                              "max_completion_tokens",
                                              "temperature",
                                              "top_p",
                                              "seed",
                                              "stop",
                                              "stream",
                                              "stream_options",
                                              "n",
                                              "presence_penalty",
                                              "frequency_penalty",
                                              "logprobs",
                                              "top_logprobs",
                                              "return_token_ids",
                                              "echo",
                                              "response_format",
                                              "top_k",
                                              "min_p",
                                              "repetition_penalty",
                                              "stop_token_ids",
                                              "ignore_eos",
                                              "min_tokens",
                                              "include_stop_str_in_output",
                                              "skip_special_tokens",
                                              "chat_template_kwargs",
                                              "add_special_tokens",
                                              "cache_salt",
                                              "mosaic"};

/// Rejects fields that neither endpoint knows, like OpenAI's API does;
/// `own` is the endpoint's own content field ("messages" or "prompt").
std::optional<api_error> reject_unknown(const json& body, std::string_view own) {
  for (const auto& [key, value] : body.items()) {
    bool ok = is_ignored_field(key) || key == own;
    for (auto k : common_fields)
      ok = ok || key == k;
    if (!ok)
      return invalid_request(key, "unrecognized request argument supplied: " + key);
  }
  return std::nullopt;
}

std::optional<api_error> parse_body(std::string_view body, const request_limits& limits,
                                    json& out) {
  if (body.size() > limits.max_body_bytes)
    return api_error{413, "invalid_request_error",
                     "request body is " + std::to_string(body.size()) + " bytes; the limit is " +
                         std::to_string(limits.max_body_bytes),
                     "", "body_too_large"};
  out = parse_json(body);
  if (out.is_discarded())
    return invalid_request("", "the request body is not valid JSON");
  if (!out.is_object())
    return invalid_request("", "the request body must be a JSON object");
  auto model = out.find("model");
  if (model == out.end() || !model->is_string() || model->get<std::string>().empty())
    return invalid_request("model", "'model' is required and must be a non-empty string");
  return std::nullopt;
}

std::optional<api_error> parse_content(const json& content, const std::string& param,
                                       const request_limits& limits, int& images,
                                       std::vector<content_part>& out) {
  if (content.is_string()) {
    out.push_back({false, content.get<std::string>(), {}});
    return std::nullopt;
  }
  if (!content.is_array())
    return invalid_request(param, "'" + param + "' must be a string or an array of content parts");
  for (size_t i = 0; i < content.size(); ++i) {
    const auto& part = content[i];
    auto here = param + "[" + std::to_string(i) + "]";
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      return invalid_request(here, "each content part needs a string 'type'");
    auto type = part["type"].get<std::string>();
    if (type == "text") {
      if (!part.contains("text") || !part["text"].is_string())
        return invalid_request(here + ".text", "a text part needs a string 'text'");
      out.push_back({false, part["text"].get<std::string>(), {}});
    } else if (type == "image_url") {
      const json* url = nullptr;
      if (auto it = part.find("image_url"); it != part.end()) {
        if (it->is_string())
          url = &*it;
        else if (it->is_object() && it->contains("url") && (*it)["url"].is_string())
          url = &(*it)["url"];
      }
      if (url == nullptr)
        return invalid_request(here + ".image_url",
                               "an image_url part needs 'image_url': {'url': ...}");
      if (auto e = check_image_count(++images, limits, here))
        return e;
      auto img = parse_image_url(url->get<std::string>(), limits, here + ".image_url.url");
      if (!img)
        return img.error;
      out.push_back({true, {}, std::move(*img.value)});
    } else {
      return invalid_request(here + ".type", "unsupported content part type '" + type +
                                                 "'; use 'text' or 'image_url'");
    }
  }
  return std::nullopt;
}

} // namespace

api_error invalid_request(std::string param, std::string message) {
  return api_error{400, "invalid_request_error", std::move(message), std::move(param), ""};
}

std::string api_error::to_json() const {
  json err = {{"message", message},
              {"type", type},
              {"param", param.empty() ? json(nullptr) : json(param)},
              {"code", code.empty() ? json(nullptr) : json(code)}};
  return json{{"error", err}}.dump();
}

std::optional<api_error> check_sampling(const sampling_params& s, const request_limits& limits) {
  if (s.max_tokens < 1 || s.max_tokens > limits.max_tokens_cap)
    return invalid_request("max_tokens", "'max_tokens' must be between 1 and " +
                                             std::to_string(limits.max_tokens_cap) + ", got " +
                                             std::to_string(s.max_tokens));
  if (!std::isfinite(s.temperature) || s.temperature < 0.0f || s.temperature > 2.0f)
    return invalid_request("temperature", "'temperature' must be between 0 and 2");
  if (!std::isfinite(s.top_p) || s.top_p <= 0.0f || s.top_p > 1.0f)
    return invalid_request("top_p", "'top_p' must be greater than 0 and at most 1");
  if (static_cast<int>(s.stop.size()) > limits.max_stop_strings)
    return invalid_request("stop", "at most " + std::to_string(limits.max_stop_strings) +
                                       " stop strings are allowed");
  for (const auto& x : s.stop)
    if (x.empty() || x.size() > limits.max_stop_length)
      return invalid_request("stop", "stop strings must be 1 to " +
                                         std::to_string(limits.max_stop_length) + " bytes long");
  if (s.top_k < -1)
    return invalid_request("top_k", "'top_k' must be -1 or 0 (off) or a positive count");
  if (!std::isfinite(s.min_p) || s.min_p < 0.0f || s.min_p > 1.0f)
    return invalid_request("min_p", "'min_p' must be between 0 and 1");
  if (!std::isfinite(s.repetition_penalty) || s.repetition_penalty <= 0.0f ||
      s.repetition_penalty > 10.0f)
    return invalid_request("repetition_penalty",
                           "'repetition_penalty' must be greater than 0 and at most 10 (1: off)");
  if (!std::isfinite(s.presence_penalty) || s.presence_penalty < -2.0f || s.presence_penalty > 2.0f)
    return invalid_request("presence_penalty", "'presence_penalty' must be between -2 and 2");
  if (!std::isfinite(s.frequency_penalty) || s.frequency_penalty < -2.0f ||
      s.frequency_penalty > 2.0f)
    return invalid_request("frequency_penalty", "'frequency_penalty' must be between -2 and 2");
  if (s.stop_token_ids.size() > size_t(limits.max_stop_strings))
    return invalid_request("stop_token_ids", "at most " + std::to_string(limits.max_stop_strings) +
                                                 " stop token ids are allowed");
  if (s.min_tokens < 0 || s.min_tokens > s.max_tokens)
    return invalid_request("min_tokens", "'min_tokens' must be between 0 and max_tokens (" +
                                             std::to_string(s.max_tokens) + ")");
  return std::nullopt;
}

std::optional<api_error> check_image_count(int count, const request_limits& limits,
                                           std::string param) {
  if (count <= limits.max_images)
    return std::nullopt;
  return invalid_request(std::move(param), "too many images: at most " +
                                               std::to_string(limits.max_images) + " per request");
}

std::optional<api_error> check_image_bytes(size_t bytes, const request_limits& limits,
                                           std::string param) {
  if (bytes <= limits.max_image_bytes)
    return std::nullopt;
  return api_error{413, "invalid_request_error",
                   "image is larger than the limit of " + std::to_string(limits.max_image_bytes) +
                       " bytes",
                   std::move(param), "image_too_large"};
}

std::optional<api_error> check_turns(const chat_request& req, const request_limits& limits,
                                     size_t n_messages) {
  if (n_messages == 0)
    n_messages = req.messages.size();
  if (n_messages == 0)
    return invalid_request("messages", "'messages' must be a non-empty array");
  if (n_messages > size_t(limits.max_messages))
    return invalid_request("messages",
                           "at most " + std::to_string(limits.max_messages) + " messages");
  int images = 0;
  for (size_t i = 0; i < req.messages.size(); ++i) {
    const auto& turn = req.messages[i];
    const auto here = "messages[" + std::to_string(i) + "]";
    if (turn.role != "system" && turn.role != "user" && turn.role != "assistant")
      return invalid_request(here + ".role", "role must be system, developer, user or "
                                             "assistant, got '" +
                                                 turn.role + "'");
    for (size_t p = 0; p < turn.content.size(); ++p) {
      if (!turn.content[p].is_image)
        continue;
      if (turn.role != "user")
        return invalid_request(here + ".content", "images are only allowed in user messages");
      if (auto e =
              check_image_count(++images, limits, here + ".content[" + std::to_string(p) + "]"))
        return e;
    }
  }
  return std::nullopt;
}

int chat_request::image_count() const {
  int n = 0;
  for (const auto& m : messages)
    for (const auto& p : m.content)
      n += p.is_image ? 1 : 0;
  return n;
}

std::optional<std::vector<uint8_t>> decode_base64(std::string_view text) {
  static constexpr auto table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i)
      t[static_cast<uint8_t>(alphabet[i])] = static_cast<int8_t>(i);
    return t;
  }();
  if (text.size() % 4 != 0)
    return std::nullopt;
  std::vector<uint8_t> out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int j = 0; j < 4; ++j) {
      char c = text[i + j];
      if (c == '=' && i + 4 == text.size() && j >= 2) {
        v[j] = 0;
        ++pad;
        continue;
      }
      if (pad > 0)
        return std::nullopt; // data after padding
      v[j] = table[static_cast<uint8_t>(c)];
      if (v[j] < 0)
        return std::nullopt;
    }
    uint32_t bits =
        (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    out.push_back(static_cast<uint8_t>(bits >> 16));
    if (pad < 2)
      out.push_back(static_cast<uint8_t>(bits >> 8));
    if (pad < 1)
      out.push_back(static_cast<uint8_t>(bits));
  }
  return out;
}

parse_result<image_part> parse_image_url(std::string_view url, const request_limits& limits,
                                         std::string_view param) {
  std::string p{param};
  constexpr std::string_view library_prefix = "mosaic://library/";
  if (url.starts_with(library_prefix)) {
    auto id = url.substr(library_prefix.size());
    bool hex = id.size() == 64;
    for (char c : id)
      hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    if (!hex)
      return fail<image_part>(invalid_request(
          p, "a library reference must be mosaic://library/<64 lowercase hex digits>"));
    image_part img;
    img.library_id = std::string{id};
    return {std::move(img), {}};
  }
  if (!url.starts_with("data:"))
    return fail<image_part>(
        invalid_request(p, "images must be data URLs (data:image/png;base64,...) or "
                           "mosaic://library/<id> references; remote URLs are not "
                           "fetched"));
  auto comma = url.find(',');
  if (comma == std::string_view::npos)
    return fail<image_part>(invalid_request(p, "malformed data URL: no ',' before the payload"));
  auto meta = url.substr(5, comma - 5);
  std::string mime;
  if (meta == "image/png;base64")
    mime = "image/png";
  else if (meta == "image/jpeg;base64" || meta == "image/jpg;base64")
    mime = "image/jpeg";
  else
    return fail<image_part>(invalid_request(p, "unsupported data URL type '" + std::string{meta} +
                                                   "'; use image/png or image/jpeg with ;base64"));
  auto payload = url.substr(comma + 1);
  // base64: 4 characters carry 3 bytes (at most 2 of them padding).
  if (payload.size() / 4 * 3 > limits.max_image_bytes + 2)
    if (auto e = check_image_bytes(payload.size() / 4 * 3 - 2, limits, p))
      return fail<image_part>(std::move(*e));
  auto bytes = decode_base64(payload);
  if (!bytes)
    return fail<image_part>(invalid_request(p, "the image's base64 payload is malformed"));
  if (bytes->empty())
    return fail<image_part>(invalid_request(p, "the image is empty"));
  image_part img;
  img.mime = std::move(mime);
  img.bytes = std::move(*bytes);
  return {std::move(img), {}};
}

parse_result<chat_request> parse_chat_request(std::string_view body, const request_limits& limits) {
  json j;
  if (auto e = parse_body(body, limits, j))
    return fail<chat_request>(std::move(*e));
  if (auto e = reject_unknown(j, "messages"))
    return fail<chat_request>(std::move(*e));
  chat_request req;
  req.model = j["model"].get<std::string>();
  if (auto e = read_common(j, limits, req.sampling, req.stream, req.include_usage, req.mosaic))
    return fail<chat_request>(std::move(*e));
  // Chat: "logprobs": true, and "top_logprobs": N alternatives with it.
  bool logprobs = false;
  if (auto e = read_bool(j, "logprobs", logprobs))
    return fail<chat_request>(std::move(*e));
  int top = 0;
  if (auto e = read_int(j, "top_logprobs", 0, wire::max_top_logprobs, top))
    return fail<chat_request>(std::move(*e));
  if (auto it = j.find("top_logprobs"); it != j.end() && !it->is_null() && !logprobs)
    return fail<chat_request>(
        invalid_request("top_logprobs", "'top_logprobs' needs 'logprobs': true"));
  req.sampling.logprobs = logprobs ? top : -1;
  // The chat prompt starts with BOS either way: vLLM's default (false)
  // leaves it to the template, which is what Mosaic's does.
  bool add_special = false;
  if (auto e = read_bool(j, "add_special_tokens", add_special))
    return fail<chat_request>(std::move(*e));
  auto msgs = j.find("messages");
  if (msgs == j.end() || !msgs->is_array())
    return fail<chat_request>(invalid_request("messages", "'messages' must be a non-empty array"));
  if (static_cast<int>(msgs->size()) > limits.max_messages)
    return fail<chat_request>(*check_turns(req, limits, msgs->size()));
  int images = 0;
  for (size_t i = 0; i < msgs->size(); ++i) {
    const auto& m = (*msgs)[i];
    auto here = "messages[" + std::to_string(i) + "]";
    if (!m.is_object())
      return fail<chat_request>(invalid_request(here, "each message must be an object"));
    auto role = m.find("role");
    if (role == m.end() || !role->is_string())
      return fail<chat_request>(
          invalid_request(here + ".role", "each message needs a string 'role'"));
    chat_turn turn;
    turn.role = role->get<std::string>();
    // OpenAI's newer name for the system role.
    if (turn.role == "developer")
      turn.role = "system";
    auto content = m.find("content");
    // An assistant turn may have no content (tool-call history looks so).
    const bool empty_assistant =
        turn.role == "assistant" && content != m.end() && content->is_null();
    if (!empty_assistant && (content == m.end() || content->is_null()))
      return fail<chat_request>(invalid_request(here + ".content", "each message needs 'content'"));
    if (!empty_assistant)
      if (auto e = parse_content(*content, here + ".content", limits, images, turn.content))
        return fail<chat_request>(std::move(*e));
    req.messages.push_back(std::move(turn));
  }
  if (auto e = check_turns(req, limits))
    return fail<chat_request>(std::move(*e));
  return {std::move(req), {}};
}

parse_result<completion_request> parse_completion_request(std::string_view body,
                                                          const request_limits& limits) {
  json j;
  if (auto e = parse_body(body, limits, j))
    return fail<completion_request>(std::move(*e));
  if (auto e = reject_unknown(j, "prompt"))
    return fail<completion_request>(std::move(*e));
  completion_request req;
  req.model = j["model"].get<std::string>();
  if (auto e = read_common(j, limits, req.sampling, req.stream, req.include_usage, req.mosaic))
    return fail<completion_request>(std::move(*e));
  // Completions: "logprobs": N, the chosen token's and N alternatives
  // (false reads as absent).
  if (auto it = j.find("logprobs"); it != j.end() && !it->is_null() && *it != false) {
    int n = 0;
    if (auto e = read_int(j, "logprobs", 0, wire::max_top_logprobs, n))
      return fail<completion_request>(std::move(*e));
    req.sampling.logprobs = n;
  }
  if (auto it = j.find("top_logprobs"); it != j.end() && !it->is_null())
    return fail<completion_request>(invalid_request(
        "top_logprobs", "'top_logprobs' is a chat field; /v1/completions takes 'logprobs': N"));
  bool add_special = true;
  if (auto e = read_bool(j, "add_special_tokens", add_special))
    return fail<completion_request>(std::move(*e));
  if (!add_special)
    return fail<completion_request>(invalid_request(
        "add_special_tokens", "'add_special_tokens': false is not supported: the prompt always "
                              "starts with BOS, as the model was trained"));
  auto prompt = j.find("prompt");
  if (prompt == j.end() || !prompt->is_string())
    return fail<completion_request>(
        invalid_request("prompt", "'prompt' must be a string (batched prompts are not supported)"));
  req.prompt = prompt->get<std::string>();
  return {std::move(req), {}};
}

} // namespace mosaic::server
