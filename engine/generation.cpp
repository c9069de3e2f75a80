#include "engine/generation.hpp"

#include <algorithm>
#include <chrono>
#include <string>

namespace mosaic {

namespace {

using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

size_t count_markers(std::string_view text) {
  size_t n = 0;
  for (size_t at = text.find(image_marker); at != std::string_view::npos;
       at = text.find(image_marker, at + image_marker.size()))
    ++n;
  return n;
}

} // namespace

result<std::string> chat_prompt(const tokenizer& tok, std::string_view question, int n_images) {
  const size_t markers = count_markers(question);
  std::string user;
  if (markers == 0) {
    for (int i = 0; i < n_images; ++i)
      user.append(image_marker).append("\n");
    user.append(question);
  } else if (markers != static_cast<size_t>(n_images)) {
    return make_error(errc::invalid_argument, "the prompt has ", std::to_string(markers),
                      " <image> markers but ", std::to_string(n_images),
                      " images were given; give one image per marker, or no markers to put "
                      "every image first");
  } else {
    user.assign(question);
  }
  return tok.apply_chat_template({chat_message{"user", user}}, true);
}

result<prompt> build_prompt(const tokenizer& tok, std::string_view text,
                            std::span<const prompt_image> images) {
  const std::vector<int32_t> ids = tok.encode_prompt(text);
  prompt p;
  p.images.assign(images.begin(), images.end());
  prompt_part run;
  run.kind = segment_kind::text;
  int next_image = 0;
  for (int32_t id : ids) {
    if (id != tok.image_token_id()) {
      run.text_ids.push_back(id);
      continue;
    }
    if (next_image >= static_cast<int>(images.size()))
      return make_error(errc::invalid_argument, "the prompt has more <image> markers than the ",
                        std::to_string(images.size()), " images given");
    if (!run.text_ids.empty())
      p.parts.push_back(std::move(run));
    run = prompt_part{};
    prompt_part img;
    img.kind = segment_kind::image;
    img.image = next_image++;
    p.parts.push_back(std::move(img));
  }
  if (!run.text_ids.empty())
    p.parts.push_back(std::move(run));
  if (next_image != static_cast<int>(images.size()))
    return make_error(errc::invalid_argument, "the prompt has ", std::to_string(next_image),
                      " <image> markers but ", std::to_string(images.size()), " images were given");
  return p;
}

result<generation_result> generate(llava_engine& engine, const prompt& p, const policy_spec& policy,
                                   const sampling_params& sampling, int max_tokens,
                                   const generation_compression& compression,
                                   const prefix_scope* cache) {
  MOSAIC_TRY(sampling.validate());
  if (max_tokens < 1)
    return make_error(errc::invalid_argument, "max_tokens must be at least 1");
  generation_result out;
  sampler pick{sampling};

  // Tokens held back from the prefill, decoded over the compressed KV.
  std::vector<int32_t> held;
  prompt head = p;
  if (compression.spec.enabled() && compression.question_tokens > 0) {
    const int n = compression.question_tokens;
    if (head.parts.empty() || head.parts.back().kind != segment_kind::text ||
        static_cast<int>(head.parts.back().text_ids.size()) <= n)
      return make_error(errc::invalid_argument, "question_tokens ", std::to_string(n),
                        ": the prompt must end in more text tokens than that");
    auto& ids = head.parts.back().text_ids;
    held.assign(ids.end() - n, ids.end());
    ids.resize(ids.size() - static_cast<size_t>(n));
  }

  const auto t0 = clock_type::now();
  auto ran = engine.prefill_prompt(head, policy, cache);
  if (!ran)
    return std::move(ran).err();
  auto* pre = &ran->result;
  const link_plan* plan = &ran->plan;
  out.first_logits = std::move(pre->logits);
  out.stats = std::move(pre->stats);
  kv_sequence seq = std::move(pre->sequence);
  // Decode positions continue the prompt's, also when compression leaves
  // fewer rows than the prompt had tokens; under M-RoPE (Qwen2-VL) from
  // the largest position + 1, which an image makes smaller than the
  // token count (prefill_result::rope_delta).
  const int32_t rope_delta = pre->rope_delta;
  int32_t position = seq.length() + rope_delta;

  if (compression.spec.enabled()) {
    const auto tc = clock_type::now();
    result<compressed_kv> c =
        compression.spec.method == compression_method::learned
            ? (compression.learned
                   ? compress_kv_learned(engine.backend(), engine.pool(), seq, *plan,
                                         *compression.learned)
                   : result<compressed_kv>{make_error(errc::invalid_argument,
                                                      "compression \"learned\" needs the "
                                                      "model's learned compressor")})
            : compress_kv(engine.backend(), engine.decoder(), engine.pool(), seq, *plan,
                          compression.spec);
    if (!c)
      return std::move(c).err();
    out.compress_seconds = since(tc);
    out.compression = c->stats;
    position = c->next_position + rope_delta;
    seq = std::move(c->sequence);
  }
  for (int32_t id : held) {
    const decode_input in{&seq, id, position++};
    auto logits = engine.decode_step(std::span<const decode_input>{&in, 1});
    if (!logits)
      return std::move(logits).err();
    out.first_logits = std::move(*logits);
  }
  int32_t token = pick.sample(out.first_logits);
  out.ttft_seconds = since(t0);

  const auto t1 = clock_type::now();
  while (true) {
    if (token < 0)
      return make_error(errc::internal, "the model produced no finite logits");
    if (pick.is_stop(token)) {
      out.stopped = true;
      break;
    }
    out.tokens.push_back(token);
    if (static_cast<int>(out.tokens.size()) >= max_tokens)
      break;
    const decode_input in{&seq, token, position++};
    auto logits = engine.decode_step(std::span<const decode_input>{&in, 1});
    if (!logits)
      return std::move(logits).err();
    token = pick.sample(*logits);
  }
  out.decode_seconds = since(t1);
  return out;
}

agreement compare_generations(const generation_result& reference,
                              const generation_result& candidate) {
  agreement a;
  const int32_t ref_first = argmax(reference.first_logits);
  a.first_token_match = ref_first >= 0 && ref_first == argmax(candidate.first_logits);
  a.first_token_kl = kl_divergence(reference.first_logits, candidate.first_logits);
  // Sequences are compared with the stop token included: stopping early is
  // a difference too.
  auto with_stop = [](const generation_result& g) {
    std::vector<int32_t> t = g.tokens;
    if (g.stopped)
      t.push_back(-1);
    return t;
  };
  const auto r = with_stop(reference);
  const auto c = with_stop(candidate);
  const size_t n = std::max(r.size(), c.size());
  size_t same = 0;
  for (size_t i = 0; i < std::min(r.size(), c.size()); ++i)
    same += r[i] == c[i] ? 1 : 0;
  a.token_match = n == 0 ? 1.0 : static_cast<double>(same) / static_cast<double>(n);
  return a;
}

} // namespace mosaic
