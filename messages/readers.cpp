#include "messages/readers.hpp"

#include <string>
#include <variant>

#include "messages/error_convert.hpp"

namespace mosaic {

namespace {

std::string str(const flatbuffers::String* s) {
  return s == nullptr ? std::string{} : s->str();
}

error err_of(const msg::Error* e) {
  return e == nullptr ? error{} : to_error(*e);
}

} // namespace

wire::tensor_handle read_tensor_handle(const msg::TensorHandle* h) {
  wire::tensor_handle out;
  if (h == nullptr)
    return out;
  out.node = str(h->node());
  out.endpoint = str(h->endpoint());
  out.id = h->id();
  out.dtype = h->dtype();
  if (h->shape() != nullptr)
    out.shape.assign(h->shape()->begin(), h->shape()->end());
  return out;
}

wire::kv_handle read_kv_handle(const msg::KvHandle* h) {
  wire::kv_handle out;
  if (h == nullptr)
    return out;
  out.node = str(h->node());
  out.endpoint = str(h->endpoint());
  out.sequence = h->sequence();
  out.n_tokens = h->n_tokens();
  out.n_layers = h->n_layers();
  out.kv_dim = h->kv_dim();
  out.dtype = h->dtype();
  return out;
}

wire::sampling read_sampling(const msg::SamplingParams* s) {
  wire::sampling out;
  if (s == nullptr)
    return out;
  out.max_tokens = s->max_tokens();
  out.temperature = s->temperature();
  out.top_p = s->top_p();
  if (auto seed = s->seed(); seed.has_value())
    out.seed = *seed;
  if (s->stop() != nullptr)
    for (const auto* stop : *s->stop())
      out.stop.push_back(str(stop));
  out.top_k = s->top_k();
  out.min_p = s->min_p();
  out.repetition_penalty = s->repetition_penalty();
  out.presence_penalty = s->presence_penalty();
  out.frequency_penalty = s->frequency_penalty();
  if (s->stop_token_ids() != nullptr)
    out.stop_token_ids.assign(s->stop_token_ids()->begin(), s->stop_token_ids()->end());
  out.ignore_eos = s->ignore_eos();
  out.min_tokens = s->min_tokens();
  out.include_stop_str_in_output = s->include_stop_str_in_output();
  out.logprobs = s->logprobs();
  out.return_token_ids = s->return_token_ids();
  return out;
}

namespace {

result<wire::image_source> read_image_source(const msg::ImageSegment& image) {
  if (const auto* key = image.source_as_ImageKey())
    return wire::image_source{wire::image_key_segment{from_msg_key(*key->key())}};
  if (const auto* data = image.source_as_ImageData()) {
    wire::image_data_segment out;
    out.encoded.assign(data->encoded()->begin(), data->encoded()->end());
    out.mime = str(data->mime());
    return wire::image_source{std::move(out)};
  }
  return make_error(errc::invalid_argument, "image segment of unknown source kind ",
                    std::to_string(static_cast<int>(image.source_type())),
                    "; expected a library key or encoded image bytes");
}

} // namespace

result<wire::segment> read_segment(const msg::Segment& seg) {
  if (const auto* text = seg.body_as_TextSegment())
    return wire::segment{wire::text_segment{str(text->text())}};
  const auto* image = seg.body_as_ImageSegment();
  if (image == nullptr)
    return make_error(errc::invalid_argument, "prompt segment of unknown kind ",
                      std::to_string(static_cast<int>(seg.body_type())),
                      "; expected text or image (peer built with a newer schema?)");
  auto src = read_image_source(*image);
  if (!src)
    return std::move(src).err();
  return std::visit([](auto&& x) { return wire::segment{std::move(x)}; }, std::move(*src));
}

result<wire::encode_request> read_encode_request(const encode_request_msg& m) {
  const auto* r = m.root();
  if (r == nullptr || r->image() == nullptr)
    return make_error(errc::invalid_argument, "empty EncodeRequest message");
  wire::encode_request out;
  out.request_id = r->request_id();
  out.tenant = str(r->tenant());
  out.deadline_unix_ns = r->deadline_unix_ns();
  auto image = read_image_source(*r->image());
  if (!image)
    return std::move(image).err();
  out.image = std::move(*image);
  out.compile = r->compile();
  out.shared = r->shared();
  out.decoded = r->decoded();
  return out;
}

result<wire::generate_request> read_generate_request(const generate_request_msg& m) {
  const auto* r = m.root();
  if (r == nullptr)
    return make_error(errc::invalid_argument, "empty GenerateRequest message");
  wire::generate_request out;
  out.request_id = r->request_id();
  out.tenant = str(r->tenant());
  out.deadline_unix_ns = r->deadline_unix_ns();
  out.model = str(r->model());
  if (r->segments() != nullptr) {
    out.segments.reserve(r->segments()->size());
    for (const auto* seg : *r->segments()) {
      auto s = read_segment(*seg);
      if (!s)
        return std::move(s).err();
      out.segments.push_back(std::move(*s));
    }
  }
  out.sampling = read_sampling(r->sampling());
  out.stream = r->stream();
  out.reuse_policy = str(r->reuse_policy());
  out.admission_wait_us = r->admission_wait_us();
  out.kv_compression = str(r->kv_compression());
  out.cache_salt = str(r->cache_salt());
  return out;
}

std::vector<wire::token_logprob>
read_token_logprobs(const flatbuffers::Vector<flatbuffers::Offset<msg::TokenLogprob>>* v) {
  std::vector<wire::token_logprob> out;
  if (v == nullptr)
    return out;
  // The chosen token and at most max_top_logprobs alternatives: more is a
  // hostile peer's.
  const size_t keep = size_t(wire::max_top_logprobs) + 1;
  for (size_t i = 0; i < v->size() && i < keep; ++i)
    if (const auto* lp = v->Get(static_cast<flatbuffers::uoffset_t>(i)))
      out.push_back({lp->token_id(), lp->logprob(), str(lp->text())});
  return out;
}

wire::token_event read_token_event(const token_event_msg& m) {
  wire::token_event out;
  const auto* r = m.root();
  if (r == nullptr)
    return out;
  out.request_id = r->request_id();
  out.index = r->index();
  out.token_id = r->token_id();
  out.text = str(r->text());
  out.finish = r->finish();
  if (r->usage() != nullptr)
    out.usage = *r->usage();
  out.err = err_of(r->error());
  out.queue_us = r->queue_us();
  if (r->compression() != nullptr)
    out.compression = *r->compression();
  out.logprobs = read_token_logprobs(r->logprobs());
  if (r->prompt_token_ids() != nullptr)
    out.prompt_token_ids.assign(r->prompt_token_ids()->begin(), r->prompt_token_ids()->end());
  out.image_tokens = r->image_tokens();
  return out;
}

wire::decode_task read_decode_task(const msg::DecodeTask* t) {
  wire::decode_task out;
  if (t == nullptr)
    return out;
  out.request_id = t->request_id();
  out.tenant = str(t->tenant());
  out.deadline_unix_ns = t->deadline_unix_ns();
  out.kv = read_kv_handle(t->kv());
  out.first_token = t->first_token();
  out.prompt_tokens = t->prompt_tokens();
  out.sampling = read_sampling(t->sampling());
  out.stream = t->stream();
  out.queue_us = t->queue_us();
  out.position = t->position();
  if (t->compression() != nullptr)
    out.compression = *t->compression();
  out.reused_tokens = t->reused_tokens();
  out.recomputed_tokens = t->recomputed_tokens();
  out.cached_tokens = t->cached_tokens();
  out.prefix_cached_tokens = t->prefix_cached_tokens();
  if (t->prompt_ids() != nullptr)
    out.prompt_ids.assign(t->prompt_ids()->begin(), t->prompt_ids()->end());
  out.first_logprobs = read_token_logprobs(t->first_logprobs());
  out.image_tokens = t->image_tokens();
  return out;
}

wire::library_lookup_result read_library_lookup_result(const library_lookup_result_msg& m) {
  wire::library_lookup_result out;
  const auto* r = m.root();
  if (r == nullptr)
    return out;
  out.request_id = r->request_id();
  if (r->entries() != nullptr) {
    for (const auto* e : *r->entries()) {
      wire::lookup_entry entry;
      entry.key = from_msg_key(*e->key());
      entry.tier = e->tier();
      entry.entry_id = e->entry_id();
      entry.n_tokens = e->n_tokens();
      entry.bytes = e->bytes();
      entry.shared = e->shared();
      out.entries.push_back(entry);
    }
  }
  out.err = err_of(r->error());
  return out;
}

wire::prefill_done read_prefill_done(const prefill_done_msg& m) {
  wire::prefill_done out;
  const auto* r = m.root();
  if (r == nullptr)
    return out;
  out.request_id = r->request_id();
  out.kv = read_kv_handle(r->kv());
  out.first_token = r->first_token();
  out.prompt_tokens = r->prompt_tokens();
  out.recomputed_tokens = r->recomputed_tokens();
  out.reused_tokens = r->reused_tokens();
  if (r->timings() != nullptr)
    out.timings = *r->timings();
  out.err = err_of(r->error());
  return out;
}

} // namespace mosaic
