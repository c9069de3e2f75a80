#include "engine/stage_scheduler.hpp"

#include <algorithm>
#include <limits>
#include <string>

namespace mosaic {

namespace {

size_t idx(stage_kind s) noexcept {
  return static_cast<size_t>(s);
}

int kept_tokens(const request_info& r) noexcept {
  return r.kv_keep_ratio >= 1.0f ? r.prompt_tokens : kept_count(r.prompt_tokens, r.kv_keep_ratio);
}

bool compresses(const request_info& r) noexcept {
  return r.kv_keep_ratio < 1.0f;
}

} // namespace

result<stage_scheduler> stage_scheduler::create(const memory_model& model,
                                                const schedule_policy& policy) {
  if (model.weight_bytes > model.budget_bytes)
    return make_error(errc::invalid_argument, "stage_scheduler: the weights (",
                      std::to_string(model.weight_bytes), " bytes) exceed the memory budget (",
                      std::to_string(model.budget_bytes), " bytes); raise the budget");
  if (model.kv_budget_bytes != 0 && model.kv_budget_bytes < model.kv_bytes(1))
    return make_error(errc::invalid_argument,
                      "stage_scheduler: the KV budget holds less than one block");
  if (model.kv_bytes_per_token == 0 || model.block_size < 1)
    return make_error(errc::invalid_argument,
                      "stage_scheduler: the memory model needs kv_bytes_per_token > 0 and "
                      "block_size >= 1 (build it with make_memory_model)");
  for (int b : policy.batch)
    if (b < 1)
      return make_error(errc::invalid_argument, "stage_scheduler: batch sizes must be >= 1");
  if (policy.count < 1 || !(policy.max_wait >= 0.0))
    return make_error(errc::invalid_argument,
                      "stage_scheduler: count must be >= 1 and max_wait >= 0");
  return stage_scheduler(model, policy);
}

size_t stage_scheduler::activation_of(stage_kind stage, const request_info& r) const noexcept {
  const auto prompt = static_cast<size_t>(r.prompt_tokens);
  switch (stage) {
  case stage_kind::prefill:
    return prompt * model_.prefill_act_bytes_per_token;
  case stage_kind::compress:
    return compresses(r) ? prompt * model_.compress_act_bytes_per_token : 0;
  case stage_kind::decode:
    return model_.decode_act_bytes_per_seq;
  }
  return 0;
}

size_t stage_scheduler::kv_after_compress(const request_info& r) const noexcept {
  return model_.kv_bytes(kept_tokens(r) + r.max_new_tokens);
}

size_t stage_scheduler::kv_peak(const request_info& r) const noexcept {
  if (!compresses(r))
    return model_.kv_bytes(r.prompt_tokens + r.max_new_tokens);
  return std::max(model_.kv_bytes(r.prompt_tokens) + model_.kv_bytes(kept_tokens(r)),
                  kv_after_compress(r));
}

size_t stage_scheduler::admitted_headroom() const noexcept {
  size_t h = 0;
  for (const auto& [id, e] : live_)
    if (e.admitted)
      h = std::max(h, e.max_act);
  return h;
}

status stage_scheduler::enqueue(const request_info& r, double now) {
  const std::string who = "request " + std::to_string(r.id);
  if (live_.count(r.id) != 0)
    return make_error(errc::invalid_argument, who, " is already queued or running");
  if (r.prompt_tokens < 1 || r.max_new_tokens < 0)
    return make_error(errc::invalid_argument, who,
                      " needs prompt_tokens >= 1 and max_new_tokens >= 0");
  if (!(r.kv_keep_ratio > 0.0f && r.kv_keep_ratio <= 1.0f))
    return make_error(errc::invalid_argument, who, " has kv_keep_ratio outside (0, 1]");
  entry e;
  e.info = r;
  for (auto s : {stage_kind::prefill, stage_kind::compress, stage_kind::decode})
    e.max_act = std::max(e.max_act, activation_of(s, r));
  const size_t alone = model_.weight_bytes + kv_peak(r) + e.max_act;
  if (model_.kv_budget_bytes != 0 && kv_peak(r) > model_.kv_budget_bytes)
    return make_error(errc::out_of_memory, who, " needs ", std::to_string(kv_peak(r)),
                      " bytes of KV at its peak (prompt, compressed copy, new tokens) but the "
                      "KV pool holds ",
                      std::to_string(model_.kv_budget_bytes),
                      "; shorten it, lower max_tokens or grow the pool");
  if (alone > model_.budget_bytes)
    return make_error(errc::out_of_memory, who, " needs ", std::to_string(alone),
                      " bytes even alone (weights, peak KV, activations) but the budget is ",
                      std::to_string(model_.budget_bytes), "; shorten it or compress it harder");
  e.ready_since = now;
  live_.emplace(r.id, e);
  queues_[idx(stage_kind::prefill)].push_back(r.id);
  return {};
}

bool stage_scheduler::triggered(stage_kind stage, double now) const noexcept {
  const auto& q = queues_[idx(stage)];
  if (q.empty())
    return false;
  if (policy_.kind == schedule_policy::kind_t::fcfs)
    return true;
  const size_t need = policy_.kind == schedule_policy::kind_t::fixed
                          ? static_cast<size_t>(policy_.batch[idx(stage)])
                          : static_cast<size_t>(policy_.count);
  return q.size() >= need || now >= wake_time(stage);
}

double stage_scheduler::wake_time(stage_kind stage) const noexcept {
  const auto& q = queues_[idx(stage)];
  if (q.empty())
    return std::numeric_limits<double>::infinity();
  const double wait = policy_.kind == schedule_policy::kind_t::fcfs ? 0.0 : policy_.max_wait;
  return live_.at(q.front()).ready_since + wait;
}

stage_batch stage_scheduler::next_batch(stage_kind stage, double now) {
  stage_batch b;
  b.stage = stage;
  auto& q = queues_[idx(stage)];
  if (running_[idx(stage)].active || !triggered(stage, now))
    return b;
  const memory_usage m = memory();
  if (stage == stage_kind::prefill) {
    if (policy_.kind == schedule_policy::kind_t::fcfs && in_flight() > 0)
      return b;
    // Later stages free memory: while one is held back by memory, admit
    // nothing new.
    for (auto later : {stage_kind::compress, stage_kind::decode}) {
      const auto& lq = queues_[idx(later)];
      if (!running_[idx(later)].active && triggered(later, now) &&
          activation_of(later, live_.at(lq.front()).info) > m.free())
        return b;
    }
  }
  const size_t cap = static_cast<size_t>(policy_.batch[idx(stage)]);
  size_t headroom = admitted_headroom();
  size_t kv_new = 0;
  size_t act = 0;
  for (uint64_t id : q) {
    if (b.requests.size() >= cap)
      break;
    const entry& e = live_.at(id);
    const size_t a = activation_of(stage, e.info);
    size_t kv = 0;
    if (stage == stage_kind::prefill) {
      kv = kv_peak(e.info);
      // After every batch finishes, room must remain for the largest
      // single-request activation of any admitted request.
      const size_t h = std::max(headroom, e.max_act);
      if (m.weights + m.kv_reserved + kv_new + kv + h > m.budget)
        break;
      if (model_.kv_budget_bytes != 0 &&
          m.kv_reserved + kv_external_ + kv_new + kv > model_.kv_budget_bytes)
        break;
      headroom = h;
    }
    if (m.used() + kv_new + kv + act + a > m.budget)
      break;
    kv_new += kv;
    act += a;
    b.requests.push_back(id);
  }
  if (b.requests.empty())
    return b;
  q.erase(q.begin(), q.begin() + static_cast<ptrdiff_t>(b.requests.size()));
  for (uint64_t id : b.requests) {
    entry& e = live_.at(id);
    if (stage == stage_kind::prefill) {
      e.admitted = true;
      e.kv_held = kv_peak(e.info);
    }
  }
  b.batch_id = next_batch_id_++;
  b.activation_bytes = act;
  b.kv_admitted_bytes = kv_new;
  kv_reserved_ += kv_new;
  act_reserved_ += act;
  running_[idx(stage)] = {b, true};
  return b;
}

status stage_scheduler::on_stage_done(const stage_batch& batch, double now) {
  auto& run = running_[idx(batch.stage)];
  if (!run.active || run.batch.batch_id != batch.batch_id)
    return make_error(errc::invalid_argument, "stage_scheduler: batch ",
                      std::to_string(batch.batch_id), " is not running in the ",
                      std::string(stage_name(batch.stage)), " stage");
  act_reserved_ -= run.batch.activation_bytes;
  run.active = false;
  for (uint64_t id : run.batch.requests) {
    entry& e = live_.at(id);
    e.ready_since = now;
    switch (batch.stage) {
    case stage_kind::prefill:
      queues_[idx(compresses(e.info) ? stage_kind::compress : stage_kind::decode)].push_back(id);
      break;
    case stage_kind::compress: {
      const size_t after = kv_after_compress(e.info);
      kv_reserved_ -= e.kv_held - after;
      e.kv_held = after;
      queues_[idx(stage_kind::decode)].push_back(id);
      break;
    }
    case stage_kind::decode:
      kv_reserved_ -= e.kv_held;
      completed_.push_back(id);
      live_.erase(id);
      break;
    }
  }
  return {};
}

stage_batch stage_scheduler::join_batch(stage_kind stage, double now) {
  auto& run = running_[idx(stage)];
  if (!run.active)
    return next_batch(stage, now);
  stage_batch b;
  b.stage = stage;
  b.batch_id = run.batch.batch_id;
  auto& q = queues_[idx(stage)];
  const size_t cap = static_cast<size_t>(policy_.batch[idx(stage)]);
  const size_t used = memory().used();
  size_t act = 0;
  for (uint64_t id : q) {
    if (run.batch.requests.size() + b.requests.size() >= cap)
      break;
    const size_t a = activation_of(stage, live_.at(id).info);
    if (used + act + a > model_.budget_bytes)
      break;
    act += a;
    b.requests.push_back(id);
  }
  if (b.requests.empty())
    return b;
  q.erase(q.begin(), q.begin() + static_cast<ptrdiff_t>(b.requests.size()));
  b.activation_bytes = act;
  act_reserved_ += act;
  run.batch.activation_bytes += act;
  run.batch.requests.insert(run.batch.requests.end(), b.requests.begin(), b.requests.end());
  return b;
}

status stage_scheduler::release(uint64_t id, double /*now*/) {
  auto it = live_.find(id);
  if (it == live_.end())
    return make_error(errc::not_found, "stage_scheduler: request ", std::to_string(id),
                      " is neither queued nor running");
  for (size_t s = 0; s < n_stage_kinds; ++s) {
    auto& q = queues_[s];
    q.erase(std::remove(q.begin(), q.end(), id), q.end());
    auto& run = running_[s];
    if (!run.active)
      continue;
    auto& ids = run.batch.requests;
    const auto pos = std::find(ids.begin(), ids.end(), id);
    if (pos == ids.end())
      continue;
    ids.erase(pos);
    const size_t a = std::min(activation_of(static_cast<stage_kind>(s), it->second.info),
                              run.batch.activation_bytes);
    run.batch.activation_bytes -= a;
    act_reserved_ -= a;
    if (ids.empty()) {
      act_reserved_ -= run.batch.activation_bytes;
      run.active = false;
    }
  }
  kv_reserved_ -= it->second.kv_held; // 0 when it was never admitted
  live_.erase(it);
  return {};
}

memory_usage stage_scheduler::memory() const noexcept {
  return {model_.budget_bytes, model_.weight_bytes, kv_reserved_, act_reserved_};
}

size_t stage_scheduler::queued(stage_kind stage) const noexcept {
  return queues_[idx(stage)].size();
}

bool stage_scheduler::busy(stage_kind stage) const noexcept {
  return running_[idx(stage)].active;
}

} // namespace mosaic
