#include "actors/decode_actor.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <optional>
#include <random>
#include <unordered_set>

#include <caf/all.hpp>

#include "actors/pipeline_messages.hpp"
#include "engine/sampler.hpp"
#include "messages/error_convert.hpp"
#include "messages/readers.hpp"

namespace mosaic::actors {

namespace {

/// A sampled token not sent yet.
struct held_token {
  int32_t token = 0;
  std::string text;
  std::vector<wire::token_logprob> logprobs; ///< when asked for
};

/// One sequence being generated.
struct active_sequence {
  uint64_t id = 0;
  std::shared_ptr<kv_sequence> kv;
  std::unique_ptr<sampler> pick;
  caf::actor sink;
  caf::typed_response_promise<token_event_msg> rp;
  int64_t deadline_unix_ns = 0;
  uint32_t max_tokens = 0;
  std::vector<std::string> stop;
  std::string text;       ///< generated so far (for stop strings)
  uint32_t index = 0;     ///< tokens emitted
  uint32_t generated = 0; ///< tokens sampled (emitted or held back)
  /// Tokens sampled but not sent yet because their text may be the start
  /// of a stop string (OpenAI and vLLM never return any part of one):
  /// in order; their text is the tail of `text`.
  std::deque<held_token> held;
  size_t held_from = 0;      ///< where the held tokens' text starts in `text`
  bool ignore_eos = false;   ///< end-of-sequence does not end the answer
  bool include_stop = false; ///< a matched stop string is returned
  int32_t logprobs = -1;     ///< sampling.logprobs: alternatives per token; -1: none
  /// return_token_ids: the prompt's ids, sent with the first event.
  std::vector<int32_t> prompt_ids_out;
  int32_t next = 0; ///< token to feed to the next step
  uint32_t prompt_tokens = 0;
  uint32_t reused_tokens = 0;     ///< usage (from the prefill)
  uint32_t recomputed_tokens = 0; ///< usage
  uint32_t image_tokens = 0;      ///< of the prompt (last event)
  uint32_t cached_tokens = 0;     ///< usage
  uint64_t queue_us = 0;          ///< reported with the last event
  /// Position of the next token minus the sequence's length: 0, except
  /// for a compressed sequence, which holds fewer rows than positions.
  int32_t position_offset = 0;
  std::optional<msg::CompressionUsage> compression; ///< reported with the last event
  /// In the decode batch. False while the stage scheduler keeps the
  /// request in its decode queue (actors/stage_admission.hpp).
  bool joined = true;
  bool done = false;
};

struct decode_state {
  node_context* ctx = nullptr;
  std::vector<active_sequence> active;
  std::unordered_set<uint64_t> cancelled;  ///< cancels that came before their task
  std::unordered_set<uint64_t> pre_joined; ///< admitted by the scheduler before their task came
  bool step_pending = false;
  bool timer_armed = false; ///< a wake for the scheduler's decode wait threshold is due
  int64_t counted = 0;      ///< this worker's share of node_counters::decoding
  static inline const char* name = "decode";
};

using decode_actor_ptr = caf::stateful_actor<decode_state>*;

/// Ends `a`: frees its blocks, sends the last event, answers the task.
void finish(decode_actor_ptr self, active_sequence& a, msg::FinishReason reason,
            const error& err = {}) {
  if (a.done)
    return;
  a.done = true;
  a.kv.reset(); // blocks back to the pool now
  self->state.ctx->stages->release(a.id);
  auto& c = self->state.ctx->counters;
  token_event_msg last;
  if (err.code != errc::none) {
    last = make_error_event(a.id, err);
    if (err.code == errc::cancelled)
      c.cancelled++;
  } else {
    wire::token_event ev;
    ev.request_id = a.id;
    ev.index = a.index;
    ev.token_id = -1;
    ev.finish = reason;
    ev.usage =
        msg::Usage{a.prompt_tokens, a.index, a.reused_tokens, a.recomputed_tokens, a.cached_tokens};
    ev.queue_us = a.queue_us;
    ev.compression = a.compression;
    ev.image_tokens = a.image_tokens;
    ev.prompt_token_ids = std::move(a.prompt_ids_out); // no token came before
    last = make_token_event_msg(ev);
  }
  if (a.sink)
    self->send(a.sink, token_atom_v, last);
  a.rp.deliver(std::move(last));
}

/// Sends one token event of `a` (`text`: the token's, or the part of it
/// before a stop string).
void emit(decode_actor_ptr self, active_sequence& a, held_token& t, std::string text) {
  wire::token_event ev;
  ev.request_id = a.id;
  ev.index = a.index++;
  ev.token_id = t.token;
  ev.text = std::move(text);
  ev.logprobs = std::move(t.logprobs);
  ev.prompt_token_ids = std::move(a.prompt_ids_out);
  a.prompt_ids_out.clear();
  if (a.sink)
    self->send(a.sink, token_atom_v, make_token_event_msg(ev));
}

/// Sends the held tokens whose text ends at or before `upto` in a.text;
/// the one that crosses `upto` too, cut there, when `cut` (a stop string
/// starts at `upto`: nothing of it is returned).
void release_held(decode_actor_ptr self, active_sequence& a, size_t upto, bool cut) {
  while (!a.held.empty()) {
    auto& t = a.held.front();
    const size_t end = a.held_from + t.text.size();
    if (end > upto) {
      if (cut && a.held_from < upto)
        emit(self, a, t, t.text.substr(0, upto - a.held_from));
      return;
    }
    a.held_from = end;
    emit(self, a, t, std::move(t.text));
    a.held.pop_front();
  }
}

/// Length of the longest tail of a.text (past what was sent) that is a
/// proper prefix of a stop string: it may still become one.
size_t stop_prefix_at_end(const active_sequence& a) {
  const size_t unsent = a.text.size() - a.held_from;
  size_t hold = 0;
  for (const auto& s : a.stop)
    for (size_t k = s.empty() ? 0 : std::min(s.size() - 1, unsent); k > hold; --k)
      if (a.text.compare(a.text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  return hold;
}

/// Emits `token` for `a` (holding back text that may start a stop
/// string) or ends it on a stop condition. `logprobs`: its step's, when
/// the request asked for them.
void accept(decode_actor_ptr self, active_sequence& a, int32_t token,
            std::vector<wire::token_logprob> logprobs = {}) {
  const auto& tok = self->state.ctx->engine->tokenizer();
  if (token < 0)
    return finish(self, a, msg::FinishReason::error,
                  make_error(errc::internal, "the model produced no finite logits"));
  // Stop tokens (the request's stop_token_ids) end the answer unreturned.
  if ((token == tok.eos_id() && !a.ignore_eos) || a.pick->is_stop(token)) {
    release_held(self, a, a.text.size(), false);
    return finish(self, a, msg::FinishReason::stop);
  }
  std::string piece = tok.decode_piece(token);
  a.text += piece;
  a.held.push_back(held_token{token, std::move(piece), std::move(logprobs)});
  ++a.generated;
  // A stop string cannot start in text already sent: that text was
  // released only once no stop string could begin in it.
  size_t stop_at = std::string::npos;
  size_t stop_len = 0;
  for (const auto& s : a.stop) {
    const size_t at = s.empty() ? std::string::npos : a.text.find(s, a.held_from);
    if (at < stop_at) {
      stop_at = at;
      stop_len = s.size();
    }
  }
  if (stop_at != std::string::npos) {
    release_held(self, a, a.include_stop ? stop_at + stop_len : stop_at, true);
    return finish(self, a, msg::FinishReason::stop);
  }
  release_held(self, a, a.text.size() - stop_prefix_at_end(a), false);
  // The answer ends at max_tokens, or where the next token's position
  // would leave the model's context (a sliding window bounds it: past it
  // Mosaic's full attention would differ from the model's).
  const int64_t next_position = int64_t(a.kv->length()) + a.position_offset;
  if (a.generated >= a.max_tokens ||
      next_position >= self->state.ctx->engine->config().text.context_length()) {
    release_held(self, a, a.text.size(), false);
    return finish(self, a, msg::FinishReason::length);
  }
  a.next = token;
}

void schedule_step(decode_actor_ptr self) {
  auto& st = self->state;
  std::erase_if(st.active, [](const active_sequence& a) { return a.done; });
  const auto n = static_cast<int64_t>(st.active.size());
  st.ctx->counters.decoding += n - st.counted;
  st.counted = n;
  const bool any =
      std::any_of(st.active.begin(), st.active.end(), [](const auto& a) { return a.joined; });
  if (any && !st.step_pending) {
    st.step_pending = true;
    self->send(self, decode_atom_v);
  }
}

/// One continuous-batching step over the first decode_max_batch sequences.
void step(decode_actor_ptr self) {
  auto& st = self->state;
  st.step_pending = false;
  for (auto& a : st.active)
    if (!a.done && deadline_passed(a.deadline_unix_ns))
      finish(self, a, msg::FinishReason::timeout,
             make_error(errc::timeout, "request ", std::to_string(a.id),
                        " passed its deadline while decoding"));
  std::erase_if(st.active, [](const active_sequence& a) { return a.done; });
  // Sequences in the batch first; those the scheduler still queues wait.
  const auto joined_end = std::stable_partition(st.active.begin(), st.active.end(),
                                                [](const active_sequence& a) { return a.joined; });
  const auto n_joined = static_cast<size_t>(joined_end - st.active.begin());
  const size_t n = std::min(n_joined, size_t(st.ctx->options.decode_max_batch));
  if (n == 0)
    return;
  std::vector<decode_input> inputs(n);
  for (size_t i = 0; i < n; ++i)
    inputs[i] = decode_input{st.active[i].kv.get(), st.active[i].next,
                             st.active[i].kv->length() + st.active[i].position_offset};
  result<std::vector<float>> logits = make_error(errc::internal, "no step");
  {
    st.ctx->compute_mutex.lock_for_decode();
    std::lock_guard lock{st.ctx->compute_mutex, std::adopt_lock};
    logits = st.ctx->engine->decode_step(inputs);
  }
  st.ctx->counters.decode_steps++;
  if (!logits) {
    if (logits.err().code == errc::out_of_memory) {
      // The newest sequence makes room for the others.
      finish(self, st.active[n - 1], msg::FinishReason::error, logits.err());
    } else {
      for (size_t i = 0; i < n; ++i)
        finish(self, st.active[i], msg::FinishReason::error, logits.err());
    }
    return schedule_step(self);
  }
  const size_t vocab = logits->size() / n;
  const auto& tok = st.ctx->engine->tokenizer();
  for (size_t i = 0; i < n; ++i) {
    auto& a = st.active[i];
    const std::span<const float> row{logits->data() + i * vocab, vocab};
    const int32_t token = a.pick->sample(row);
    accept(self, a, token, wire_logprobs(row, token, a.logprobs, tok));
  }
  for (size_t i = 0; i < n; ++i)
    if (!st.active[i].done)
      st.ctx->stages->held(st.active[i].id, static_cast<int>(st.active[i].kv->blocks().size()));
  // Round robin when more sequences wait than one step takes.
  if (n_joined > n)
    std::rotate(st.active.begin(), st.active.begin() + static_cast<std::ptrdiff_t>(n),
                st.active.begin() + static_cast<std::ptrdiff_t>(n_joined));
  schedule_step(self);
}

/// Moves the requests the stage scheduler lets into the decode batch.
void join(decode_actor_ptr self) {
  auto& st = self->state;
  auto batch = st.ctx->stages->next(stage_kind::decode);
  for (uint64_t id : batch.requests) {
    auto it = std::find_if(st.active.begin(), st.active.end(),
                           [id](const active_sequence& a) { return a.id == id && !a.done; });
    if (it != st.active.end())
      it->joined = true;
    else
      st.pre_joined.insert(id); // its task is on its way
  }
  // A fixed batch size waits for its requests up to the policy's wait.
  const double in = st.ctx->stages->seconds_until_wake(stage_kind::decode);
  if (std::isfinite(in) && in > 0 && !st.timer_armed) {
    st.timer_armed = true;
    self->delayed_send(self,
                       std::chrono::microseconds{static_cast<int64_t>(std::max(in, 0.0) * 1e6) + 1},
                       wake_atom_v);
  }
  schedule_step(self);
}

caf::result<token_event_msg> on_task(decode_actor_ptr self, const decode_task_msg& m,
                                     const caf::actor& sink) {
  auto& st = self->state;
  const uint64_t id = m->request_id();
  auto kv = st.ctx->sequences.take(m->kv() ? m->kv()->sequence() : 0);
  if (!kv)
    return to_caf_error(
        make_error(errc::not_found, "no prefilled sequence for request ", std::to_string(id)));
  active_sequence a;
  a.id = id;
  a.kv = std::move(kv);
  const auto s = read_sampling(m->sampling());
  const auto& tok = st.ctx->engine->tokenizer();
  // The prefill worker drew the first token from `seed`; continue on a
  // different stream so that tokens 0 and 1 do not share a draw.
  sampling_params sp = engine_sampling(
      s, s.seed ? *s.seed ^ 0x9e3779b97f4a7c15ull : std::random_device{}(), tok.eos_id());
  if (auto ok = sp.validate(); !ok)
    return to_caf_error(ok.err());
  a.pick = std::make_unique<sampler>(sp);
  if (m->prompt_ids() != nullptr) {
    std::vector<int32_t> ids(m->prompt_ids()->begin(), m->prompt_ids()->end());
    if (s.repetition_penalty != 1.0f)
      a.pick->set_prompt(ids);
    if (s.return_token_ids)
      a.prompt_ids_out = std::move(ids);
  }
  a.pick->observe(m->first_token());
  a.ignore_eos = s.ignore_eos;
  a.include_stop = s.include_stop_str_in_output;
  a.logprobs = std::min(s.logprobs, wire::max_top_logprobs);
  a.sink = sink;
  a.deadline_unix_ns = m->deadline_unix_ns();
  a.max_tokens = s.max_tokens == 0 ? uint32_t(st.ctx->options.default_max_tokens) : s.max_tokens;
  a.stop = s.stop;
  a.prompt_tokens = m->prompt_tokens();
  a.reused_tokens = m->reused_tokens();
  a.recomputed_tokens = m->recomputed_tokens();
  a.image_tokens = m->image_tokens();
  a.cached_tokens = m->cached_tokens();
  a.queue_us = m->queue_us();
  if (m->position() != 0)
    a.position_offset = static_cast<int32_t>(m->position()) - a.kv->length();
  if (m->compression() != nullptr)
    a.compression = *m->compression();
  a.rp = self->make_response_promise<token_event_msg>();
  auto rp = a.rp;
  if (sink)
    self->monitor(sink);
  if (st.cancelled.erase(id) != 0) {
    finish(self, a, msg::FinishReason::cancelled,
           make_error(errc::cancelled, "request ", std::to_string(id), " was cancelled"));
    return rp;
  }
  const bool scheduled = st.ctx->stages->tracks(id);
  a.joined = !scheduled || st.pre_joined.erase(id) != 0;
  accept(self, a, m->first_token(), read_token_logprobs(m->first_logprobs()));
  if (!a.done)
    st.active.push_back(std::move(a));
  if (scheduled)
    join(self);
  schedule_step(self);
  return rp;
}

void on_cancel(decode_actor_ptr self, uint64_t id, const std::string& why) {
  auto& st = self->state;
  for (auto& a : st.active)
    if (a.id == id && !a.done) {
      finish(self, a, msg::FinishReason::cancelled,
             make_error(errc::cancelled, "request ", std::to_string(id), " was cancelled: ", why));
      return schedule_step(self);
    }
  if (st.cancelled.size() > 4096)
    st.cancelled.clear(); // cancels of requests that ended elsewhere
  st.cancelled.insert(id);
}

caf::behavior decode_actor(decode_actor_ptr self, node_context* ctx) {
  self->state.ctx = ctx;
  ctx->stages->attach(stage_kind::decode, self->address());
  self->set_down_handler([self](const caf::down_msg& dm) {
    for (auto& a : self->state.active)
      if (!a.done && a.sink && a.sink.address() == dm.source) {
        a.sink = nullptr; // gone: nothing more to send it
        finish(self, a, msg::FinishReason::cancelled,
               make_error(errc::cancelled, "the client of request ", std::to_string(a.id),
                          " went away"));
      }
    schedule_step(self);
  });
  return {
      [self](decode_atom, const decode_task_msg& m, const caf::actor& sink) {
        return on_task(self, m, sink);
      },
      [self](decode_atom) { step(self); },
      [self](wake_atom) {
        self->state.timer_armed = false;
        join(self);
      },
      [self](cancel_atom, const cancel_msg& m) {
        on_cancel(self, m->request_id(), m->reason() ? m->reason()->str() : std::string{});
      },
  };
}

} // namespace

caf::actor spawn_decode(caf::actor_system& sys, node_context* ctx) {
  return sys.spawn<caf::detached>(decode_actor, ctx);
}

} // namespace mosaic::actors
