#pragma once

// Reads every field of a verified message through the generated accessors,
// the way actor code does, folding what it reads into a hash so that
// nothing is optimized away. Used on bit-flipped buffers that still pass
// the verifier: reading them must never crash or touch memory outside the
// buffer (run under ASan/UBSan to check the latter).

#include <cstdint>
#include <cstring>

#include "messages/messages.hpp"
#include "messages/readers.hpp"

namespace mosaic::test {

struct toucher {
  uint64_t h = 1469598103934665603ull;

  void mix(uint64_t v) { h = (h ^ v) * 1099511628211ull; }

  template <class T>
  void operator()(T v) {
    if constexpr (std::is_enum_v<T>) {
      mix(static_cast<uint64_t>(v));
    } else if constexpr (std::is_floating_point_v<T>) {
      uint64_t bits = 0;
      std::memcpy(&bits, &v, sizeof(v) < sizeof(bits) ? sizeof(v) : sizeof(bits));
      mix(bits);
    } else {
      mix(static_cast<uint64_t>(v));
    }
  }
  void operator()(const flatbuffers::String* s) {
    if (s == nullptr)
      return;
    for (auto c : s->string_view())
      mix(static_cast<uint8_t>(c));
  }
  template <class T>
  void operator()(const flatbuffers::Vector<T>* v) {
    if (v == nullptr)
      return;
    for (auto x : *v)
      (*this)(x);
  }
  void operator()(const msg::LibraryKey* k) {
    if (k != nullptr)
      for (auto b : *k->bytes())
        mix(b);
  }
  void operator()(const msg::Usage* u) {
    if (u != nullptr)
      mix(u->prompt_tokens() + u->completion_tokens() + u->reused_tokens() +
          u->recomputed_tokens());
  }
  void operator()(const msg::PrefillTimings* t) {
    if (t != nullptr)
      mix(t->queue_us() + t->load_wait_us() + t->compute_us() + t->total_us());
  }
  void operator()(const msg::Error* e) {
    if (e != nullptr) {
      (*this)(e->code());
      (*this)(e->message());
      (*this)(e->request_id());
      mix(static_cast<uint64_t>(to_error(*e).code));
    }
  }
  void operator()(const msg::TensorHandle* t) {
    if (t == nullptr)
      return;
    (*this)(t->node()), (*this)(t->endpoint()), (*this)(t->id()), (*this)(t->dtype());
    (*this)(t->shape());
  }
  void operator()(const msg::KvHandle* k) {
    if (k == nullptr)
      return;
    (*this)(k->node()), (*this)(k->endpoint()), (*this)(k->sequence()), (*this)(k->n_tokens());
    (*this)(k->n_layers()), (*this)(k->kv_dim()), (*this)(k->dtype());
  }
  void operator()(const msg::SamplingParams* s) {
    if (s == nullptr)
      return;
    (*this)(s->max_tokens()), (*this)(s->temperature()), (*this)(s->top_p());
    if (auto seed = s->seed(); seed.has_value())
      (*this)(*seed);
    (*this)(s->stop());
  }
  void operator()(const msg::ImageSegment* img) {
    if (img == nullptr)
      return;
    (*this)(img->source_type());
    if (const auto* k = img->source_as_ImageKey())
      (*this)(k->key());
    if (const auto* d = img->source_as_ImageData())
      (*this)(d->encoded()), (*this)(d->mime());
  }
  void operator()(const msg::Segment* seg) {
    if (seg == nullptr)
      return;
    (*this)(seg->body_type());
    if (const auto* t = seg->body_as_TextSegment())
      (*this)(t->text());
    (*this)(seg->body_as_ImageSegment());
    auto plain = read_segment(*seg); // the reader must cope as well
    mix(plain.has_value());
  }
  void operator()(const msg::LookupEntry* e) {
    if (e == nullptr)
      return;
    (*this)(e->key()), (*this)(e->tier()), (*this)(e->entry_id()), (*this)(e->n_tokens());
    (*this)(e->bytes()), (*this)(e->shared());
  }
  void operator()(const msg::PlanSegment* s) {
    if (s == nullptr)
      return;
    (*this)(s->kind()), (*this)(s->token_begin()), (*this)(s->token_end()), (*this)(s->key());
    (*this)(s->entry_id()), (*this)(s->tier());
  }
  void operator()(const msg::LayerPlan* l) {
    if (l != nullptr)
      (*this)(l->leading()), (*this)(l->tokens());
  }
  void operator()(const msg::LinkPlan* p) {
    if (p == nullptr)
      return;
    (*this)(p->request_id()), (*this)(p->policy()), (*this)(p->tokens()), (*this)(p->positions());
    (*this)(p->segments()), (*this)(p->layers()), (*this)(p->recomputed_tokens());
  }
  void operator()(const msg::ActorInfo* a) {
    if (a != nullptr)
      (*this)(a->kind()), (*this)(a->name()), (*this)(a->device());
  }
  void operator()(const msg::ActorHealth* a) {
    if (a != nullptr)
      (*this)(a->name()), (*this)(a->status()), (*this)(a->queue_depth()), (*this)(a->detail());
  }

  // -- root tables ------------------------------------------------------------

