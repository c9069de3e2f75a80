// Every message type survives build → bytes → verify → read with its field
// values intact, and a buffer of one type is never accepted as another.

#include <gtest/gtest.h>

#include "messages/builders.hpp"
#include "messages/error_convert.hpp"
#include "messages/readers.hpp"
#include "tests/messages/message_samples.hpp"

namespace mosaic {
namespace {

using test::rng_t;

/// What a receiving process does: verify the bytes of `m` as a fresh buffer.
template <class Table>
fb_message<Table> reparse(const fb_message<Table>& m) {
  std::vector<uint8_t> copy(m.bytes().begin(), m.bytes().end());
  auto back = fb_message<Table>::from_bytes(std::move(copy));
  EXPECT_TRUE(back.has_value()) << (back ? "" : back.err().to_string());
  return back ? std::move(*back) : fb_message<Table>{};
}

std::string str(const flatbuffers::String* s) {
  return s == nullptr ? std::string{} : s->str();
}

class messages_test : public ::testing::Test {
protected:
  void SetUp() override {
    seed_ = test::fresh_seed();
    rng_.seed(seed_);
  }
  uint64_t seed_ = 0;
  rng_t rng_;
};

TEST_F(messages_test, every_message_type_verifies_after_a_copy) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  int n_types = 0;
  test::for_each_sample(rng_, [&](const auto& m) {
    ++n_types;
    auto back = reparse(m);
    EXPECT_EQ(back, m) << m.name();
    EXPECT_EQ(back.name().substr(0, 11), "mosaic.msg.");
  });
  EXPECT_EQ(n_types, 23);
}

TEST_F(messages_test, generate_request_round_trips_through_its_reader) {
  for (int i = 0; i < 50; ++i) {
    auto seed = rng_();
    SCOPED_TRACE("seed " + std::to_string(seed));
    rng_t rng{seed};
    auto req = test::random_generate_request(rng);
    auto back = read_generate_request(reparse(make_generate_request_msg(req)));
    ASSERT_TRUE(back.has_value()) << back.err().to_string();
    EXPECT_EQ(*back, req);
  }
}

TEST_F(messages_test, sampling_defaults_match_openai) {
  auto m = reparse(make_generate_request_msg({.request_id = 1}));
  auto back = read_generate_request(m);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->sampling.max_tokens, 256u);
  EXPECT_EQ(back->sampling.temperature, 1.0f);
  EXPECT_EQ(back->sampling.top_p, 1.0f);
  EXPECT_FALSE(back->sampling.seed.has_value());
  EXPECT_FALSE(back->stream);
}

TEST_F(messages_test, token_event_round_trips) {
  wire::token_event ev{.request_id = rng_(),
                       .index = 7,
                       .token_id = -3,
                       .text = "héllo",
                       .finish = msg::FinishReason::error,
                       .usage = msg::Usage{600, 7, 512, 32, 480},
                       .err = error{errc::timeout, "deadline passed after 7 tokens"}};
  auto back = read_token_event(reparse(make_token_event_msg(ev)));
  EXPECT_EQ(back.request_id, ev.request_id);
  EXPECT_EQ(back.index, 7u);
  EXPECT_EQ(back.token_id, -3);
  EXPECT_EQ(back.text, "héllo");
  EXPECT_EQ(back.finish, msg::FinishReason::error);
  EXPECT_EQ(back.usage.prompt_tokens(), 600u);
  EXPECT_EQ(back.usage.completion_tokens(), 7u);
  EXPECT_EQ(back.usage.reused_tokens(), 512u);
  EXPECT_EQ(back.usage.recomputed_tokens(), 32u);
  EXPECT_EQ(back.err.code, errc::timeout);
  EXPECT_EQ(back.err.message, "deadline passed after 7 tokens");
  EXPECT_TRUE(back.logprobs.empty());
  EXPECT_TRUE(back.prompt_token_ids.empty());

  ev.logprobs = test::random_logprobs(rng_, 21);
  ev.prompt_token_ids = {1, 32000, 32000, 7};
  auto with = read_token_event(reparse(make_token_event_msg(ev)));
  EXPECT_EQ(with.logprobs, ev.logprobs);
  EXPECT_EQ(with.prompt_token_ids, ev.prompt_token_ids);
  // More than the chosen token and 20 alternatives is a hostile sender's.
  ev.logprobs = test::random_logprobs(rng_, 30);
  EXPECT_EQ(read_token_event(reparse(make_token_event_msg(ev))).logprobs.size(), 21u);
}

