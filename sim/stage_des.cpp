#include "sim/stage_des.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <vector>

#include "engine/model/builtin_model.hpp"
#include "engine/model/model_config.hpp"

namespace mosaic::sim {

namespace {

constexpr double never = std::numeric_limits<double>::infinity();

/// One request's progress through the stages.
struct flow {
  request_info info;
  int image_tokens = 0;
  int kept = 0;            ///< prompt tokens kept by compression (P without)
  int remaining = 0;       ///< decode steps still to run
  int generated = 0;       ///< tokens out so far
  size_t kv_now = 0;       ///< actual KV bytes held now
  double compress_s = 0.0; ///< its compress batch's time
  double last_token = 0.0;
};

/// The device's current operation.
struct device_op {
  enum class kind_t { idle, prefill, compress, decode_step } kind = kind_t::idle;
  stage_batch batch; ///< prefill / compress
  double start = 0.0;
  double end = never;
};

class stage_model {
public:
  stage_model(const cost_profile& c, const workload& w, const stage_des_options& o,
              stage_scheduler sched)
    : c_(c), w_(w), o_(o), s_(std::move(sched)) {}

  stage_des_result run();

private:
  double prefill_cost(const stage_batch& b) const;
  double compress_cost(const stage_batch& b) const;
  void set_kv(flow& f, size_t bytes);
  void track_peaks();
  void finish_request(uint64_t id, double now);
  bool start_op(double now, bool decode_first);
  void complete_op(double now);

