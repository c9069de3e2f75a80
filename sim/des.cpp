#include "sim/des.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <list>
#include <queue>
#include <unordered_map>

namespace mosaic::sim {

namespace {

/// Tokens a policy computes for one request, and the attention work.
struct prefill_work {
  double computed = 0.0; ///< per layer, averaged over layers
  double attended = 0.0; ///< sum over computed tokens of (position + 1), averaged over layers
  int prompt_tokens = 0;
  int image_tokens = 0;
};

/// Sum of (p + 1) for p in [begin, begin + n).
double attended_range(double begin, double n) {
  return n * begin + n * (n + 1) / 2;
}

prefill_work plan_work(const sim_request& r, const cost_profile& c, const policy_spec& policy) {
  prefill_work w;
  double pos = 0;
  const double img = c.image_tokens;
  const double layers = c.n_layers;
  for (const auto& p : r.pieces) {
    if (!p.is_image) {
      const double n =
          std::max(1.0, std::round(double(std::count(p.text.begin(), p.text.end(), ' ') + 1) *
                                   c.tokens_per_word));
      w.computed += n;
      w.attended += attended_range(pos, n);
      pos += n;
      continue;
    }
    double lead = 0.0;   // leading tokens recomputed at every layer
    double spread = 0.0; // tokens recomputed spread over the image
    switch (policy.kind) {
    case policy_kind::full:
    case policy_kind::prefix:
      lead = img;
      break;
    case policy_kind::full_reuse:
      break;
    case policy_kind::mpic:
      lead = std::min<double>(policy.k, img);
      break;
    case policy_kind::vlcache:
      lead = std::round(policy.ratio * img);
      break;
    case policy_kind::cacheblend:
      spread = img / layers + policy.ratio * img * (layers - 1) / layers;
      break;
    }
    w.computed += lead + spread;
    w.attended += attended_range(pos, lead) + spread * (pos + img / 2 + 1);
    pos += img;
    w.image_tokens += int(img);
  }
  w.prompt_tokens = int(pos);
  return w;
}

/// An LRU of image ids standing for a node's RAM tier.
class ram_lru {
public:
  explicit ram_lru(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}
  /// Whether `id` was there; it is (now) the most recent either way.
  bool touch(int id) {
    auto it = where_.find(id);
    if (it != where_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      return true;
    }
    order_.push_front(id);
    where_[id] = order_.begin();
    if (order_.size() > capacity_) {
      where_.erase(order_.back());
      order_.pop_back();
    }
    return false;
  }

private:
  size_t capacity_;
  std::list<int> order_;
  std::unordered_map<int, std::list<int>::iterator> where_;
};

struct decode_worker {
  int node = 0;
  int max_batch = 1;
  double t = 0.0;   ///< time of the last step boundary processed
  int64_t step = 0; ///< steps done
  // (finish step, request index), earliest first
  std::priority_queue<std::pair<int64_t, size_t>, std::vector<std::pair<int64_t, size_t>>,
                      std::greater<>>
      active;
  std::deque<std::pair<size_t, int>> waiting; ///< (request, tokens to decode)
  int load() const { return int(active.size() + waiting.size()); }
};

class decode_model {
public:
  decode_model(const cost_profile& c, std::vector<request_record>& recs,
               std::vector<std::pair<double, double>>& itl)
    : c_(c), recs_(recs), itl_(itl) {}

  std::vector<decode_worker> workers;
  int64_t events = 0;

  /// Processes every step boundary of `w` up to time `until`.
  void advance(decode_worker& w, double until) {
    for (;;) {
      admit(w);
      if (w.active.empty())
        return;
      const int b = int(w.active.size());
      const double dt = c_.decode_step_seconds(b);
      int64_t n = w.active.top().first - w.step;
      if (!w.waiting.empty() && b < w.max_batch)
        n = 1; // someone joins at the next boundary
      if (std::isfinite(until))
        n = std::min<int64_t>(n, int64_t(std::floor((until - w.t) / dt)));
      if (n <= 0)
        return;
      w.t += double(n) * dt;
      w.step += n;
      itl_.emplace_back(dt, double(n) * b);
      ++events;
      while (!w.active.empty() && w.active.top().first <= w.step) {
        recs_[w.active.top().second].end_s = w.t;
        w.active.pop();
      }
    }
  }

  void join(decode_worker& w, size_t request, int tokens, double at) {
    if (w.active.empty())
      w.t = std::max(w.t, at); // an idle worker starts when the sequence arrives
    w.waiting.emplace_back(request, tokens);
    admit(w);
  }

private:
  void admit(decode_worker& w) {
    while (!w.waiting.empty() && int(w.active.size()) < w.max_batch) {
      auto [req, tokens] = w.waiting.front();
      w.waiting.pop_front();
      if (tokens <= 0) {
        recs_[req].end_s = std::max(recs_[req].first_token_s, w.t);
        continue;
      }
      w.active.emplace(w.step + tokens, req);
    }
  }