TEST_F(messages_test, encode_messages_round_trip) {
  wire::image_data_segment img{test::random_bytes(rng_, 1000), "image/png"};
  auto req = reparse(make_encode_request_msg(
      {.request_id = 5, .tenant = "acme", .deadline_unix_ns = 99, .image = img, .compile = true}));
  EXPECT_EQ(req->request_id(), 5u);
  EXPECT_EQ(str(req->tenant()), "acme");
  EXPECT_EQ(req->deadline_unix_ns(), 99);
  EXPECT_TRUE(req->compile());
  EXPECT_FALSE(req->shared());
  const auto* data = req->image()->source_as_ImageData();
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(std::vector<uint8_t>(data->encoded()->begin(), data->encoded()->end()), img.encoded);
  EXPECT_EQ(str(data->mime()), "image/png");
  EXPECT_EQ(req->decoded(), 0u);
  // read_encode_request gives back every field, the lent-pixels handle
  // and a key source included.
  const wire::encode_request full{.request_id = 6,
                                  .tenant = "acme",
                                  .deadline_unix_ns = 7,
                                  .image = img,
                                  .compile = false,
                                  .shared = true,
                                  .decoded = 42};
  auto back = read_encode_request(reparse(make_encode_request_msg(full)));
  ASSERT_TRUE(back) << back.err().to_string();
  EXPECT_EQ(*back, full);
  const wire::encode_request by_key{.request_id = 8,
                                    .image = wire::image_key_segment{test::random_key(rng_)}};
  auto back_key = read_encode_request(reparse(make_encode_request_msg(by_key)));
  ASSERT_TRUE(back_key) << back_key.err().to_string();
  EXPECT_EQ(*back_key, by_key);

  auto key = test::random_key(rng_);
  auto handle = test::random_tensor_handle(rng_);
  auto res = reparse(make_encode_result_msg({.request_id = 5,
                                             .key = key,
                                             .n_tokens = 576,
                                             .embeddings = handle,
                                             .encoder_cache_hit = true,
                                             .compiled = true,
                                             .encode_us = 1234,
                                             .err = {}}));
  EXPECT_EQ(from_msg_key(*res->key()), key);
  EXPECT_EQ(res->n_tokens(), 576u);
  EXPECT_EQ(read_tensor_handle(res->embeddings()), handle);
  EXPECT_TRUE(res->encoder_cache_hit());
  EXPECT_TRUE(res->compiled());
  EXPECT_EQ(res->encode_us(), 1234u);
  EXPECT_EQ(res->error(), nullptr);
}

TEST_F(messages_test, cancel_round_trips) {
  auto m = reparse(make_cancel_msg(77, "client closed the connection"));
  EXPECT_EQ(m->request_id(), 77u);
  EXPECT_EQ(str(m->reason()), "client closed the connection");
}

