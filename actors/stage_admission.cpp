#include "actors/stage_admission.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

#include "actors/node_context.hpp"
#include "messages/caf_types.hpp"

namespace mosaic::actors {

namespace {

size_t idx(stage_kind s) noexcept {
  return static_cast<size_t>(s);
}

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// A ratio the scheduler treats as "passes the compress stage" while
/// reserving (almost) the whole prompt again for the compressed copy.
constexpr float keeps_all = 0.9999f;

} // namespace

result<std::unique_ptr<stage_admission>>
stage_admission::create(const std::optional<schedule_policy>& policy, const text_config& cfg,
                        const kv_pool& pool, const node_options& o, learned_groups learned) {
  std::unique_ptr<stage_admission> a{new stage_admission(pool)};
  a->learned_ = learned;
  a->t0_ns_ = steady_ns();
  a->block_size_ = pool.block_size();
  a->default_max_tokens_ = o.default_max_tokens;
  a->stats_.policy = policy ? policy->to_string() : "off";
  const auto ps = pool.stats();
  a->stats_.kv_budget_bytes = ps.bytes_total;
  if (!policy)
    return a;
  // The budget is the pool plus the weights plus room for the activations
  // of one full prefill pass, a compress pass and a full decode step: the
  // engine runs one pass at a time, so more would be fiction; the pool is
  // what a live batch can exhaust.
  const size_t weights = decoder_weight_bytes(cfg);
  memory_model m = make_memory_model(cfg, ps, 0, weights);
  // A pass's activations are one chunk's (the whole prompt without chunking).
  const int longest = o.prefill_max_tokens > 0 ? o.prefill_max_tokens : cfg.context_length();
  const auto max_prompt = static_cast<size_t>(std::max(
      1, o.prefill_chunk_tokens > 0 ? std::min(o.prefill_chunk_tokens, longest) : longest));
  const size_t activations =
      max_prompt * m.prefill_act_bytes_per_token + max_prompt * m.compress_act_bytes_per_token +
      static_cast<size_t>(std::max(1, o.decode_max_batch)) * m.decode_act_bytes_per_seq;
  m.budget_bytes = weights + ps.bytes_total + activations;
  m.kv_budget_bytes = ps.bytes_total;
  auto s = stage_scheduler::create(m, *policy);
  if (!s)
    return std::move(s).err();
  a->sched_.emplace(std::move(*s));
  a->stats_.scheduled = true;
  return a;
}

double stage_admission::now() const {
  return static_cast<double>(steady_ns() - t0_ns_) * 1e-9;
}

void stage_admission::attach(stage_kind stage, caf::actor_addr actor) {
  std::lock_guard lock{mutex_};
  actors_[idx(stage)] = std::move(actor);
}

void stage_admission::wake(stage_kind stage) const {
  caf::actor_addr addr;
  {
    std::lock_guard lock{mutex_};
    addr = actors_[idx(stage)];
  }
  if (auto a = caf::actor_cast<caf::actor>(addr))
    caf::anon_send(a, wake_atom_v);
}

void stage_admission::wake_queued() {
  std::vector<stage_kind> stages;
  {
    std::lock_guard lock{mutex_};
    if (!sched_)
      return;
    for (auto s : {stage_kind::prefill, stage_kind::compress, stage_kind::decode})
      if (sched_->queued(s) > 0)
        stages.push_back(s);
  }
  for (auto s : stages)
    wake(s);
}

request_info stage_admission::request_of(const prefill_job& job) const {
  request_info r;
  r.id = job.request_id;
  int image_tokens = 0;
  for (const auto& img : job.images)
    image_tokens += img.n_tokens;
  const int text_tokens =
      std::max(0, static_cast<int>(job.ids.size()) - static_cast<int>(job.images.size()));
  r.prompt_tokens = std::max(1, image_tokens + text_tokens);
  r.max_new_tokens = job.sampling.max_tokens == 0 ? default_max_tokens_
                                                  : static_cast<int>(job.sampling.max_tokens);
  if (!job.compression.enabled())
    return r;
  const float f = kv_keep_fraction(job.compression, image_tokens, text_tokens, learned_);
  const double kept = std::ceil(static_cast<double>(f) * r.prompt_tokens) + block_size_;
  r.kv_keep_ratio =
      std::min(keeps_all, static_cast<float>(kept / static_cast<double>(r.prompt_tokens)));
  return r;
}

status stage_admission::enqueue(const request_info& request) {
  std::lock_guard lock{mutex_};
  if (!sched_)
    return make_error(errc::internal, "stage_admission: no scheduler on this node");
  auto ok = sched_->enqueue(request, now());
  if (!ok)
    stats_.refused++;
  return ok;
}

stage_batch stage_admission::next(stage_kind stage) {
  std::lock_guard lock{mutex_};
  if (!sched_) {
    stage_batch none;
    none.stage = stage;
    return none;
  }
  const double t = now();
  if (stage == stage_kind::prefill) {
    // Pool blocks nobody scheduled holds: the pool's count minus what the
    // scheduled requests reported (an over-estimate while decode grows
    // sequences between reports, so admission errs on the safe side).
    const auto ps = pool_->stats();
    const int outside = std::max(0, ps.blocks_used - held_total_);
    const size_t ext = static_cast<size_t>(outside) * ps.bytes_per_block;
    sched_->set_kv_external(ext);
    stats_.kv_external_high_water = std::max(stats_.kv_external_high_water, ext);
  }
  auto b =
      stage == stage_kind::decode ? sched_->join_batch(stage, t) : sched_->next_batch(stage, t);
  if (stage == stage_kind::prefill)
    blocked_outside_ =
        b.empty() && sched_->queued(stage) > 0 && !sched_->busy(stage) && sched_->in_flight() == 0;
  if (!b.empty()) {
    const size_t s = idx(stage);
    stats_.batches[s]++;
    stats_.requests[s] += b.requests.size();
    stats_.max_batch[s] = std::max<uint64_t>(stats_.max_batch[s], b.requests.size());
    stats_.kv_reserved_high_water =
        std::max(stats_.kv_reserved_high_water, sched_->memory().kv_reserved);
  }
  return b;
}

void stage_admission::done(const stage_batch& batch) {
  {
    std::lock_guard lock{mutex_};
    if (!sched_)
      return;
    // Every request of the batch may have left already (release ended it).
    if (sched_->busy(batch.stage))
      (void)sched_->on_stage_done(batch, now());
  }
  wake_queued();
}

void stage_admission::release(uint64_t id) {
  {
    std::lock_guard lock{mutex_};
    if (!sched_ || !sched_->tracks(id))
      return;
    (void)sched_->release(id, now());
    if (auto it = held_blocks_.find(id); it != held_blocks_.end()) {
      held_total_ -= it->second;
      held_blocks_.erase(it);
    }
  }
  wake_queued();
}

void stage_admission::held(uint64_t id, int blocks) {
  std::lock_guard lock{mutex_};
  if (!sched_ || !sched_->tracks(id))
    return;
  int& h = held_blocks_[id];
  held_total_ += blocks - h;
  h = blocks;
}

bool stage_admission::tracks(uint64_t id) const {
  std::lock_guard lock{mutex_};
  return sched_ && sched_->tracks(id);
}

double stage_admission::seconds_until_wake(stage_kind stage) const {
  std::lock_guard lock{mutex_};
  if (!sched_)
    return std::numeric_limits<double>::infinity();
  return sched_->wake_time(stage) - now();
}

bool stage_admission::blocked_outside() const {
  std::lock_guard lock{mutex_};
  return blocked_outside_;
}

stage_admission_stats stage_admission::stats() const {
  std::lock_guard lock{mutex_};
  auto s = stats_;
  if (sched_)
    s.kv_reserved_bytes = sched_->memory().kv_reserved;
  return s;
}

} // namespace mosaic::actors
