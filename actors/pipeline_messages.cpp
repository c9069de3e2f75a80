#include "actors/pipeline_messages.hpp"

#include <algorithm>
#include <vector>

#include "messages/error_convert.hpp"

namespace mosaic::actors {

std::vector<wire::token_logprob> wire_logprobs(std::span<const float> logits, int32_t chosen,
                                               int32_t top, const tokenizer& tok) {
  std::vector<wire::token_logprob> out;
  if (top < 0)
    return out;
  for (const auto& lp : logprobs_of(logits, chosen, std::min(top, wire::max_top_logprobs)))
    out.push_back({lp.token, lp.logprob, tok.decode_piece(lp.token)});
  return out;
}

std::vector<int32_t> expanded_prompt_ids(std::span<const int32_t> ids, int32_t image_token_id,
                                         std::span<const int> image_tokens) {
  std::vector<int32_t> out;
  out.reserve(ids.size());
  size_t image = 0;
  for (int32_t id : ids) {
    if (id != image_token_id || image >= image_tokens.size()) {
      out.push_back(id);
      continue;
    }
    out.insert(out.end(), size_t(std::max(image_tokens[image++], 0)), id);
  }
  return out;
}

std::vector<int> image_end_offsets(std::span<const int32_t> ids, int32_t image_token_id,
                                   std::span<const int> image_tokens) {
  std::vector<int> ends;
  int at = 0;
  for (int32_t id : ids) {
    const bool image = id == image_token_id && ends.size() < image_tokens.size();
    at += image ? std::max(image_tokens[ends.size()], 0) : 1;
    if (image)
      ends.push_back(at);
  }
  return ends;
}

std::vector<int> image_token_counts(const prefill_job& job) {
  std::vector<int> out;
  out.reserve(job.images.size());
  for (const auto& img : job.images)
    out.push_back(img.n_tokens);
  return out;
}

sampling_params engine_sampling(const wire::sampling& s, uint64_t seed, int32_t eos_id) {
  sampling_params sp;
  sp.temperature = s.temperature;
  sp.top_p = s.top_p;
  sp.top_k = s.top_k;
  sp.seed = seed;
  sp.min_p = s.min_p;
  sp.repetition_penalty = s.repetition_penalty;
  sp.presence_penalty = s.presence_penalty;
  sp.frequency_penalty = s.frequency_penalty;
  sp.min_tokens = static_cast<int>(s.min_tokens);
  sp.stop_token_ids = s.stop_token_ids;
  sp.eos_id = s.ignore_eos ? -1 : eos_id;
  return sp;
}

using flatbuffers::FlatBufferBuilder;

caf::timespan until_deadline(int64_t deadline_unix_ns, std::chrono::milliseconds slack) {
  const int64_t left = deadline_unix_ns - unix_now_ns();
  const auto total = std::chrono::nanoseconds{std::max<int64_t>(left, 0)} + slack;
  return std::max<caf::timespan>(total, std::chrono::milliseconds{1});
}

bool deadline_passed(int64_t deadline_unix_ns) {
  return deadline_unix_ns != 0 && unix_now_ns() >= deadline_unix_ns;
}

msg::LibraryKey to_key(const digest& key) {
  return to_msg_key(key);
}

digest from_key(const msg::LibraryKey* key) {
  return key == nullptr ? digest{} : from_msg_key(*key);
}

store_request_msg make_store_request_msg(uint64_t request_id, std::string_view tenant,
                                         const digest& image_key, uint32_t n_tokens,
                                         uint64_t compiled_id, uint64_t embeddings_id,
                                         token_grid grid) {
  FlatBufferBuilder fbb{256};
  auto t = fbb.CreateString(tenant.data(), tenant.size());
  const auto key = to_key(image_key);
  wire::kv_handle kv;
  kv.sequence = compiled_id;
  kv.n_tokens = n_tokens;
  auto kvh = add_kv_handle(fbb, kv);
  wire::tensor_handle emb;
  emb.id = embeddings_id;
  emb.shape = {n_tokens};
  auto embh = add_tensor_handle(fbb, emb);
  return store_request_msg::finish(
      fbb, msg::CreateStoreRequest(fbb, request_id, t, &key, false, 0, n_tokens, embh, kvh,
                                   static_cast<uint32_t>(std::max(grid.t, 0)),
                                   static_cast<uint32_t>(std::max(grid.rows, 0)),
                                   static_cast<uint32_t>(std::max(grid.cols, 0))));
}

token_grid grid_of(const msg::StoreRequest& m) {
  // Each side at most the tokens an entry may hold; compile_image checks
  // that the grid counts the image's tokens.
  constexpr uint32_t most = 1u << 20;
  if (m.grid_t() > most || m.grid_rows() > most || m.grid_cols() > most)
    return {};
  return {static_cast<int>(m.grid_t()), static_cast<int>(m.grid_rows()),
          static_cast<int>(m.grid_cols())};
}

store_result_msg make_store_result_msg(uint64_t request_id, const digest& library_key,
                                       uint64_t bytes, const error& err) {
  FlatBufferBuilder fbb{128};
  const auto key = to_key(library_key);
  auto e =
      err.code == errc::none ? flatbuffers::Offset<msg::Error>{} : add_error(fbb, err, request_id);
  const auto tier = err.code == errc::none ? msg::Tier::disk : msg::Tier::miss;
  return store_result_msg::finish(fbb,
                                  msg::CreateStoreResult(fbb, request_id, &key, tier, bytes, e));
}

prefill_task_msg make_prefill_task_msg(const prefill_job& job, int32_t image_token_id) {
  FlatBufferBuilder fbb{1024};
  std::vector<int32_t> tokens;
  std::vector<flatbuffers::Offset<msg::PlanSegment>> segments;
  std::vector<flatbuffers::Offset<msg::TensorHandle>> embeddings;
  size_t image = 0;
  uint32_t text_begin = 0;
  auto close_text = [&] {
    const auto end = static_cast<uint32_t>(tokens.size());
    if (end > text_begin)
      segments.push_back(msg::CreatePlanSegment(fbb, msg::SegmentKind::text, text_begin, end));
  };
  for (int32_t id : job.ids) {
    if (id != image_token_id || image >= job.images.size()) {
      tokens.push_back(id);
      continue;
    }
    close_text();
    const auto& img = job.images[image++];
    const auto begin = static_cast<uint32_t>(tokens.size());
    tokens.insert(tokens.end(), static_cast<size_t>(img.n_tokens), -1);
    const auto key = to_key(img.image_key);
    segments.push_back(msg::CreatePlanSegment(
        fbb, msg::SegmentKind::image, begin, static_cast<uint32_t>(tokens.size()), &key,
        img.load_id, img.load_id != 0 ? msg::Tier::ram : msg::Tier::miss));
    text_begin = static_cast<uint32_t>(tokens.size());
  }
  close_text();
  auto policy = fbb.CreateString(job.policy.to_string());
  auto tok = fbb.CreateVector(tokens);
  auto seg = fbb.CreateVector(segments);
  auto plan = msg::CreateLinkPlan(fbb, job.request_id, policy, tok, 0, seg);
  auto tenant = fbb.CreateString(job.tenant);
  auto sampling = add_sampling(fbb, job.sampling);
  return prefill_task_msg::finish(
      fbb,
      msg::CreatePrefillTask(fbb, job.request_id, tenant, job.deadline_unix_ns, plan, 0, sampling));
}

token_event_msg make_error_event(uint64_t request_id, const error& err) {
  wire::token_event ev;
  ev.request_id = request_id;
  ev.finish = err.code == errc::timeout     ? msg::FinishReason::timeout
              : err.code == errc::cancelled ? msg::FinishReason::cancelled
                                            : msg::FinishReason::error;
  ev.err = err;
  return make_token_event_msg(ev);
}

} // namespace mosaic::actors