TEST_F(messages_test, library_messages_round_trip) {
  std::vector<library_key_bytes> keys{test::random_key(rng_), test::random_key(rng_)};
  auto lookup = reparse(make_library_lookup_msg(
      {.request_id = 3, .tenant = "t1", .keys = keys, .include_shared = false}));
  ASSERT_EQ(lookup->keys()->size(), 2u);
  EXPECT_EQ(from_msg_key(*lookup->keys()->Get(0)), keys[0]);
  EXPECT_EQ(from_msg_key(*lookup->keys()->Get(1)), keys[1]);
  EXPECT_FALSE(lookup->include_shared());
  EXPECT_EQ(str(lookup->tenant()), "t1");

  wire::library_lookup_result res{.request_id = 3,
                                  .entries = {{keys[0], msg::Tier::ram, 11, 576, 1 << 20, false},
                                              {keys[1], msg::Tier::miss, 0, 0, 0, false}},
                                  .err = {}};
  auto res_back = read_library_lookup_result(reparse(make_library_lookup_result_msg(res)));
  EXPECT_EQ(res_back.request_id, 3u);
  EXPECT_EQ(res_back.entries, res.entries);
  EXPECT_EQ(res_back.err.code, errc::none);

  auto load = reparse(make_load_request_msg({.request_id = 3,
                                             .tenant = "t1",
                                             .deadline_unix_ns = 10,
                                             .key = keys[0],
                                             .entry_id = 11,
                                             .first_layer = 2,
                                             .n_layers = 30}));
  EXPECT_EQ(from_msg_key(*load->key()), keys[0]);
  EXPECT_EQ(load->entry_id(), 11u);
  EXPECT_EQ(load->first_layer(), 2u);
  EXPECT_EQ(load->n_layers(), 30u);
  EXPECT_EQ(load->deadline_unix_ns(), 10);

  auto k = test::random_tensor_handle(rng_);
  auto v = test::random_tensor_handle(rng_);
  auto ready = reparse(make_layer_ready_msg({.request_id = 3,
                                             .key = keys[0],
                                             .entry_id = 11,
                                             .layer = 17,
                                             .k = k,
                                             .v = v,
                                             .load_us = 250,
                                             .err = {}}));
  EXPECT_EQ(ready->layer(), 17u);
  EXPECT_EQ(ready->entry_id(), 11u);
  EXPECT_EQ(read_tensor_handle(ready->k()), k);
  EXPECT_EQ(read_tensor_handle(ready->v()), v);
  EXPECT_TRUE(to_status(ready->error()).has_value());

  flatbuffers::FlatBufferBuilder fbb;
  auto mkey = to_msg_key(keys[1]);
  auto kv = test::random_kv_handle(rng_);
  auto store = reparse(store_request_msg::finish(
      fbb, msg::CreateStoreRequest(fbb, 4, fbb.CreateString("t1"), &mkey, true, 60, 576,
                                   add_tensor_handle(fbb, k), add_kv_handle(fbb, kv))));
  EXPECT_EQ(from_msg_key(*store->key()), keys[1]);
  EXPECT_TRUE(store->shared());
  EXPECT_EQ(store->ttl_seconds(), 60u);
  EXPECT_EQ(read_kv_handle(store->kv()), kv);
  EXPECT_EQ(read_tensor_handle(store->embeddings()), k);

  flatbuffers::FlatBufferBuilder fbb2;
  auto failed = add_error(fbb2, error{errc::io_error, "disk full"}, 4);
  auto stored = reparse(store_result_msg::finish(
      fbb2, msg::CreateStoreResult(fbb2, 4, &mkey, msg::Tier::disk, 4096, failed)));
  EXPECT_EQ(stored->tier(), msg::Tier::disk);
  EXPECT_EQ(stored->bytes(), 4096u);
  auto st = to_status(stored->error());
  ASSERT_FALSE(st.has_value());
  EXPECT_EQ(st.err().code, errc::io_error);
  EXPECT_EQ(st.err().message, "disk full");
}

TEST_F(messages_test, link_plan_and_prefill_task_round_trip) {
  flatbuffers::FlatBufferBuilder fbb;
  auto key = to_msg_key(test::random_key(rng_));
  std::vector<int32_t> tokens{1, 2, 3, 32000, 32000, 32000, 32000, 9};
  std::vector<flatbuffers::Offset<msg::PlanSegment>> segs{
      msg::CreatePlanSegment(fbb, msg::SegmentKind::text, 0, 3),
      msg::CreatePlanSegment(fbb, msg::SegmentKind::image, 3, 7, &key, 42, msg::Tier::disk),
      msg::CreatePlanSegment(fbb, msg::SegmentKind::text, 7, 8)};
  std::vector<uint32_t> leading{0, 2, 0};
  std::vector<uint32_t> extra{5};
  std::vector<flatbuffers::Offset<msg::LayerPlan>> layers{
      msg::CreateLayerPlan(fbb, fbb.CreateVector(leading), 0),
      msg::CreateLayerPlan(fbb, fbb.CreateVector(leading), fbb.CreateVector(extra))};
  auto plan = msg::CreateLinkPlan(fbb, 9, fbb.CreateString("mpic:2"), fbb.CreateVector(tokens), 0,
                                  fbb.CreateVector(segs), fbb.CreateVector(layers), 3);
  auto emb = test::random_tensor_handle(rng_);
  std::vector<flatbuffers::Offset<msg::TensorHandle>> embs{add_tensor_handle(fbb, emb)};
  auto embv = fbb.CreateVector(embs);
  auto sampling = test::random_sampling(rng_);
  auto task = reparse(prefill_task_msg::finish(
      fbb, msg::CreatePrefillTask(fbb, 9, fbb.CreateString("t"), 123, plan, embv,
                                  add_sampling(fbb, sampling), fbb.CreateString("d0"))));
  const auto* p = task->plan();
  EXPECT_EQ(p->request_id(), 9u);
  EXPECT_EQ(str(p->policy()), "mpic:2");
  EXPECT_EQ(std::vector<int32_t>(p->tokens()->begin(), p->tokens()->end()), tokens);
  EXPECT_EQ(p->positions(), nullptr); // 0..n-1
  ASSERT_EQ(p->segments()->size(), 3u);
  const auto* image = p->segments()->Get(1);
  EXPECT_EQ(image->kind(), msg::SegmentKind::image);
  EXPECT_EQ(image->token_begin(), 3u);
  EXPECT_EQ(image->token_end(), 7u);
  EXPECT_EQ(image->entry_id(), 42u);
  EXPECT_EQ(image->tier(), msg::Tier::disk);
  EXPECT_EQ(from_msg_key(*image->key()), from_msg_key(key));
  ASSERT_EQ(p->layers()->size(), 2u);
  EXPECT_EQ(p->layers()->Get(0)->tokens(), nullptr);
  EXPECT_EQ(p->layers()->Get(1)->leading()->Get(1), 2u);
  EXPECT_EQ(p->layers()->Get(1)->tokens()->Get(0), 5u);
  EXPECT_EQ(p->recomputed_tokens(), 3u);
  EXPECT_EQ(read_tensor_handle(task->embeddings()->Get(0)), emb);
  EXPECT_EQ(read_sampling(task->sampling()), sampling);
  EXPECT_EQ(str(task->decode_node()), "d0");
  EXPECT_EQ(task->deadline_unix_ns(), 123);

  // The plan is also a message of its own (linker → prefill).
  flatbuffers::FlatBufferBuilder fbb2;
  auto plan_only = reparse(link_plan_msg::finish(fbb2, test::add_random_link_plan(fbb2, rng_, 5)));
  EXPECT_EQ(plan_only->request_id(), 5u);
  EXPECT_GE(plan_only->segments()->size(), 1u);
}

