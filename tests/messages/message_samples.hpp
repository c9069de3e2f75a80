#pragma once

// Random but well-formed samples of every Mosaic message type, and a reader
// that touches every field of a message through the generated accessors
// (what actor code does), for the round-trip, corruption and CAF tests.

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "messages/builders.hpp"
#include "messages/error_convert.hpp"
#include "messages/messages.hpp"

namespace mosaic::test {

using rng_t = std::mt19937_64;

inline uint64_t fresh_seed() {
  std::random_device rd;
  return (uint64_t{rd()} << 32) | rd();
}

inline std::string random_string(rng_t& rng, size_t max_len = 24) {
  static constexpr char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789 _-:/.";
  std::string out(rng() % (max_len + 1), ' ');
  for (auto& c : out)
    c = alphabet[rng() % (sizeof(alphabet) - 1)];
  return out;
}

inline std::vector<uint8_t> random_bytes(rng_t& rng, size_t max_len) {
  std::vector<uint8_t> out(rng() % (max_len + 1));
  for (auto& b : out)
    b = static_cast<uint8_t>(rng());
  return out;
}

inline library_key_bytes random_key(rng_t& rng) {
  library_key_bytes key{};
  for (auto& b : key)
    b = static_cast<uint8_t>(rng());
  return key;
}

inline error random_error(rng_t& rng) {
  auto code = static_cast<errc>(1 + rng() % 12);
  return error{code, random_string(rng)};
}

inline wire::tensor_handle random_tensor_handle(rng_t& rng) {
  wire::tensor_handle h;
  h.node = random_string(rng, 8);
  h.endpoint = "tcp://127.0.0.1:" + std::to_string(7000 + rng() % 1000);
  h.id = rng();
  h.dtype = static_cast<msg::DType>(rng() % 3);
  h.shape = {static_cast<uint32_t>(1 + rng() % 576), static_cast<uint32_t>(1 + rng() % 4096)};
  return h;
}

inline wire::kv_handle random_kv_handle(rng_t& rng) {
  wire::kv_handle h;
  h.node = random_string(rng, 8);
  h.endpoint = "tcp://127.0.0.1:" + std::to_string(7000 + rng() % 1000);
  h.sequence = rng();
  h.n_tokens = static_cast<uint32_t>(rng() % 4096);
  h.n_layers = static_cast<uint32_t>(1 + rng() % 80);
  h.kv_dim = static_cast<uint32_t>(1 + rng() % 1024);
  h.dtype = static_cast<msg::DType>(rng() % 3);
  return h;
}

inline wire::sampling random_sampling(rng_t& rng) {
  wire::sampling s;
  s.max_tokens = static_cast<uint32_t>(1 + rng() % 4096);
  s.temperature = static_cast<float>(rng() % 200) / 100.0f;
  s.top_p = static_cast<float>(1 + rng() % 100) / 100.0f;
  if (rng() % 2)
    s.seed = rng();
  for (size_t i = rng() % 3; i > 0; --i)
    s.stop.push_back(random_string(rng, 6));
  s.logprobs = static_cast<int32_t>(rng() % 22) - 1;
  s.return_token_ids = rng() % 2 == 0;
  return s;
}

inline std::vector<wire::token_logprob> random_logprobs(rng_t& rng, size_t n) {
  std::vector<wire::token_logprob> out;
  for (size_t i = 0; i < n; ++i)
    out.push_back({static_cast<int32_t>(rng() % 32000), -static_cast<float>(rng() % 1000) / 100.0f,
                   random_string(rng, 1 + rng() % 6)});
  return out;
}

inline wire::generate_request random_generate_request(rng_t& rng) {
  wire::generate_request r;
  r.request_id = rng();
  r.tenant = random_string(rng, 12);
  r.deadline_unix_ns = static_cast<int64_t>(rng() >> 1);
  r.model = "builtin:tiny";
  for (size_t i = 1 + rng() % 5; i > 0; --i) {
    switch (rng() % 3) {
    case 0:
      r.segments.push_back(wire::text_segment{random_string(rng, 64)});
      break;
    case 1:
      r.segments.push_back(wire::image_key_segment{random_key(rng)});
      break;
    default:
      r.segments.push_back(wire::image_data_segment{random_bytes(rng, 300), "image/png"});
    }
  }
  r.sampling = random_sampling(rng);
  r.stream = rng() % 2 == 1;
  r.reuse_policy = "mpic:" + std::to_string(rng() % 64);
  if (rng() % 2 == 0)
    r.cache_salt = "salt-" + std::to_string(rng());
  return r;
}

/// A LinkPlan over `n_segments` alternating text/image segments.
inline flatbuffers::Offset<msg::LinkPlan> add_random_link_plan(flatbuffers::FlatBufferBuilder& fbb,
                                                               rng_t& rng, uint64_t request_id) {
  std::vector<int32_t> tokens;
  std::vector<flatbuffers::Offset<msg::PlanSegment>> segments;
  size_t n_segments = 1 + rng() % 4;
  for (size_t i = 0; i < n_segments; ++i) {
    auto begin = static_cast<uint32_t>(tokens.size());
    auto len = 1 + rng() % 20;
    for (size_t t = 0; t < len; ++t)
      tokens.push_back(static_cast<int32_t>(rng() % 32000));
    auto key = to_msg_key(random_key(rng));
    bool image = i % 2 == 1;
    segments.push_back(
        msg::CreatePlanSegment(fbb, image ? msg::SegmentKind::image : msg::SegmentKind::text, begin,
                               static_cast<uint32_t>(tokens.size()), image ? &key : nullptr,
                               image ? rng() : 0, image ? msg::Tier::ram : msg::Tier::miss));
  }
  std::vector<flatbuffers::Offset<msg::LayerPlan>> layers;
  for (size_t l = 0, n = 1 + rng() % 8; l < n; ++l) {
    std::vector<uint32_t> leading(n_segments);
    for (size_t i = 1; i < n_segments; i += 2)
      leading[i] = static_cast<uint32_t>(rng() % 4);
    std::vector<uint32_t> extra{static_cast<uint32_t>(rng() % tokens.size())};
    layers.push_back(msg::CreateLayerPlan(fbb, fbb.CreateVector(leading), fbb.CreateVector(extra)));
  }
  return msg::CreateLinkPlan(fbb, request_id, fbb.CreateString("mpic:4"), fbb.CreateVector(tokens),
                             0, fbb.CreateVector(segments), fbb.CreateVector(layers),
                             static_cast<uint32_t>(rng() % 64));
}

/// Calls `f(msg)` with one random sample of every root message type.
template <class F>
void for_each_sample(rng_t& rng, F&& f) {
  using flatbuffers::FlatBufferBuilder;
  f(make_generate_request_msg(random_generate_request(rng)));
  f(make_cancel_msg(rng(), random_string(rng)));
  f(make_encode_request_msg(
      {.request_id = rng(),
       .tenant = random_string(rng),
       .deadline_unix_ns = 5,
       .image = wire::image_data_segment{random_bytes(rng, 200), "image/jpeg"},
       .compile = true}));
  f(make_encode_result_msg({.request_id = rng(),
                            .key = random_key(rng),
                            .n_tokens = 576,
                            .embeddings = random_tensor_handle(rng),
                            .encode_us = rng() % 100000}));
  {
    wire::token_event ev;
    ev.request_id = rng();
    ev.index = 3;
    ev.token_id = static_cast<int32_t>(rng() % 32000);
    ev.text = random_string(rng, 8);
    ev.finish = msg::FinishReason::length;
    ev.usage = msg::Usage{10, 3, 5, 1, 4};
    ev.logprobs = random_logprobs(rng, 4);
    ev.prompt_token_ids = {1, 32000, 32000, 5};
    f(make_token_event_msg(ev));
  }
  f(make_library_lookup_msg({.request_id = rng(),
                             .tenant = random_string(rng),
                             .keys = {random_key(rng), random_key(rng)},
                             .include_shared = false}));
  f(make_library_lookup_result_msg(
      {.request_id = rng(),
       .entries = {{random_key(rng), msg::Tier::disk, rng(), 576, rng() % (1u << 30), true},
                   {random_key(rng), msg::Tier::miss, 0, 0, 0, false}},
       .err = {}}));
  f(make_load_request_msg({.request_id = rng(),
                           .tenant = random_string(rng),
                           .deadline_unix_ns = 9,
                           .key = random_key(rng),
                           .entry_id = rng(),
                           .first_layer = 0,
                           .n_layers = 32}));
  f(make_layer_ready_msg({.request_id = rng(),
                          .key = random_key(rng),
                          .entry_id = rng(),
                          .layer = static_cast<uint32_t>(rng() % 32),
                          .k = random_tensor_handle(rng),
                          .v = random_tensor_handle(rng),
                          .load_us = rng() % 1000,
                          .err = random_error(rng)}));
  {
    FlatBufferBuilder fbb;
    auto key = to_msg_key(random_key(rng));
    auto emb = add_tensor_handle(fbb, random_tensor_handle(rng));
    auto kv = add_kv_handle(fbb, random_kv_handle(rng));
    f(store_request_msg::finish(fbb, msg::CreateStoreRequest(fbb, rng(), fbb.CreateString("t"),
                                                             &key, true, 3600, 576, emb, kv)));
  }
  {
    FlatBufferBuilder fbb;
    auto key = to_msg_key(random_key(rng));
    f(store_result_msg::finish(
        fbb, msg::CreateStoreResult(fbb, rng(), &key, msg::Tier::disk, rng() % 1000000)));
  }
  {
    FlatBufferBuilder fbb;
    f(link_plan_msg::finish(fbb, add_random_link_plan(fbb, rng, rng())));
  }
  {
    FlatBufferBuilder fbb;
    auto plan = add_random_link_plan(fbb, rng, 7);
    std::vector<flatbuffers::Offset<msg::TensorHandle>> emb{
        add_tensor_handle(fbb, random_tensor_handle(rng))};
    auto embv = fbb.CreateVector(emb);
    auto sampling = add_sampling(fbb, random_sampling(rng));
    f(prefill_task_msg::finish(fbb,
                               msg::CreatePrefillTask(fbb, 7, fbb.CreateString("tenant"), 11, plan,
                                                      embv, sampling, fbb.CreateString("d0"))));
  }
  f(make_prefill_done_msg({.request_id = rng(),
                           .kv = random_kv_handle(rng),
                           .first_token = 42,
                           .prompt_tokens = 600,
                           .recomputed_tokens = 64,
                           .reused_tokens = 512,
                           .timings = msg::PrefillTimings{1, 2, 3, 6},
                           .err = {}}));
  f(make_decode_task_msg({.request_id = rng(),
                          .tenant = random_string(rng),
                          .deadline_unix_ns = 77,
                          .kv = random_kv_handle(rng),
                          .first_token = 1,
                          .prompt_tokens = 600,
                          .sampling = random_sampling(rng),
                          .stream = true,
                          .prompt_ids = {1, 2, 3},
                          .first_logprobs = random_logprobs(rng, 3)}));
  f(make_kv_transfer_begin_msg(rng(), rng(), random_kv_handle(rng), rng() % (1u << 30), 17));
  f(make_kv_chunk_msg({rng(), 3, 5, msg::KvPart::v, 4096, 65536, rng()}));
  f(make_kv_transfer_end_msg(rng(), rng(), 17, 1 << 20, random_error(rng)));
  f(make_error_msg(random_error(rng), rng()));
  {
    FlatBufferBuilder fbb;
    std::vector<flatbuffers::Offset<msg::ActorInfo>> actors{
        msg::CreateActorInfo(fbb, fbb.CreateString("prefill"), fbb.CreateString("p0.prefill"),
                             fbb.CreateString("cuda:0")),
        msg::CreateActorInfo(fbb, fbb.CreateString("kv_loader"), fbb.CreateString("p0.loader"),
                             fbb.CreateString("cpu"))};
    auto fp = to_msg_key(random_key(rng));
    f(node_hello_msg::finish(
        fbb, msg::CreateNodeHello(fbb, fbb.CreateString("p0"), fbb.CreateString("127.0.0.1"), 7400,
                                  7500, fbb.CreateString("0.1.0"), fbb.CreateString("builtin:tiny"),
                                  &fp, fbb.CreateVector(actors), 123456789)));
  }
  f(make_heartbeat_msg({random_string(rng, 8), rng(), 99, 3, 4, 0.5f}));
  {
    FlatBufferBuilder fbb;
    f(shutdown_msg::finish(fbb, msg::CreateShutdown(fbb, fbb.CreateString("d0"),
                                                    fbb.CreateString("maintenance"), false, 42)));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<flatbuffers::Offset<msg::ActorHealth>> actors{
        msg::CreateActorHealth(fbb, fbb.CreateString("d0.decode"), msg::HealthStatus::degraded, 12,
                               fbb.CreateString("x"))};
    f(health_msg::finish(fbb,
                         msg::CreateHealth(fbb, fbb.CreateString("d0"), msg::HealthStatus::degraded,
                                           3600, fbb.CreateVector(actors), 0.75f)));
  }
}

} // namespace mosaic::test