  const cost_profile& c_;
  std::vector<request_record>& recs_;
  std::vector<std::pair<double, double>>& itl_;
};

} // namespace

result<des_result> simulate(const topology& topo, const cost_profile& c, const workload& w,
                            const des_options& options) {
  const auto wall0 = std::chrono::steady_clock::now();
  des_result out;
  struct prefill_worker {
    int node;
    double free_at = 0.0;
  };
  std::vector<prefill_worker> prefills;
  std::vector<ram_lru> ram;
  std::vector<decode_worker> decodes;
  const double entry_bytes = c.kv_bytes_per_token * c.image_tokens;
  for (size_t n = 0; n < topo.nodes.size(); ++n) {
    double ram_gb = 0.0;
    for (const auto& a : topo.nodes[n].actors) {
      if (a.get<prefill_spec>() != nullptr)
        prefills.push_back({int(n), 0.0});
      if (const auto* d = a.get<decode_spec>()) {
        decode_worker dw;
        dw.node = int(n);
        dw.max_batch = std::max(1, d->max_batch);
        decodes.push_back(std::move(dw));
        out.shape.decode_slots += dw.max_batch;
      }
      if (const auto* k = a.get<kv_loader_spec>())
        ram_gb += k->ram_gb;
    }
    ram.emplace_back(entry_bytes > 0 ? size_t(ram_gb * double(1ull << 30) / entry_bytes) : 1);
  }
  out.shape.nodes = int(topo.nodes.size());
  out.shape.prefill_workers = int(prefills.size());
  out.shape.decode_workers = int(decodes.size());
  if (prefills.empty() || decodes.empty())
    return make_error(errc::invalid_argument, topo.source,
                      ": the DES needs at least one prefill and one decode actor");

  auto& recs = out.run.records;
  recs.resize(w.requests.size());
  std::vector<std::pair<double, double>> itl;
  // Prefill: FCFS over the workers, in arrival order.
  using slot = std::pair<double, size_t>; // (free at, worker)
  std::priority_queue<slot, std::vector<slot>, std::greater<>> free_workers;
  for (size_t i = 0; i < prefills.size(); ++i)
    free_workers.emplace(0.0, i);
  struct join_event {
    double at;
    size_t request;
    int prefill_node;
  };
  std::vector<join_event> joins;
  joins.reserve(w.requests.size());
  for (size_t i = 0; i < w.requests.size(); ++i) {
    const auto& r = w.requests[i];
    auto& rec = recs[i];
    rec.id = r.id;
    rec.dialogue = r.dialogue;
    rec.turn = r.turn;
    rec.arrival_s = rec.sent_s = r.arrival_s;
    rec.n_images = r.n_images();
    const auto work = plan_work(r, c, options.policy);
    rec.prompt_tokens = work.prompt_tokens;
    rec.image_tokens = work.image_tokens;
    rec.output_tokens = r.max_tokens;

    auto [free_at, wi] = free_workers.top();
    free_workers.pop();
    const int node = prefills[wi].node;
    double load = 0.0;
    if (options.policy.kind != policy_kind::full && options.policy.kind != policy_kind::prefix)
      for (const auto& p : r.pieces)
        if (p.is_image)
          load += entry_bytes / (ram[size_t(node)].touch(p.image) ? c.load_ram_bytes_per_s
                                                                  : c.load_disk_bytes_per_s);
    const double start = std::max(free_at, r.arrival_s);
    const double compute = c.prefill_seconds(work.computed, work.attended);
    // Loads run ahead of the pass; layer l waits for its part of the load.
    const double end = start + std::max(compute, load + compute / c.n_layers);
    free_workers.emplace(end, wi);
    rec.first_token_s = end;
    rec.ok = true;
    joins.push_back({end, i, node});
    ++out.events;
  }

  // Decode: joins in time order, each to the least loaded worker.
  std::sort(joins.begin(), joins.end(), [](const auto& a, const auto& b) { return a.at < b.at; });
  decode_model model{c, recs, itl};
  model.workers = std::move(decodes);
  for (const auto& j : joins) {
    size_t best = 0;
    int best_load = INT32_MAX;
    for (size_t k = 0; k < model.workers.size(); ++k) {
      model.advance(model.workers[k], j.at);
      const int load =
          model.workers[k].load() * 2 + (model.workers[k].node == j.prefill_node ? 0 : 1);
      if (load < best_load) {
        best_load = load;
        best = k;
      }
    }
    auto& dw = model.workers[best];
    double at = j.at;
    if (dw.node != j.prefill_node) {
      const double bytes = c.kv_bytes_per_token * recs[j.request].prompt_tokens;
      at += bytes / c.transfer_bytes_per_s;
      recs[j.request].first_token_s = at; // the first token leaves with the KV
    }
    model.join(dw, j.request, recs[j.request].output_tokens - 1, at);
  }
  for (auto& dw : model.workers)
    model.advance(dw, INFINITY);
  out.events += model.events;

  out.run.summary = summarize(recs, options.objectives, 0.0, &itl);
  out.run.summary.label = options.policy.to_string();
  out.run.summary.rate = options.rate;
  out.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return out;
}

} // namespace mosaic::sim
