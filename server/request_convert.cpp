#include "server/request_convert.hpp"

#include "engine/model/sha256.hpp"

#include "server/image_probe.hpp"

namespace mosaic::server {

namespace {

wire::sampling to_wire(const sampling_params& s) {
  wire::sampling w;
  w.max_tokens = static_cast<uint32_t>(s.max_tokens);
  w.temperature = s.temperature;
  w.top_p = s.top_p;
  w.seed = s.seed;
  w.stop = s.stop;
  w.top_k = s.top_k < 0 ? 0 : s.top_k;
  w.min_p = s.min_p;
  w.repetition_penalty = s.repetition_penalty;
  w.presence_penalty = s.presence_penalty;
  w.frequency_penalty = s.frequency_penalty;
  w.stop_token_ids = s.stop_token_ids;
  w.ignore_eos = s.ignore_eos;
  w.min_tokens = static_cast<uint32_t>(s.min_tokens);
  w.include_stop_str_in_output = s.include_stop_str_in_output;
  w.logprobs = s.logprobs;
  w.return_token_ids = s.return_token_ids;
  return w;
}

/// Checks the context: the answer and the images' tokens must fit; the
/// text's tokens are counted by the cluster, which refuses overlong prompts.
/// `image_tokens`: the images' tokens (each image's own where the model's
/// count depends on the size; a library reference at the most one takes).
std::optional<api_error> check_context(int max_tokens, int n_images, int64_t image_tokens,
                                       const service_info& info) {
  const int64_t need = int64_t(max_tokens) + image_tokens;
  if (need < info.context_length)
    return std::nullopt;
  return invalid_request("max_tokens", "max_tokens (" + std::to_string(max_tokens) + ") plus " +
                                           std::to_string(n_images) + " image(s) of " +
                                           std::to_string(image_tokens) +
                                           " tokens exceed the model's context of " +
                                           std::to_string(info.context_length) +
                                           " tokens; lower max_tokens or send fewer images");
}

void append_text(wire::generate_request& out, std::string_view text) {
  if (text.empty())
    return;
  if (!out.segments.empty())
    if (auto* t = std::get_if<wire::text_segment>(&out.segments.back())) {
      t->text += text;
      return;
    }
  out.segments.emplace_back(wire::text_segment{std::string{text}});
}

} // namespace

std::optional<library_key_bytes> key_from_hex(std::string_view hex) {
  auto key = from_hex(hex); // engine/model/sha256.hpp: digest == library_key_bytes
  if (!key)
    return std::nullopt;
  return *key;
}

std::string key_to_hex(const library_key_bytes& key) {
  return to_hex(key);
}

parse_result<wire::generate_request> to_generate_request(const chat_request& req,
                                                         const service_info& info,
                                                         const admission_limits& limits) {
  wire::generate_request out;
  out.model = req.model;
  out.sampling = to_wire(req.sampling);
  out.stream = req.stream;
  out.reuse_policy = req.mosaic.policy.value_or("");
  out.kv_compression = req.mosaic.compression.value_or("");
  out.cache_salt = req.mosaic.cache_salt;
  int64_t image_tokens = 0;
  // LLaVA: the last user turn is the one the cluster's template wraps;
  // earlier turns are written out in the same template around it. ChatML
  // (Qwen2-VL): the whole conversation, as Qwen2-VL's chat template renders
  // it (a default system message when the first is not one; each image's
  // <|vision_start|>...<|vision_end|> comes from the tokenizer).
  bool first_turn = true;
  for (size_t m = 0; m < req.messages.size(); ++m) {
    const auto& turn = req.messages[m];
    if (info.chatml) {
      if (m == 0 && turn.role != "system")
        append_text(out, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n");
      append_text(out, "<|im_start|>" + turn.role + "\n");
    } else if (turn.role == "assistant") {
      append_text(out, " ASSISTANT: ");
    } else if (turn.role == "user" && !first_turn) {
      append_text(out, " USER: ");
    }
    if (turn.role != "system")
      first_turn = false;
    for (size_t p = 0; p < turn.content.size(); ++p) {
      const auto& part = turn.content[p];
      if (!part.is_image) {
        append_text(out, part.text);
        continue;
      }
      const auto param =
          "messages[" + std::to_string(m) + "].content[" + std::to_string(p) + "].image_url";
      if (part.image.is_reference()) {
        auto key = key_from_hex(part.image.library_id);
        if (!key)
          return {std::nullopt, invalid_request(param, "a library reference must be "
                                                       "mosaic://library/<64 hex digits>")};
        out.segments.emplace_back(wire::image_key_segment{*key});
        image_tokens += info.image_tokens;
        continue;
      }
      auto header = probe_image(part.image.bytes);
      if (!header)
        return {std::nullopt, invalid_request(param, "undecodable image: " + header.err().message)};
      if (uint64_t(header->width) * header->height > limits.max_image_pixels)
        return {std::nullopt,
                invalid_request(
                    param, "the image has " + std::to_string(header->width) + "x" +
                               std::to_string(header->height) + " pixels, more than the " +
                               std::to_string(limits.max_image_pixels) + " allowed; downscale it")};
      if (info.image_tokens_for) {
        auto n = info.image_tokens_for(int(header->height), int(header->width));
        if (!n)
          return {std::nullopt, invalid_request(param, n.err().message)};
        image_tokens += *n;
      } else {
        image_tokens += info.image_tokens;
      }
      out.segments.emplace_back(wire::image_data_segment{part.image.bytes, header->mime});
    }
    if (info.chatml)
      append_text(out, "<|im_end|>\n");
    else if (turn.role == "system")
      append_text(out, "\n");
  }
  if (info.chatml)
    append_text(out, "<|im_start|>assistant\n");
  if (auto e = check_context(req.sampling.max_tokens, req.image_count(), image_tokens, info))
    return {std::nullopt, *e};
  return {std::move(out), {}};
}

parse_result<wire::generate_request> to_generate_request(const completion_request& req,
                                                         const service_info& info) {
  wire::generate_request out;
  out.model = req.model;
  out.sampling = to_wire(req.sampling);
  out.stream = req.stream;
  out.reuse_policy = req.mosaic.policy.value_or("");
  out.kv_compression = req.mosaic.compression.value_or("");
  out.cache_salt = req.mosaic.cache_salt;
  if (auto e = check_context(req.sampling.max_tokens, 0, 0, info))
    return {std::nullopt, *e};
  append_text(out, req.prompt);
  return {std::move(out), {}};
}

} // namespace mosaic::server
