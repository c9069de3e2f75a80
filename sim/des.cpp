#include "sim/des.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <list>
#include <map>
#include <queue>
#include <set>
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

/// Tokens of one text piece estimated from its words.
double estimated_tokens(const prompt_piece& p, const cost_profile& c) {
  return std::max(1.0, std::round(double(std::count(p.text.begin(), p.text.end(), ' ') + 1) *
                                  c.tokens_per_word));
}

/// What each estimated text token counts for: 1, or where the request
/// carries the model's own count, the factor that makes the text pieces
/// add up to it (the chat template's tokens spread over the text).
double text_token_scale(const sim_request& r, const cost_profile& c) {
  if (r.prompt_tokens <= 0)
    return 1.0;
  double estimated = 0.0;
  for (const auto& p : r.pieces)
    if (!p.is_image)
      estimated += estimated_tokens(p, c);
  const double text = double(r.prompt_tokens) - double(r.n_images()) * c.image_tokens;
  return estimated > 0 && text > 0 ? text / estimated : 1.0;
}

/// Where each piece of `r` ends, in prompt tokens.
std::vector<double> piece_ends(const sim_request& r, const cost_profile& c) {
  std::vector<double> ends;
  double pos = 0;
  const double scale = text_token_scale(r, c);
  for (const auto& p : r.pieces) {
    pos += p.is_image ? double(c.image_tokens) : estimated_tokens(p, c) * scale;
    ends.push_back(pos);
  }
  return ends;
}

/// Chained signatures of the request's piece prefixes (FNV-1a): equal
/// when two prompts start with the same pieces, as the live prefix cache
/// keys blocks by everything before them.
std::vector<uint64_t> piece_signatures(const sim_request& r) {
  std::vector<uint64_t> sigs;
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* data, size_t n) {
    const auto* b = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i)
      h = (h ^ b[i]) * 1099511628211ull;
  };
  for (const auto& p : r.pieces) {
    const unsigned char kind = p.is_image ? 1 : 0;
    mix(&kind, 1);
    if (p.is_image)
      mix(&p.image, sizeof p.image);
    else
      mix(p.text.data(), p.text.size());
    sigs.push_back(h);
  }
  return sigs;
}

/// The first `cached` tokens come from the prefix cache; the policy's
/// work is what is left.
prefill_work plan_work(const sim_request& r, const cost_profile& c, const policy_spec& policy,
                       double cached = 0.0) {
  prefill_work w;
  double pos = 0;
  const double img = c.image_tokens;
  const double layers = c.n_layers;
  const double scale = text_token_scale(r, c);
  // Tokens of [begin, begin + n) past the cached prefix, and where they start.
  auto past_cache = [cached](double begin, double n) {
    const double from = std::max(begin, cached);
    return std::pair{from, std::max(0.0, begin + n - from)};
  };
  for (const auto& p : r.pieces) {
    if (!p.is_image) {
      const double n = estimated_tokens(p, c) * scale;
      const auto [from, left] = past_cache(pos, n);
      w.computed += left;
      w.attended += attended_range(from, left);
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
    case policy_kind::cacheblend: {
      // Every token through the check layer c, then the r fraction.
      const double through = std::min<double>(policy.check_layer, layers - 1) + 1;
      spread = img * through / layers + policy.ratio * img * (layers - through) / layers;
      break;
    }
    }
    // The leading tokens count from the image's first token (as the live
    // plan does when the cached prefix ends inside the image).
    const auto [lead_from, lead_left] = past_cache(pos, lead);
    const double outside = past_cache(pos, img).second / img;
    w.computed += lead_left + spread * outside;
    w.attended += attended_range(lead_from, lead_left) + spread * outside * (pos + img / 2 + 1);
    pos += img;
    w.image_tokens += int(img);
  }
  w.prompt_tokens = int(std::lround(pos));
  return w;
}