  void operator()(const msg::GenerateRequest* r) {
    (*this)(r->request_id()), (*this)(r->tenant()), (*this)(r->deadline_unix_ns());
    (*this)(r->model()), (*this)(r->segments()), (*this)(r->sampling()), (*this)(r->stream());
    (*this)(r->reuse_policy());
  }
  void operator()(const msg::Cancel* r) { (*this)(r->request_id()), (*this)(r->reason()); }
  void operator()(const msg::EncodeRequest* r) {
    (*this)(r->request_id()), (*this)(r->tenant()), (*this)(r->deadline_unix_ns());
    (*this)(r->image()), (*this)(r->compile()), (*this)(r->shared());
  }
  void operator()(const msg::EncodeResult* r) {
    (*this)(r->request_id()), (*this)(r->key()), (*this)(r->n_tokens()), (*this)(r->embeddings());
    (*this)(r->encoder_cache_hit()), (*this)(r->compiled()), (*this)(r->encode_us());
    (*this)(r->error());
  }
  void operator()(const msg::TokenEvent* r) {
    (*this)(r->request_id()), (*this)(r->index()), (*this)(r->token_id()), (*this)(r->text());
    (*this)(r->finish()), (*this)(r->usage()), (*this)(r->error());
  }
  void operator()(const msg::LibraryLookup* r) {
    (*this)(r->request_id()), (*this)(r->tenant()), (*this)(r->include_shared());
    if (r->keys() != nullptr)
      for (const auto* k : *r->keys())
        (*this)(k);
  }
  void operator()(const msg::LibraryLookupResult* r) {
    (*this)(r->request_id()), (*this)(r->entries()), (*this)(r->error());
  }
  void operator()(const msg::LoadRequest* r) {
    (*this)(r->request_id()), (*this)(r->tenant()), (*this)(r->deadline_unix_ns());
    (*this)(r->key()), (*this)(r->entry_id()), (*this)(r->first_layer()), (*this)(r->n_layers());
  }
  void operator()(const msg::LayerReady* r) {
    (*this)(r->request_id()), (*this)(r->key()), (*this)(r->entry_id()), (*this)(r->layer());
    (*this)(r->k()), (*this)(r->v()), (*this)(r->load_us()), (*this)(r->error());
  }
  void operator()(const msg::StoreRequest* r) {
    (*this)(r->request_id()), (*this)(r->tenant()), (*this)(r->key()), (*this)(r->shared());
    (*this)(r->ttl_seconds()), (*this)(r->n_tokens()), (*this)(r->embeddings()), (*this)(r->kv());
  }
  void operator()(const msg::StoreResult* r) {
    (*this)(r->request_id()), (*this)(r->key()), (*this)(r->tier()), (*this)(r->bytes());
    (*this)(r->error());
  }
  void operator()(const msg::PrefillTask* r) {
    (*this)(r->request_id()), (*this)(r->tenant()), (*this)(r->deadline_unix_ns());
    (*this)(r->plan()), (*this)(r->embeddings()), (*this)(r->sampling());
    (*this)(r->decode_node());
  }
  void operator()(const msg::PrefillDone* r) {
    (*this)(r->request_id()), (*this)(r->kv()), (*this)(r->first_token());
    (*this)(r->prompt_tokens()), (*this)(r->recomputed_tokens()), (*this)(r->reused_tokens());
    (*this)(r->timings()), (*this)(r->error());
  }
  void operator()(const msg::DecodeTask* r) {
    (*this)(r->request_id()), (*this)(r->tenant()), (*this)(r->deadline_unix_ns());
    (*this)(r->kv()), (*this)(r->first_token()), (*this)(r->prompt_tokens());
    (*this)(r->sampling()), (*this)(r->stream());
  }
  void operator()(const msg::KvTransferBegin* r) {
    (*this)(r->transfer_id()), (*this)(r->request_id()), (*this)(r->source());
    (*this)(r->total_bytes()), (*this)(r->n_chunks());
  }
  void operator()(const msg::KvChunk* r) {
    (*this)(r->transfer_id()), (*this)(r->seq()), (*this)(r->layer()), (*this)(r->part());
    (*this)(r->offset()), (*this)(r->bytes()), (*this)(r->checksum());
  }
  void operator()(const msg::KvTransferEnd* r) {
    (*this)(r->transfer_id()), (*this)(r->request_id()), (*this)(r->n_chunks());
    (*this)(r->total_bytes()), (*this)(r->error());
  }
  void operator()(const msg::NodeHello* r) {
    (*this)(r->node()), (*this)(r->host()), (*this)(r->control_port()), (*this)(r->data_port());
    (*this)(r->version()), (*this)(r->model()), (*this)(r->model_fingerprint());
    (*this)(r->actors()), (*this)(r->started_unix_ns());
  }
  void operator()(const msg::Heartbeat* r) {
    (*this)(r->node()), (*this)(r->seq()), (*this)(r->sent_unix_ns());
    (*this)(r->queued_requests()), (*this)(r->running_requests()), (*this)(r->kv_cache_usage());
  }
  void operator()(const msg::Shutdown* r) {
    (*this)(r->node()), (*this)(r->reason()), (*this)(r->drain()), (*this)(r->deadline_unix_ns());
  }
  void operator()(const msg::Health* r) {
    (*this)(r->node()), (*this)(r->status()), (*this)(r->uptime_s()), (*this)(r->actors());
    (*this)(r->kv_cache_usage());
  }
};

/// Touches every field of `m` (and runs the plain-struct readers that exist
/// for its type); returns the fold of what was read.
template <class Table>
uint64_t touch_all(const fb_message<Table>& m) {
  toucher t;
  t(m.root());
  if constexpr (std::is_same_v<Table, msg::GenerateRequest>)
    t.mix(read_generate_request(m).has_value());
  if constexpr (std::is_same_v<Table, msg::TokenEvent>)
    t.mix(read_token_event(m).text.size());
  if constexpr (std::is_same_v<Table, msg::LibraryLookupResult>)
    t.mix(read_library_lookup_result(m).entries.size());
  if constexpr (std::is_same_v<Table, msg::PrefillDone>)
    t.mix(read_prefill_done(m).kv.node.size());
  return t.h;
}

} // namespace mosaic::test