TEST_F(messages_test, prefill_done_and_decode_task_round_trip) {
  wire::prefill_done done{.request_id = 8,
                          .kv = test::random_kv_handle(rng_),
                          .first_token = 1234,
                          .prompt_tokens = 700,
                          .recomputed_tokens = 96,
                          .reused_tokens = 576,
                          .timings = msg::PrefillTimings{10, 20, 30, 60},
                          .err = {}};
  auto back = read_prefill_done(reparse(make_prefill_done_msg(done)));
  EXPECT_EQ(back.kv, done.kv);
  EXPECT_EQ(back.first_token, 1234);
  EXPECT_EQ(back.prompt_tokens, 700u);
  EXPECT_EQ(back.recomputed_tokens, 96u);
  EXPECT_EQ(back.reused_tokens, 576u);
  EXPECT_EQ(back.timings.load_wait_us(), 20u);
  EXPECT_EQ(back.timings.total_us(), 60u);
  EXPECT_EQ(back.err.code, errc::none);

  auto sampling = test::random_sampling(rng_);
  auto task = reparse(make_decode_task_msg({.request_id = 8,
                                            .tenant = "t",
                                            .deadline_unix_ns = 5,
                                            .kv = done.kv,
                                            .first_token = 1234,
                                            .prompt_tokens = 700,
                                            .sampling = sampling,
                                            .stream = true,
                                            .prompt_ids = {1, 9, 9},
                                            .first_logprobs = test::random_logprobs(rng_, 3)}));
  EXPECT_EQ(read_kv_handle(task->kv()), done.kv);
  const auto read = read_decode_task(task.root());
  EXPECT_EQ(read.prompt_ids, (std::vector<int32_t>{1, 9, 9}));
  EXPECT_EQ(read.first_logprobs.size(), 3u);
  EXPECT_EQ(read_sampling(task->sampling()), sampling);
  EXPECT_EQ(task->first_token(), 1234);
  EXPECT_TRUE(task->stream());
}

TEST_F(messages_test, kv_transfer_messages_round_trip) {
  auto kv = test::random_kv_handle(rng_);
  auto begin = reparse(make_kv_transfer_begin_msg(1, 2, kv, 1 << 24, 256));
  EXPECT_EQ(begin->transfer_id(), 1u);
  EXPECT_EQ(begin->request_id(), 2u);
  EXPECT_EQ(read_kv_handle(begin->source()), kv);
  EXPECT_EQ(begin->total_bytes(), uint64_t{1} << 24);
  EXPECT_EQ(begin->n_chunks(), 256u);

  auto checksum = rng_();
  auto chunk = reparse(make_kv_chunk_msg({1, 9, 31, msg::KvPart::v, 8192, 65536, checksum}));
  EXPECT_EQ(chunk->seq(), 9u);
  EXPECT_EQ(chunk->layer(), 31u);
  EXPECT_EQ(chunk->part(), msg::KvPart::v);
  EXPECT_EQ(chunk->offset(), 8192u);
  EXPECT_EQ(chunk->bytes(), 65536u);
  EXPECT_EQ(chunk->checksum(), checksum);

  auto end = reparse(make_kv_transfer_end_msg(1, 2, 256, 1 << 24, {errc::cancelled, "gone"}));
  EXPECT_EQ(end->n_chunks(), 256u);
  EXPECT_EQ(to_error(*end->error()).code, errc::cancelled);
  EXPECT_EQ(end->error()->request_id(), 2u);
}