/// A node's prefix cache, piece-granular: the piece-prefix signatures of
/// the prompts it prefilled, each with the tokens it covers, least
/// recently used dropped beyond the pool's capacity in tokens.
class prefix_lru {
public:
  explicit prefix_lru(double capacity_tokens) : capacity_(capacity_tokens) {}
  /// Tokens of the longest cached piece prefix of `sigs` (rounded down to
  /// whole blocks, never the last token); marks what it used recent.
  double longest(const std::vector<uint64_t>& sigs, const std::vector<double>& ends,
                 int block_size) {
    double hit = 0.0;
    for (size_t i = 0; i < sigs.size(); ++i) {
      auto it = where_.find(sigs[i]);
      if (it == where_.end())
        break;
      order_.splice(order_.begin(), order_, it->second);
      hit = ends[i];
    }
    const double prompt = ends.empty() ? 0.0 : ends.back();
    hit = std::min(hit, prompt - 1.0);
    return std::max(0.0, std::floor(hit / block_size) * block_size);
  }
  /// Records the prompt's piece prefixes.
  void insert(const std::vector<uint64_t>& sigs, const std::vector<double>& ends) {
    for (size_t i = 0; i < sigs.size(); ++i) {
      if (where_.count(sigs[i]) != 0)
        continue;
      const double tokens = ends[i] - (i == 0 ? 0.0 : ends[i - 1]);
      order_.push_front({sigs[i], tokens});
      where_[sigs[i]] = order_.begin();
      held_ += tokens;
    }
    while (held_ > capacity_ && !order_.empty()) {
      held_ -= order_.back().second;
      where_.erase(order_.back().first);
      order_.pop_back();
    }
  }

private:
  double capacity_;
  double held_ = 0.0;
  std::list<std::pair<uint64_t, double>> order_;
  std::unordered_map<uint64_t, std::list<std::pair<uint64_t, double>>::iterator> where_;
};

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
  size_t device = 0;
  int max_batch = 1;
  int64_t step = 0; ///< steps done
  // (finish step, request index), earliest first
  std::priority_queue<std::pair<int64_t, size_t>, std::vector<std::pair<int64_t, size_t>>,
                      std::greater<>>
      active;
  std::deque<std::pair<size_t, int>> waiting; ///< (request, tokens to decode)
  int incoming = 0;                           ///< routed here, KV still in transfer
  /// Sum over active sequences of (prompt tokens - step joined): their
  /// tokens in context are this + active.size() * step.
  double context_base = 0.0;
  int load() const { return int(active.size() + waiting.size()) + incoming; }
  bool has_work() const { return !active.empty() || !waiting.empty(); }
};

/// One compute device (a node's `cpu`, or one `cuda:N` of a node): runs one
/// prefill pass or one run of decode steps at a time.
struct device {
  enum class op_kind : uint8_t { idle, prefill, decode };
  int node = 0;
  std::vector<size_t> decode_workers; ///< on this device
  bool hosts_prefill = false;
  bool cpu = false;       ///< loads take the same cores as the pass (see start_prefill)
  size_t next_decode = 0; ///< round robin over decode_workers
  op_kind op = op_kind::idle;
  op_kind last = op_kind::idle; ///< the op that ended last
  uint64_t generation = 0;      ///< bumped when the op's end moves; older events are stale
  double start = 0.0, end = 0.0;
  size_t request = 0; ///< prefill: the request
  size_t worker = 0;  ///< decode: the worker
  double step_s = 0.0;
  int64_t steps = 0; ///< decode: steps in this run
};

class simulator {
public:
  simulator(const cost_profile& c, const workload& w, const des_options& o, des_result& out)
    : c_(c), w_(w), o_(o), out_(out), recs_(out.run.records) {}

  std::vector<device> devices;
  std::vector<decode_worker> decoders;
  std::vector<ram_lru> ram;       ///< per node
  std::vector<prefix_lru> prefix; ///< per node: its KV pool's prefix cache
  int block_size = 16;
  double entry_bytes = 0.0;