  const cost_profile& c_;
  const workload& w_;
  const stage_des_options& o_;
  stage_scheduler s_;
  std::vector<request_record> recs_;
  std::unordered_map<uint64_t, flow> flows_; // by request id (= index + 1)
  std::vector<std::pair<double, double>> itl_;
  device_op op_;
  stage_batch decode_; ///< the running decode batch (empty: none)
  std::vector<uint64_t> decoding_;
  size_t kv_actual_ = 0;
  stage_des_result out_;
  double ttft_wo_sum_ = 0.0, compress_sum_ = 0.0;
  int64_t compressed_ = 0;
};

double stage_model::prefill_cost(const stage_batch& b) const {
  double t = c_.prefill_base_s;
  for (uint64_t id : b.requests) {
    const double p = flows_.at(id).info.prompt_tokens;
    t += c_.prefill_per_computed_token_s * p + c_.prefill_per_attended_token_s * p * (p + 1) / 2;
  }
  return t;
}

double stage_model::compress_cost(const stage_batch& b) const {
  const double window =
      o_.compression.method == compression_method::snapkv ? o_.compression.window : 0.0;
  const double kvpt = static_cast<double>(o_.memory.kv_bytes_per_token);
  double t = c_.prefill_base_s;
  for (uint64_t id : b.requests) {
    const double p = flows_.at(id).info.prompt_tokens;
    const double w = std::min(window, p);
    t += c_.prefill_per_computed_token_s * w + c_.prefill_per_attended_token_s * w * p +
         p * kvpt / c_.load_ram_bytes_per_s;
  }
  return t;
}

void stage_model::set_kv(flow& f, size_t bytes) {
  kv_actual_ = kv_actual_ - f.kv_now + bytes;
  f.kv_now = bytes;
}

void stage_model::track_peaks() {
  const auto m = s_.memory();
  out_.peak_kv_reserved = std::max(out_.peak_kv_reserved, m.kv_reserved);
  out_.peak_used = std::max(out_.peak_used, m.used());
  out_.peak_kv_actual = std::max(out_.peak_kv_actual, kv_actual_);
}

void stage_model::finish_request(uint64_t id, double now) {
  auto& f = flows_.at(id);
  auto& r = recs_[id - 1];
  r.end_s = now;
  r.ok = true;
  set_kv(f, 0);
}

/// Starts the next operation on the idle device; false when nothing can run.
bool stage_model::start_op(double now, bool decode_first) {
  auto try_decode = [&]() -> bool {
    if (decode_.empty()) {
      decode_ = s_.next_batch(stage_kind::decode, now);
      track_peaks();
      if (decode_.empty())
        return false;
      auto& st = out_.stages[size_t(stage_kind::decode)];
      st.batches++;
      st.requests += int64_t(decode_.requests.size());
      st.max_batch = std::max(st.max_batch, int(decode_.requests.size()));
      decoding_.clear();
      for (uint64_t id : decode_.requests) {
        if (flows_.at(id).remaining > 0)
          decoding_.push_back(id);
        else
          finish_request(id, now); // one-token answers end with their first token
      }
      if (decoding_.empty()) {
        (void)s_.on_stage_done(decode_, now);
        decode_ = {};
        return false;
      }
    }
    op_.kind = device_op::kind_t::decode_step;
    op_.start = now;
    op_.end = now + c_.decode_step_seconds(int(decoding_.size()));
    return true;
  };
  auto try_stage = [&](stage_kind stage) -> bool {
    auto b = s_.next_batch(stage, now);
    track_peaks();
    if (b.empty())
      return false;
    auto& st = out_.stages[size_t(stage)];
    st.batches++;
    st.requests += int64_t(b.requests.size());
    st.max_batch = std::max(st.max_batch, int(b.requests.size()));
    const double cost = stage == stage_kind::prefill ? prefill_cost(b) : compress_cost(b);
    for (uint64_t id : b.requests) {
      auto& f = flows_.at(id);
      if (stage == stage_kind::prefill)
        set_kv(f, o_.memory.kv_bytes(f.info.prompt_tokens));
      else
        set_kv(f, f.kv_now + o_.memory.kv_bytes(f.kept)); // both copies while compressing
    }
    track_peaks();
    op_.kind =
        stage == stage_kind::prefill ? device_op::kind_t::prefill : device_op::kind_t::compress;
    op_.batch = std::move(b);
    op_.start = now;
    op_.end = now + cost;
    return true;
  };
  // Later stages first (they free memory), decode alternating with the rest.
  if (decode_first && try_decode())
    return true;
  if (try_stage(stage_kind::compress) || try_stage(stage_kind::prefill))
    return true;
  return !decode_first && try_decode();
}

void stage_model::complete_op(double now) {
  const auto kind = op_.kind;
  out_.stages[size_t(kind == device_op::kind_t::prefill    ? stage_kind::prefill
                     : kind == device_op::kind_t::compress ? stage_kind::compress
                                                           : stage_kind::decode)]
      .busy_s += now - op_.start;
  if (kind == device_op::kind_t::decode_step) {
    std::vector<uint64_t> still;
    for (uint64_t id : decoding_) {
      auto& f = flows_.at(id);
      f.generated++;
      f.remaining--;
      itl_.emplace_back(now - f.last_token, 1.0);
      f.last_token = now;
      set_kv(f,
             o_.memory.kv_bytes(f.kept + f.generated - 1)); // the last token's KV comes next step
      if (f.remaining <= 0)
        finish_request(id, now);
      else
        still.push_back(id);
    }
    decoding_ = std::move(still);
    if (decoding_.empty()) {
      (void)s_.on_stage_done(decode_, now);
      decode_ = {};
    }
  } else {
    const bool prefill = kind == device_op::kind_t::prefill;
    for (uint64_t id : op_.batch.requests) {
      auto& f = flows_.at(id);
      auto& r = recs_[id - 1];
      const bool compresses = f.info.kv_keep_ratio < 1.0f;
      if (prefill && compresses)
        continue;
      if (!prefill) {
        set_kv(f, o_.memory.kv_bytes(f.kept)); // the uncompressed blocks are freed now
        f.compress_s = now - op_.start;        // the batch's device time
        compress_sum_ += f.compress_s;
        ++compressed_;
      }
      r.first_token_s = now;
      f.last_token = now;
      f.generated = 1;
    }
    (void)s_.on_stage_done(op_.batch, now);
  }
  op_ = {};
  track_peaks();
}

stage_des_result stage_model::run() {
  const auto wall0 = std::chrono::steady_clock::now();
  const auto& reqs = w_.requests;
  recs_.resize(reqs.size());
  std::vector<request_info> infos(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    const auto& r = reqs[i];
    auto& rec = recs_[i];
    const auto [total, image] = prompt_tokens(r, c_);
    rec.id = r.id;
    rec.dialogue = r.dialogue;
    rec.turn = r.turn;
    rec.arrival_s = rec.sent_s = r.arrival_s;
    rec.n_images = r.n_images();
    rec.prompt_tokens = total;
    rec.image_tokens = image;
    rec.output_tokens = std::max(1, r.max_tokens);
    flow f;
    f.info.id = uint64_t(i + 1);
    f.info.prompt_tokens = total;
    f.info.max_new_tokens = rec.output_tokens;
    f.info.kv_keep_ratio =
        o_.compression.enabled()
            ? kv_keep_fraction(o_.compression, image, total - image, o_.learned)
            : 1.0f;
    f.image_tokens = image;
    f.kept = f.info.kv_keep_ratio < 1.0f ? kept_count(total, f.info.kv_keep_ratio) : total;
    f.remaining = rec.output_tokens - 1;
    flows_.emplace(f.info.id, f);
  }

  size_t next = 0;
  double now = 0.0;
  bool decode_first = true;
  // Every iteration advances time or starts/ends an operation; the bound
  // only guards against a scheduler bug.
  const int64_t max_iter = int64_t(64) * int64_t(reqs.size() + 16) * 64;
  for (int64_t iter = 0; iter < max_iter; ++iter) {
    ++out_.events;
    while (next < reqs.size() && reqs[next].arrival_s <= now) {
      const uint64_t id = next + 1;
      if (auto ok = s_.enqueue(flows_.at(id).info, now); !ok) {
        recs_[next].ok = false;
        recs_[next].error = ok.err().message;
        recs_[next].end_s = now;
      }
      ++next;
    }
    if (op_.kind != device_op::kind_t::idle && op_.end <= now) {
      decode_first = op_.kind != device_op::kind_t::decode_step;
      complete_op(now);
    }
    if (op_.kind == device_op::kind_t::idle && start_op(now, decode_first))
      continue; // ends later; look at the clock again
    double t = next < reqs.size() ? reqs[next].arrival_s : never;
    if (op_.kind != device_op::kind_t::idle)
      t = std::min(t, op_.end);
    else
      for (auto st : {stage_kind::prefill, stage_kind::compress, stage_kind::decode})
        if (s_.wake_time(st) > now)
          t = std::min(t, s_.wake_time(st));
    if (t == never)
      break;
    now = std::max(now, t);
  }
  for (auto& r : recs_)
    if (!r.ok && r.error.empty()) {
      r.error = "not finished: the scheduler left it waiting";
      r.end_s = now;
    }
  for (size_t i = 0; i < recs_.size(); ++i)
    if (recs_[i].ok)
      ttft_wo_sum_ += recs_[i].ttft() - flows_.at(i + 1).compress_s;
  int64_t ok = 0;
  for (const auto& r : recs_)
    ok += r.ok ? 1 : 0;
  out_.ttft_without_compression_mean = ok > 0 ? ttft_wo_sum_ / double(ok) : 0.0;
  out_.compress_mean = compressed_ > 0 ? compress_sum_ / double(compressed_) : 0.0;
  out_.run.records = std::move(recs_);
  out_.run.summary = summarize(out_.run.records, o_.objectives, 0.0, &itl_);
  out_.run.summary.label = o_.label;
  out_.run.summary.rate = o_.rate;
  out_.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return std::move(out_);
}

} // namespace

std::pair<int, int> prompt_tokens(const sim_request& r, const cost_profile& profile) {
  int total = 0, image = 0;
  for (const auto& p : r.pieces) {
    if (p.is_image) {
      total += profile.image_tokens;
      image += profile.image_tokens;
      continue;
    }
    const double words = double(std::count(p.text.begin(), p.text.end(), ' ') + 1);
    total += std::max(1, int(std::lround(words * profile.tokens_per_word)));
  }
  return {total, image};
}

result<memory_model> profile_memory_model(const cost_profile& profile, size_t kv_budget_bytes,
                                          int block_size) {
  model_config cfg;
  if (auto preset = parse_builtin_preset(profile.model)) {
    cfg = builtin_config(*preset);
  } else {
    auto loaded = load_model_config(profile.model);
    if (!loaded)
      return make_error(
          errc::invalid_argument, "the profile's model '", profile.model,
          "' is neither a built-in model nor a directory with config.json: ", loaded.err().message);
    cfg = *loaded;
  }
  if (block_size < 1)
    return make_error(errc::invalid_argument, "block_size must be >= 1");
  kv_pool_stats pool;
  pool.block_size = block_size;
  pool.bytes_per_block = size_t(2) * size_t(cfg.text.num_layers) * size_t(cfg.text.kv_dim()) *
                         sizeof(float) * size_t(block_size);
  const size_t weights = decoder_weight_bytes(cfg.text);
  return make_memory_model(cfg.text, pool, weights + kv_budget_bytes, weights);
}

result<stage_des_result> simulate_stages(const cost_profile& profile, const workload& w,
                                         const stage_des_options& options) {
  auto sched = stage_scheduler::create(options.memory, options.schedule);
  if (!sched)
    return std::move(sched).err();
  stage_model model{profile, w, options, std::move(*sched)};
  return model.run();
}

} // namespace mosaic::sim