TEST_F(messages_test, control_messages_round_trip) {
  auto hb = reparse(make_heartbeat_msg({"p0", 12, 34, 5, 6, 0.25f}));
  EXPECT_EQ(str(hb->node()), "p0");
  EXPECT_EQ(hb->seq(), 12u);
  EXPECT_EQ(hb->sent_unix_ns(), 34);
  EXPECT_EQ(hb->queued_requests(), 5u);
  EXPECT_EQ(hb->running_requests(), 6u);
  EXPECT_EQ(hb->kv_cache_usage(), 0.25f);

  // NodeHello, Shutdown, Health: built by hand in the sample set; check one
  // of each with known values.
  test::for_each_sample(rng_, [](const auto& m) {
    using table = typename std::decay_t<decltype(m)>::table_type;
    auto back = reparse(m);
    if constexpr (std::is_same_v<table, msg::NodeHello>) {
      EXPECT_EQ(str(back->node()), "p0");
      EXPECT_EQ(back->control_port(), 7400);
      EXPECT_EQ(back->data_port(), 7500);
      ASSERT_EQ(back->actors()->size(), 2u);
      EXPECT_EQ(str(back->actors()->Get(0)->device()), "cuda:0");
      EXPECT_EQ(back->started_unix_ns(), 123456789);
    } else if constexpr (std::is_same_v<table, msg::Shutdown>) {
      EXPECT_EQ(str(back->reason()), "maintenance");
      EXPECT_FALSE(back->drain());
      EXPECT_EQ(back->deadline_unix_ns(), 42);
    } else if constexpr (std::is_same_v<table, msg::Health>) {
      EXPECT_EQ(back->status(), msg::HealthStatus::degraded);
      EXPECT_EQ(back->uptime_s(), 3600u);
      EXPECT_EQ(back->actors()->Get(0)->queue_depth(), 12u);
      EXPECT_EQ(back->kv_cache_usage(), 0.75f);
    }
  });
}

TEST_F(messages_test, error_message_round_trips_every_code) {
  for (int c = 0; c <= 12; ++c) {
    error err{static_cast<errc>(c), "message " + std::to_string(c)};
    auto m = reparse(make_error_msg(err, 99));
    auto back = to_error(*m.root());
    EXPECT_EQ(back.code, err.code);
    EXPECT_EQ(back.message, err.message);
    EXPECT_EQ(m->request_id(), 99u);
  }
}

TEST_F(messages_test, unknown_error_code_from_a_newer_peer_becomes_internal) {
  flatbuffers::FlatBufferBuilder fbb;
  auto m = reparse(error_msg::finish(
      fbb, msg::CreateError(fbb, static_cast<msg::ErrorCode>(200), fbb.CreateString("x"))));
  auto err = to_error(*m.root());
  EXPECT_EQ(err.code, errc::internal);
  EXPECT_NE(err.message.find("200"), std::string::npos);
}

TEST_F(messages_test, a_buffer_of_one_type_is_rejected_as_another) {
  auto token = make_token_event_msg({.request_id = 1, .text = "x"});
  auto as_request = generate_request_msg::from_bytes(token.bytes());
  ASSERT_FALSE(as_request.has_value());
  EXPECT_EQ(as_request.err().code, errc::corrupt_data);
  EXPECT_NE(as_request.err().message.find("mosaic.msg.GenerateRequest"), std::string::npos);
  EXPECT_NE(as_request.err().message.find("MTOK"), std::string::npos);
}

TEST_F(messages_test, unknown_segment_kind_is_a_clear_error) {
  flatbuffers::FlatBufferBuilder fbb;
  auto text = msg::CreateTextSegment(fbb, fbb.CreateString("hi"));
  std::vector<flatbuffers::Offset<msg::Segment>> segs{
      msg::CreateSegment(fbb, static_cast<msg::SegmentBody>(9), text.Union())};
  auto m = reparse(generate_request_msg::finish(
      fbb, msg::CreateGenerateRequest(fbb, 1, 0, 0, 0, fbb.CreateVector(segs))));
  auto r = read_generate_request(m);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.err().code, errc::invalid_argument);
  EXPECT_NE(r.err().message.find("unknown kind 9"), std::string::npos);
}

TEST_F(messages_test, empty_message_has_no_root) {
  generate_request_msg m;
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(m.root(), nullptr);
  EXPECT_FALSE(read_generate_request(m).has_value());
}

} // namespace
} // namespace mosaic