  void run() {
    recs_.resize(w_.requests.size());
    join_step_.assign(w_.requests.size(), 0);
    for (size_t i = 0; i < w_.requests.size(); ++i) {
      const auto& r = w_.requests[i];
      auto& rec = recs_[i];
      rec.id = r.id;
      rec.dialogue = r.dialogue;
      rec.turn = r.turn;
      rec.arrival_s = rec.sent_s = r.arrival_s;
      rec.n_images = r.n_images();
      rec.output_tokens = r.max_tokens;
      // Off the device: front end, linker, lookup, message hops.
      push(r.arrival_s + c_.pipeline_seconds(r.n_images()), event_kind::ready, i, 0);
    }
    for (size_t d = 0; d < devices.size(); ++d)
      if (devices[d].hosts_prefill)
        idle_prefill_.insert(d);
    while (!events_.empty()) {
      const auto e = events_.top();
      events_.pop();
      ++out_.events;
      switch (e.kind) {
      case event_kind::ready:
        queue_.push_back(e.a);
        kick_prefill(e.at);
        break;
      case event_kind::device_done:
        if (devices[e.a].generation == e.b)
          finish(e.a, e.at);
        break;
      case event_kind::join:
        join(e.b, e.a, e.at);
        break;
      }
    }
    out_.run.summary = summarize(recs_, o_.objectives, 0.0, &itl_);
  }

private:
  enum class event_kind : uint8_t { ready, device_done, join };
  struct event {
    double at;
    uint64_t seq; ///< ties in time: first pushed, first processed
    event_kind kind;
    size_t a;   ///< ready: request; device_done: device; join: request
    uint64_t b; ///< device_done: generation; join: decode worker
    bool operator>(const event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };

  void push(double at, event_kind k, size_t a, uint64_t b) {
    events_.push(event{at, seq_++, k, a, b});
  }

  /// Starts queued prefills on idle devices; devices that are decoding
  /// and host a prefill worker stop at their next step boundary (on one
  /// device, a waiting prefill goes before the next decode step).
  void kick_prefill(double now) {
    while (!queue_.empty() && !idle_prefill_.empty()) {
      const size_t d = *idle_prefill_.begin();
      const size_t req = queue_.front();
      queue_.pop_front();
      start_prefill(d, req, now);
    }
    if (queue_.empty())
      return;
    for (size_t d : decoding_prefill_)
      interrupt(d, now);
  }

  void set_op(size_t d, device::op_kind op) {
    auto& dev = devices[d];
    dev.op = op;
    if (!dev.hosts_prefill)
      return;
    idle_prefill_.erase(d);
    decoding_prefill_.erase(d);
    if (op == device::op_kind::idle)
      idle_prefill_.insert(d);
    else if (op == device::op_kind::decode)
      decoding_prefill_.insert(d);
  }

  void start_prefill(size_t d, size_t i, double now) {
    auto& dev = devices[d];
    const auto& r = w_.requests[i];
    const auto ends = piece_ends(r, c_);
    // The node's prefix cache serves every policy but `full`.
    double cached = 0.0;
    if (o_.policy.kind != policy_kind::full) {
      const auto sigs = piece_signatures(r);
      auto& pc = prefix[size_t(dev.node)];
      cached = pc.longest(sigs, ends, block_size);
      pc.insert(sigs, ends);
    }
    const auto work = plan_work(r, c_, o_.policy, cached);
    recs_[i].prompt_tokens = work.prompt_tokens;
    recs_[i].image_tokens = work.image_tokens;
    // On a CPU node every hit is loaded (whatever the policy) by the
    // loader on the same cores, and the pass waits for it holding the
    // compute lock (actors/prefill_actor.cpp): the load adds to the pass.
    // On a GPU the copy overlaps the pass layer by layer, and full and
    // prefix need only the embeddings.
    // An image inside the cached prefix is not waited for.
    double load = 0.0;
    if (dev.cpu || (o_.policy.kind != policy_kind::full && o_.policy.kind != policy_kind::prefix)) {
      for (size_t k = 0; k < r.pieces.size(); ++k) {
        const auto& p = r.pieces[k];
        if (p.is_image && ends[k] > cached)
          load += entry_bytes / (ram[size_t(dev.node)].touch(p.image) ? c_.load_ram_bytes_per_s
                                                                      : c_.load_disk_bytes_per_s);
      }
    }
    const double compute = c_.node_prefill_seconds(work.computed, work.attended,
                                                   double(work.prompt_tokens) - work.computed);
    // Loads run ahead of the pass; layer l waits for its part of the load.
    dev.start = now;
    dev.end = now + (dev.cpu ? compute + load : std::max(compute, load + compute / c_.n_layers));
    dev.request = i;
    set_op(d, device::op_kind::prefill);
    push(dev.end, event_kind::device_done, d, ++dev.generation);
  }

