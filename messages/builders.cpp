#include "messages/builders.hpp"

#include "messages/error_convert.hpp"

namespace mosaic {

namespace {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;
using flatbuffers::String;

/// Optional string fields are left out when empty (readers see "").
Offset<String> opt_string(FlatBufferBuilder& fbb, std::string_view s) {
  return s.empty() ? Offset<String>{} : fbb.CreateString(s.data(), s.size());
}

/// Optional error fields are left out on success.
Offset<msg::Error> opt_error(FlatBufferBuilder& fbb, const error& err, uint64_t request_id) {
  return err.code == errc::none ? Offset<msg::Error>{} : add_error(fbb, err, request_id);
}

/// Left out when empty (none asked for).
Offset<flatbuffers::Vector<Offset<msg::TokenLogprob>>>
add_logprobs(FlatBufferBuilder& fbb, const std::vector<wire::token_logprob>& lps) {
  if (lps.empty())
    return 0;
  std::vector<Offset<msg::TokenLogprob>> items;
  items.reserve(lps.size());
  for (const auto& lp : lps)
    items.push_back(
        msg::CreateTokenLogprob(fbb, lp.token_id, lp.logprob, fbb.CreateString(lp.text)));
  return fbb.CreateVector(items);
}

template <class... Fs>
struct overloaded : Fs... {
  using Fs::operator()...;
};
template <class... Fs>
overloaded(Fs...) -> overloaded<Fs...>;

} // namespace

// -- pieces ---------------------------------------------------------------------

Offset<msg::TensorHandle> add_tensor_handle(FlatBufferBuilder& fbb, const wire::tensor_handle& h) {
  auto node = opt_string(fbb, h.node);
  auto endpoint = opt_string(fbb, h.endpoint);
  auto shape = fbb.CreateVector(h.shape);
  return msg::CreateTensorHandle(fbb, node, endpoint, h.id, h.dtype, shape);
}

Offset<msg::KvHandle> add_kv_handle(FlatBufferBuilder& fbb, const wire::kv_handle& h) {
  auto node = opt_string(fbb, h.node);
  auto endpoint = opt_string(fbb, h.endpoint);
  return msg::CreateKvHandle(fbb, node, endpoint, h.sequence, h.n_tokens, h.n_layers, h.kv_dim,
                             h.dtype);
}

Offset<msg::SamplingParams> add_sampling(FlatBufferBuilder& fbb, const wire::sampling& s) {
  auto stop = s.stop.empty() ? 0 : fbb.CreateVectorOfStrings(s.stop);
  flatbuffers::Optional<uint64_t> seed = flatbuffers::nullopt;
  if (s.seed)
    seed = *s.seed;
  auto stop_ids = s.stop_token_ids.empty() ? 0 : fbb.CreateVector(s.stop_token_ids);
  return msg::CreateSamplingParams(fbb, s.max_tokens, s.temperature, s.top_p, seed, stop, s.top_k,
                                   s.min_p, s.repetition_penalty, s.presence_penalty,
                                   s.frequency_penalty, stop_ids, s.ignore_eos, s.min_tokens,
                                   s.include_stop_str_in_output, s.logprobs, s.return_token_ids);
}

Offset<msg::ImageSegment> add_image_segment(FlatBufferBuilder& fbb,
                                            const wire::image_source& image) {
  return std::visit(
      overloaded{[&](const wire::image_key_segment& img) {
                   auto key = to_msg_key(img.key);
                   auto body = msg::CreateImageKey(fbb, &key);
                   return msg::CreateImageSegment(fbb, msg::ImageSource::ImageKey, body.Union());
                 },
                 [&](const wire::image_data_segment& img) {
                   auto encoded = fbb.CreateVector(img.encoded);
                   auto mime = opt_string(fbb, img.mime);
                   auto body = msg::CreateImageData(fbb, encoded, mime);
                   return msg::CreateImageSegment(fbb, msg::ImageSource::ImageData, body.Union());
                 }},
      image);
}

Offset<msg::Segment> add_segment(FlatBufferBuilder& fbb, const wire::segment& seg) {
  return std::visit(
      overloaded{[&](const wire::text_segment& text) {
                   auto body = msg::CreateTextSegment(fbb, fbb.CreateString(text.text));
                   return msg::CreateSegment(fbb, msg::SegmentBody::TextSegment, body.Union());
                 },
                 [&](const wire::image_key_segment& img) {
                   auto body = add_image_segment(fbb, img);
                   return msg::CreateSegment(fbb, msg::SegmentBody::ImageSegment, body.Union());
                 },
                 [&](const wire::image_data_segment& img) {
                   auto body = add_image_segment(fbb, img);
                   return msg::CreateSegment(fbb, msg::SegmentBody::ImageSegment, body.Union());
                 }},
      seg);
}

// -- requests and token events --------------------------------------------------

generate_request_msg make_generate_request_msg(const wire::generate_request& req) {
  FlatBufferBuilder fbb{512};
  std::vector<Offset<msg::Segment>> segments;
  segments.reserve(req.segments.size());
  for (const auto& seg : req.segments)
    segments.push_back(add_segment(fbb, seg));
  auto segs = fbb.CreateVector(segments);
  auto tenant = opt_string(fbb, req.tenant);
  auto model = opt_string(fbb, req.model);
  auto sampling = add_sampling(fbb, req.sampling);
  auto policy = opt_string(fbb, req.reuse_policy);
  auto compression = opt_string(fbb, req.kv_compression);
  auto salt = opt_string(fbb, req.cache_salt);
  return generate_request_msg::finish(
      fbb, msg::CreateGenerateRequest(fbb, req.request_id, tenant, req.deadline_unix_ns, model,
                                      segs, sampling, req.stream, policy, req.admission_wait_us,
                                      compression, salt));
}

encode_request_msg make_encode_request_msg(const wire::encode_request& req) {
  FlatBufferBuilder fbb{256};
  auto tenant = opt_string(fbb, req.tenant);
  auto image = add_image_segment(fbb, req.image);
  return encode_request_msg::finish(
      fbb, msg::CreateEncodeRequest(fbb, req.request_id, tenant, req.deadline_unix_ns, image,
                                    req.compile, req.shared, req.decoded));
}

encode_result_msg make_encode_result_msg(const wire::encode_result& res) {
  FlatBufferBuilder fbb{256};
  auto key = to_msg_key(res.key);
  auto embeddings = add_tensor_handle(fbb, res.embeddings);
  auto err = opt_error(fbb, res.err, res.request_id);
  return encode_result_msg::finish(
      fbb, msg::CreateEncodeResult(fbb, res.request_id, &key, res.n_tokens, embeddings,
                                   res.encoder_cache_hit, res.compiled, res.encode_us, err));
}

token_event_msg make_token_event_msg(const wire::token_event& ev) {
  FlatBufferBuilder fbb{128};
  auto text = opt_string(fbb, ev.text);
  auto err = opt_error(fbb, ev.err, ev.request_id);
  auto logprobs = add_logprobs(fbb, ev.logprobs);
  auto prompt_ids = ev.prompt_token_ids.empty() ? 0 : fbb.CreateVector(ev.prompt_token_ids);
  return token_event_msg::finish(fbb,
                                 msg::CreateTokenEvent(fbb, ev.request_id, ev.index, ev.token_id,
                                                       text, ev.finish, &ev.usage, err, ev.queue_us,
                                                       ev.compression ? &*ev.compression : nullptr,
                                                       logprobs, prompt_ids, ev.image_tokens));
}

cancel_msg make_cancel_msg(uint64_t request_id, std::string_view reason) {
  FlatBufferBuilder fbb{64};
  auto text = opt_string(fbb, reason);
  return cancel_msg::finish(fbb, msg::CreateCancel(fbb, request_id, text));
}

// -- library --------------------------------------------------------------------

library_lookup_msg make_library_lookup_msg(const wire::library_lookup& req) {
  FlatBufferBuilder fbb{256};
  std::vector<msg::LibraryKey> keys;
  keys.reserve(req.keys.size());
  for (const auto& k : req.keys)
    keys.push_back(to_msg_key(k));
  auto key_vec = fbb.CreateVectorOfStructs(keys);
  auto tenant = opt_string(fbb, req.tenant);
  return library_lookup_msg::finish(
      fbb, msg::CreateLibraryLookup(fbb, req.request_id, tenant, key_vec, req.include_shared));
}

library_lookup_result_msg make_library_lookup_result_msg(const wire::library_lookup_result& res) {
  FlatBufferBuilder fbb{256};
  std::vector<Offset<msg::LookupEntry>> entries;
  entries.reserve(res.entries.size());
  for (const auto& e : res.entries) {
    auto key = to_msg_key(e.key);
    entries.push_back(
        msg::CreateLookupEntry(fbb, &key, e.tier, e.entry_id, e.n_tokens, e.bytes, e.shared));
  }
  auto entry_vec = fbb.CreateVector(entries);
  auto err = opt_error(fbb, res.err, res.request_id);
  return library_lookup_result_msg::finish(
      fbb, msg::CreateLibraryLookupResult(fbb, res.request_id, entry_vec, err));
}

load_request_msg make_load_request_msg(const wire::load_request& req) {
  FlatBufferBuilder fbb{128};
  auto tenant = opt_string(fbb, req.tenant);
  auto key = to_msg_key(req.key);
  return load_request_msg::finish(
      fbb, msg::CreateLoadRequest(fbb, req.request_id, tenant, req.deadline_unix_ns, &key,
                                  req.entry_id, req.first_layer, req.n_layers));
}

layer_ready_msg make_layer_ready_msg(const wire::layer_ready& ev) {
  FlatBufferBuilder fbb{256};
  auto key = to_msg_key(ev.key);
  auto k = add_tensor_handle(fbb, ev.k);
  auto v = add_tensor_handle(fbb, ev.v);
  auto err = opt_error(fbb, ev.err, ev.request_id);
  return layer_ready_msg::finish(fbb, msg::CreateLayerReady(fbb, ev.request_id, &key, ev.entry_id,
                                                            ev.layer, k, v, ev.load_us, err));
}

// -- prefill, decode, transfer ----------------------------------------------------

prefill_done_msg make_prefill_done_msg(const wire::prefill_done& res) {
  FlatBufferBuilder fbb{256};
  auto kv = add_kv_handle(fbb, res.kv);
  auto err = opt_error(fbb, res.err, res.request_id);
  return prefill_done_msg::finish(
      fbb, msg::CreatePrefillDone(fbb, res.request_id, kv, res.first_token, res.prompt_tokens,
                                  res.recomputed_tokens, res.reused_tokens, &res.timings, err));
}

namespace {

Offset<msg::DecodeTask> add_decode_task(FlatBufferBuilder& fbb, const wire::decode_task& task) {
  auto tenant = opt_string(fbb, task.tenant);
  auto kv = add_kv_handle(fbb, task.kv);
  auto sampling = add_sampling(fbb, task.sampling);
  auto prompt_ids = task.prompt_ids.empty() ? 0 : fbb.CreateVector(task.prompt_ids);
  auto first_logprobs = add_logprobs(fbb, task.first_logprobs);
  return msg::CreateDecodeTask(
      fbb, task.request_id, tenant, task.deadline_unix_ns, kv, task.first_token, task.prompt_tokens,
      sampling, task.stream, task.queue_us, task.position,
      task.compression ? &*task.compression : nullptr, task.reused_tokens, task.recomputed_tokens,
      task.cached_tokens, task.prefix_cached_tokens, prompt_ids, first_logprobs, task.image_tokens);
}

} // namespace

decode_task_msg make_decode_task_msg(const wire::decode_task& task) {
  FlatBufferBuilder fbb{256};
  return decode_task_msg::finish(fbb, add_decode_task(fbb, task));
}

compress_task_msg make_compress_task_msg(const wire::decode_task& task,
                                         std::string_view compression) {
  FlatBufferBuilder fbb{320};
  auto decode = add_decode_task(fbb, task);
  auto spec = fbb.CreateString(compression.data(), compression.size());
  return compress_task_msg::finish(fbb, msg::CreateCompressTask(fbb, decode, spec));
}

kv_transfer_begin_msg make_kv_transfer_begin_msg(uint64_t transfer_id, uint64_t request_id,
                                                 const wire::kv_handle& source,
                                                 uint64_t total_bytes, uint32_t n_chunks) {
  FlatBufferBuilder fbb{128};
  auto src = add_kv_handle(fbb, source);
  return kv_transfer_begin_msg::finish(
      fbb, msg::CreateKvTransferBegin(fbb, transfer_id, request_id, src, total_bytes, n_chunks));
}

kv_chunk_msg make_kv_chunk_msg(const wire::kv_chunk& c) {
  FlatBufferBuilder fbb{96};
  return kv_chunk_msg::finish(fbb, msg::CreateKvChunk(fbb, c.transfer_id, c.seq, c.layer, c.part,
                                                      c.offset, c.bytes, c.checksum));
}

kv_transfer_end_msg make_kv_transfer_end_msg(uint64_t transfer_id, uint64_t request_id,
                                             uint32_t n_chunks, uint64_t total_bytes,
                                             const error& err) {
  FlatBufferBuilder fbb{96};
  auto e = opt_error(fbb, err, request_id);
  return kv_transfer_end_msg::finish(
      fbb, msg::CreateKvTransferEnd(fbb, transfer_id, request_id, n_chunks, total_bytes, e));
}

heartbeat_msg make_heartbeat_msg(const wire::heartbeat& hb) {
  FlatBufferBuilder fbb{96};
  auto node = opt_string(fbb, hb.node);
  return heartbeat_msg::finish(fbb, msg::CreateHeartbeat(fbb, node, hb.seq, hb.sent_unix_ns,
                                                         hb.queued_requests, hb.running_requests,
                                                         hb.kv_cache_usage));
}

} // namespace mosaic