  /// Ends the decode run of `d` at the first step boundary at or after `now`.
  void interrupt(size_t d, double now) {
    auto& dev = devices[d];
    if (dev.op != device::op_kind::decode)
      return;
    const auto k = int64_t(std::ceil((now - dev.start) / dev.step_s - 1e-9));
    const int64_t done = std::clamp<int64_t>(k, 0, dev.steps);
    if (done == dev.steps)
      return;
    dev.steps = done;
    dev.end = dev.start + double(done) * dev.step_s;
    push(dev.end, event_kind::device_done, d, ++dev.generation);
  }

  void finish(size_t d, double now) {
    auto& dev = devices[d];
    if (dev.op == device::op_kind::prefill) {
      auto& rec = recs_[dev.request];
      rec.first_token_s = now;
      rec.ok = true;
      route_to_decode(dev.request, dev.node, now);
    } else if (dev.op == device::op_kind::decode && dev.steps > 0) {
      auto& w = decoders[dev.worker];
      const int b = int(w.active.size());
      w.step += dev.steps;
      itl_.emplace_back(dev.step_s, double(dev.steps) * b);
      while (!w.active.empty() && w.active.top().first <= w.step) {
        const size_t req = w.active.top().second;
        recs_[req].end_s = now;
        w.context_base -= double(recs_[req].prompt_tokens) - double(join_step_[req]);
        w.active.pop();
      }
    }
    dev.last = dev.op;
    set_op(d, device::op_kind::idle);
    dispatch(d, now);
  }

  /// The next op of an idle device. Prefill and decode take the device's
  /// compute lock in turn, as the live actors do (actors/prefill_actor.cpp,
  /// decode_actor.cpp): when both wait, one decode step runs between two
  /// prefill passes, and a queued prefill goes before the next step.
  void dispatch(size_t d, double now) {
    auto& dev = devices[d];
    if (dev.op != device::op_kind::idle)
      return;
    int busy_workers = 0; // decode workers sharing this device take turns step by step
    for (size_t wi : dev.decode_workers)
      busy_workers += decoders[wi].has_work() ? 1 : 0;
    const bool prefill_waits = dev.hosts_prefill && !queue_.empty();
    auto prefill = [&] {
      const size_t req = queue_.front();
      queue_.pop_front();
      start_prefill(d, req, now);
    };
    if (prefill_waits && !(dev.last == device::op_kind::prefill && busy_workers > 0))
      return prefill();
    for (size_t k = 0; k < dev.decode_workers.size(); ++k) {
      const size_t wi = dev.decode_workers[(dev.next_decode + k) % dev.decode_workers.size()];
      auto& w = decoders[wi];
      admit(w, now);
      if (w.active.empty())
        continue;
      dev.next_decode = (dev.next_decode + k + 1) % dev.decode_workers.size();
      const int b = int(w.active.size());
      dev.worker = wi;
      // The context at the start of the run (it grows by b per step).
      dev.step_s = c_.decode_step_seconds(b, w.context_base + double(b) * double(w.step));
      // Steps until the next sequence ends; a join or a prefill cuts it short.
      dev.steps = busy_workers > 1 || prefill_waits ? 1 : w.active.top().first - w.step;
      dev.start = now;
      dev.end = now + double(dev.steps) * dev.step_s;
      set_op(d, device::op_kind::decode);
      push(dev.end, event_kind::device_done, d, ++dev.generation);
      return;
    }
    if (prefill_waits) // the waiting sequences all ended on admission
      prefill();
  }

  void admit(decode_worker& w, double now) {
    while (!w.waiting.empty() && int(w.active.size()) < w.max_batch) {
      auto [req, tokens] = w.waiting.front();
      w.waiting.pop_front();
      if (tokens <= 0) {
        recs_[req].end_s = std::max(recs_[req].first_token_s, now);
        continue;
      }
      w.active.emplace(w.step + tokens, req);
      join_step_[req] = w.step;
      w.context_base += double(recs_[req].prompt_tokens) - double(w.step);
    }
  }

  /// The least loaded decode worker, preferring the prefill's node.
  void route_to_decode(size_t i, int prefill_node, double now) {
    size_t best = 0;
    int best_load = INT32_MAX;
    for (size_t k = 0; k < decoders.size(); ++k) {
      const int load = decoders[k].load() * 2 + (decoders[k].node == prefill_node ? 0 : 1);
      if (load < best_load) {
        best_load = load;
        best = k;
      }
    }
    double at = now;
    if (decoders[best].node != prefill_node) {
      at += c_.kv_bytes_per_token * recs_[i].prompt_tokens / c_.transfer_bytes_per_s;
      recs_[i].first_token_s = at; // the first token leaves with the KV
    }
    ++decoders[best].incoming; // counted at once so that the next routing sees it
    if (at > now)
      push(at, event_kind::join, i, best);
    else
      join(best, i, now);
  }

  /// Request `i`'s KV is on decode worker `wi` at `now`.
  void join(uint64_t wi, size_t i, double now) {
    auto& w = decoders[wi];
    --w.incoming;
    w.waiting.emplace_back(i, recs_[i].output_tokens - 1);
    const size_t d = w.device;
    auto& dev = devices[d];
    if (dev.op == device::op_kind::idle)
      dispatch(d, now);
    else if (dev.op == device::op_kind::decode &&
             (dev.worker != wi || int(w.active.size()) < w.max_batch))
      interrupt(d, now); // joins (or takes its turn) at the next step boundary
  }

  const cost_profile& c_;
  const workload& w_;
  const des_options& o_;
  des_result& out_;
  std::vector<request_record>& recs_;
  std::vector<std::pair<double, double>> itl_;
  std::vector<int64_t> join_step_; ///< [request] decode step it joined at
  std::priority_queue<event, std::vector<event>, std::greater<>> events_;
  uint64_t seq_ = 0;
  std::deque<size_t> queue_;          ///< requests waiting for a prefill device
  std::set<size_t> idle_prefill_;     ///< idle devices with a prefill worker
  std::set<size_t> decoding_prefill_; ///< decoding devices with a prefill worker
};

} // namespace

result<des_result> simulate(const topology& topo, const cost_profile& c, const workload& w,
                            const des_options& options) {
  const auto wall0 = std::chrono::steady_clock::now();
  des_result out;
  simulator sim{c, w, options, out};
  sim.entry_bytes = c.kv_bytes_per_token * c.image_tokens;
  // Workers on the same device share it: on a node's CPU every actor
  // does (one compute thread pool), on a GPU those placed on that GPU.
  std::map<std::pair<size_t, std::string>, size_t> device_of;
  auto device_index = [&](size_t node, const device_spec& d) {
    auto [it, fresh] = device_of.try_emplace({node, d.to_string()}, sim.devices.size());
    if (fresh) {
      sim.devices.emplace_back();
      sim.devices.back().node = int(node);
      sim.devices.back().cpu = d.kind == device_spec::kind_t::cpu;
    }
    return it->second;
  };
  for (size_t n = 0; n < topo.nodes.size(); ++n) {
    double ram_gb = 0.0;
    double pool_bytes = 0.0;
    for (const auto& a : topo.nodes[n].actors) {
      if (const auto* p = a.get<prefill_spec>()) {
        sim.devices[device_index(n, p->device)].hosts_prefill = true;
        ++out.shape.prefill_workers;
      }
      if (const auto* d = a.get<decode_spec>()) {
        decode_worker dw;
        dw.node = int(n);
        dw.device = device_index(n, d->device);
        dw.max_batch = std::max(1, d->max_batch);
        pool_bytes += double(d->pool_bytes());
        sim.block_size = d->block_size;
        out.shape.decode_slots += dw.max_batch;
        sim.devices[dw.device].decode_workers.push_back(sim.decoders.size());
        sim.decoders.push_back(std::move(dw));
      }
      if (const auto* k = a.get<kv_loader_spec>())
        ram_gb += k->ram_gb;
    }
    sim.ram.emplace_back(sim.entry_bytes > 0 ? size_t(ram_gb * double(1ull << 30) / sim.entry_bytes)
                                             : 1);
    // The pool holds f32 K and V (twice the f16 bytes a library stores).
    sim.prefix.emplace_back(c.kv_bytes_per_token > 0 ? pool_bytes / (2.0 * c.kv_bytes_per_token)
                                                     : 1e18);
  }
  out.shape.nodes = int(topo.nodes.size());
  out.shape.decode_workers = int(sim.decoders.size());
  out.shape.devices = int(sim.devices.size());
  if (out.shape.prefill_workers == 0 || sim.decoders.empty())
    return make_error(errc::invalid_argument, topo.source,
                      ": the DES needs at least one prefill and one decode actor");
  sim.run();
  out.run.summary.label = options.policy.to_string();
  out.run.summary.rate = options.rate;
  out.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return out;
}

} // namespace mosaic::sim
