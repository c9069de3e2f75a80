#include "engine/stage_scheduler.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "tests/support/small_memory_model.hpp"

namespace mosaic {
namespace {

constexpr stage_kind all_stages[] = {stage_kind::prefill, stage_kind::compress, stage_kind::decode};

using testing::small_memory_model;

stage_scheduler make(const memory_model& m, std::string_view policy) {
  auto p = parse_schedule_policy(policy);
  EXPECT_TRUE(p) << p.err().to_string();
  auto s = stage_scheduler::create(m, *p);
  EXPECT_TRUE(s) << s.err().to_string();
  return std::move(*s);
}

struct sim_report {
  size_t completed = 0;
  std::map<stage_kind, std::vector<size_t>> batch_sizes;
  size_t max_in_flight = 0;
  double end_time = 0;
};

/// Memory that really exists, kept apart from the scheduler's own books:
/// each request's KV by the stage it is in (decode counted at its end
/// size from the start) plus the activations of the running batches.
struct physical_ledger {
  const memory_model& m;
  std::map<uint64_t, request_info> info;
  std::map<uint64_t, size_t> kv;
  std::map<stage_kind, size_t> act;

  int kept(const request_info& r) const {
    return r.kv_keep_ratio < 1.0f ? kept_count(r.prompt_tokens, r.kv_keep_ratio) : r.prompt_tokens;
  }
  size_t total() const {
    size_t t = m.weight_bytes;
    for (const auto& [id, b] : kv)
      t += b;
    for (const auto& [st, b] : act)
      t += b;
    return t;
  }
  void start(const stage_batch& b) {
    size_t a = 0;
    for (uint64_t id : b.requests) {
      const auto& r = info.at(id);
      const auto p = size_t(r.prompt_tokens);
      switch (b.stage) {
      case stage_kind::prefill:
        kv[id] = m.kv_bytes(r.prompt_tokens);
        a += p * m.prefill_act_bytes_per_token;
        break;
      case stage_kind::compress:
        kv[id] += m.kv_bytes(kept(r)); // the compressed copy beside the original
        a += p * m.compress_act_bytes_per_token;
        break;
      case stage_kind::decode:
        kv[id] = m.kv_bytes(kept(r) + r.max_new_tokens);
        a += m.decode_act_bytes_per_seq;
        break;
      }
    }
    act[b.stage] = a;
  }
  void done(const stage_batch& b) {
    act.erase(b.stage);
    for (uint64_t id : b.requests) {
      if (b.stage == stage_kind::compress)
        kv[id] = m.kv_bytes(kept(info.at(id))); // the original's blocks are freed
      if (b.stage == stage_kind::decode)
        kv.erase(id);
    }
  }
};

/// Event-driven run of `n` random requests through `s`: stage durations
/// grow with the batch; after every scheduler call the memory in use must
/// stay within the budget, by the scheduler's books and by an independent
/// ledger of what physically exists.
sim_report simulate(stage_scheduler& s, std::mt19937& rng, int n, double rate) {
  std::exponential_distribution<double> gap(rate);
  std::uniform_int_distribution<int> prompt(8, 700), out(1, 64);
  std::uniform_real_distribution<float> ratio(0.1f, 1.0f);
  std::vector<std::pair<double, request_info>> arrivals;
  double t = 0;
  for (int i = 0; i < n; ++i) {
    t += gap(rng);
    request_info r{uint64_t(i + 1), prompt(rng), out(rng), 1.0f};
    if (rng() % 3 != 0)
      r.kv_keep_ratio = ratio(rng);
    arrivals.emplace_back(t, r);
  }
  sim_report rep;
  physical_ledger ledger{s.model(), {}, {}, {}};
  for (const auto& [at, r] : arrivals)
    ledger.info[r.id] = r;
  std::map<stage_kind, std::pair<double, stage_batch>> running;
  size_t next_arrival = 0;
  double now = 0;
  for (int iter = 0; iter < 200'000 && s.completed().size() < size_t(n); ++iter) {
    while (next_arrival < arrivals.size() && arrivals[next_arrival].first <= now) {
      EXPECT_TRUE(s.enqueue(arrivals[next_arrival].second, now));
      ++next_arrival;
    }
    for (auto it = running.begin(); it != running.end();) {
      if (it->second.first <= now) {
        EXPECT_TRUE(s.on_stage_done(it->second.second, now));
        ledger.done(it->second.second);
        it = running.erase(it);
      } else {
        ++it;
      }
    }
    for (auto st : all_stages) {
      if (running.count(st) != 0)
        continue;
      auto b = s.next_batch(st, now);
      EXPECT_LE(s.memory().used(), s.memory().budget) << "over-committed at t=" << now;
      if (b.empty())
        continue;
      ledger.start(b);
      EXPECT_LE(ledger.total(), s.memory().budget)
          << "physically over-committed at t=" << now << " starting a " << stage_name(st)
          << " batch of " << b.requests.size();
      rep.batch_sizes[st].push_back(b.requests.size());
      const double dur =
          0.002 + 0.001 * double(b.requests.size()) * (st == stage_kind::decode ? 8 : 1);
      running[st] = {now + dur, std::move(b)};
    }
    rep.max_in_flight = std::max(rep.max_in_flight, s.in_flight());
    double next = std::numeric_limits<double>::infinity();
    if (next_arrival < arrivals.size())
      next = arrivals[next_arrival].first;
    for (auto& [st, r] : running)
      next = std::min(next, r.first);
    for (auto st : all_stages)
      if (running.count(st) == 0 && s.wake_time(st) > now)
        next = std::min(next, s.wake_time(st));
    if (!(next < std::numeric_limits<double>::infinity()))
      break;
    now = std::max(now, next);
  }
  rep.completed = s.completed().size();
  rep.end_time = now;
  return rep;
}

TEST(stage_scheduler_test, parses_policies) {
  auto f = parse_schedule_policy("p2c2d8");
  ASSERT_TRUE(f) << f.err().to_string();
  EXPECT_EQ(f->kind, schedule_policy::kind_t::fixed);
  EXPECT_EQ(f->batch, (std::array<int, 3>{2, 2, 8}));
  auto f2 = parse_schedule_policy("p12c3d16:wait=0.2");
  ASSERT_TRUE(f2);
  EXPECT_EQ(f2->batch, (std::array<int, 3>{12, 3, 16}));
  EXPECT_DOUBLE_EQ(f2->max_wait, 0.2);
  auto d = parse_schedule_policy("dynamic:count=4,wait=0.05,max=32");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->count, 4);
  EXPECT_EQ(d->batch[2], 32);
  EXPECT_EQ(parse_schedule_policy("fcfs")->kind, schedule_policy::kind_t::fcfs);
  for (auto text : {f->to_string(), d->to_string(), std::string("fcfs")})
    EXPECT_EQ(parse_schedule_policy(text)->to_string(), text);
  for (const char* bad :
       {"p2c2", "p0c1d1", "dyn", "fcfs:wait=1", "p1c1d1x", "dynamic:count=0", "p1c1d1:count=2",
        "dynamic:wait=inf", "p1c1d1:wait=1e300", "dynamic:wait=nan", "dynamic:wait=3601"}) {
    auto r = parse_schedule_policy(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.err().code, errc::invalid_argument);
  }
}

TEST(stage_scheduler_test, memory_model_follows_the_pool_geometry) {
  text_config cfg;
  cfg.num_layers = 4;
  cfg.hidden_size = 64;
  cfg.num_heads = 4;
  cfg.num_kv_heads = 2;
  kv_pool_stats st;
  st.block_size = 16;
  st.bytes_per_block = size_t(2) * 4 * 16 * cfg.kv_dim() * sizeof(float);
  const auto m = make_memory_model(cfg, st, 1 << 30, decoder_weight_bytes(cfg));
  EXPECT_EQ(m.kv_bytes_per_token, size_t(2) * 4 * cfg.kv_dim() * sizeof(float));
  EXPECT_EQ(m.kv_bytes(1), 16 * m.kv_bytes_per_token); // whole blocks
  EXPECT_EQ(m.kv_bytes(17), 32 * m.kv_bytes_per_token);
  EXPECT_GT(m.weight_bytes, size_t(cfg.vocab_size) * cfg.hidden_size * 4);
  EXPECT_GT(m.prefill_act_bytes_per_token, 0u);
  EXPECT_FLOAT_EQ(kv_keep_fraction(*parse_compression("keynorm:img=0.25,txt=0.5"), 40, 20),
                  (10.0f + 10.0f) / 60.0f);
  EXPECT_FLOAT_EQ(kv_keep_fraction(*parse_compression("none"), 40, 20), 1.0f);
  // learned: one row per group, leftovers kept; unknown groups keep all.
  const auto learned = *parse_compression("learned");
  EXPECT_FLOAT_EQ(kv_keep_fraction(learned, 40, 20), 1.0f);
  EXPECT_FLOAT_EQ(kv_keep_fraction(learned, 40, 20, {4, 1}), (10.0f + 20.0f) / 60.0f);
  EXPECT_FLOAT_EQ(kv_keep_fraction(learned, 42, 21, {4, 2}), (10 + 2 + 10 + 1) / 63.0f);
}

TEST(stage_scheduler_test, never_over_commits_and_completes_everything_under_random_load) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (const char* policy :
       {"dynamic", "dynamic:count=4,wait=0.01", "fcfs", "p1c1d8", "p2c2d8", "p3c3d6", "p4c4d8"}) {
    for (int round = 0; round < 6; ++round) {
      SCOPED_TRACE(std::string(policy) + " round " + std::to_string(round));
      // Budgets from "one long request at a time" to roomy.
      const size_t budget = 100'000 + 1'800'000 + size_t(rng() % 8'000'000);
      auto s = make(small_memory_model(budget), policy);
      const int n = 40 + int(rng() % 40);
      const double rate = 10.0 + double(rng() % 400);
      const auto rep = simulate(s, rng, n, rate);
      ASSERT_EQ(rep.completed, size_t(n)) << "starved: " << n - rep.completed << " left";
      std::set<uint64_t> ids(s.completed().begin(), s.completed().end());
      EXPECT_EQ(ids.size(), size_t(n));
      EXPECT_EQ(s.memory().kv_reserved, 0u);
      EXPECT_EQ(s.memory().activations, 0u);
      const auto pol = *parse_schedule_policy(policy);
      for (auto st : all_stages) {
        const auto& sizes =
            rep.batch_sizes.count(st) ? rep.batch_sizes.at(st) : std::vector<size_t>{};
        for (size_t b : sizes)
          EXPECT_LE(b, size_t(pol.batch[size_t(st)]));
      }
      if (pol.kind == schedule_policy::kind_t::fcfs) {
        EXPECT_EQ(rep.max_in_flight, 1u);
      }
    }
  }
}

TEST(stage_scheduler_test, fixed_batches_fill_to_their_size_under_load) {
  auto s = make(small_memory_model(1'000'000'000), "p2c2d8");
  for (uint64_t i = 1; i <= 16; ++i)
    ASSERT_TRUE(s.enqueue({i, 100, 8, 0.5f}, 0.0));
  auto p = s.next_batch(stage_kind::prefill, 0.0);
  EXPECT_EQ(p.requests.size(), 2u);
  EXPECT_TRUE(s.next_batch(stage_kind::prefill, 0.0).empty()); // one batch per stage
  ASSERT_TRUE(s.on_stage_done(p, 0.1));
  // Two compress candidates: exactly 2; decode waits for 8 (or the timeout).
  auto c = s.next_batch(stage_kind::compress, 0.1);
  EXPECT_EQ(c.requests.size(), 2u);
  ASSERT_TRUE(s.on_stage_done(c, 0.2));
  EXPECT_TRUE(s.next_batch(stage_kind::decode, 0.2).empty());
  auto late = s.next_batch(stage_kind::decode, 0.2 + 0.5);
  EXPECT_EQ(late.requests.size(), 2u); // max_wait passed: what is there
}

TEST(stage_scheduler_test, dynamic_batches_grow_with_free_memory) {
  const auto m = small_memory_model(0);
  // Each request: 200 prompt tokens, 16 new, no compression →
  // kv_bytes(216) = 224 * 1024 bytes, activations 200 * 512.
  const size_t one = m.kv_bytes(216) + 200 * m.prefill_act_bytes_per_token;
  for (size_t fit : {1, 3, 7, 20}) {
    auto mm = m;
    mm.budget_bytes = m.weight_bytes + fit * one + 1000;
    auto s = make(mm, "dynamic");
    for (uint64_t i = 1; i <= 20; ++i)
      ASSERT_TRUE(s.enqueue({i, 200, 16, 1.0f}, 0.0));
    auto b = s.next_batch(stage_kind::prefill, 0.0);
    // Every admitted request keeps room for one activation set, so `fit`
    // memory units admit fit - ... at most fit, at least one.
    EXPECT_LE(b.requests.size(), fit);
    EXPECT_GE(b.requests.size(), std::max<size_t>(1, fit - 1));
    EXPECT_LE(s.memory().used(), s.memory().budget);
  }
}

TEST(stage_scheduler_test, compression_releases_the_dropped_kv) {
  const auto m = small_memory_model(1'000'000'000);
  auto s = make(m, "dynamic");
  ASSERT_TRUE(s.enqueue({7, 640, 32, 0.25f}, 0.0));
  auto p = s.next_batch(stage_kind::prefill, 0.0);
  ASSERT_EQ(p.requests.size(), 1u);
  // Peak: the full prompt plus the kept quarter while compressing.
  EXPECT_EQ(s.memory().kv_reserved, m.kv_bytes(640) + m.kv_bytes(160));
  ASSERT_TRUE(s.on_stage_done(p, 1.0));
  auto c = s.next_batch(stage_kind::compress, 1.0);
  ASSERT_EQ(c.requests.size(), 1u);
  ASSERT_TRUE(s.on_stage_done(c, 2.0));
  EXPECT_EQ(s.memory().kv_reserved, m.kv_bytes(160 + 32));
  auto d = s.next_batch(stage_kind::decode, 2.0);
  ASSERT_TRUE(s.on_stage_done(d, 3.0));
  EXPECT_EQ(s.memory().used(), m.weight_bytes);
  EXPECT_EQ(s.completed(), std::vector<uint64_t>{7});
}

TEST(stage_scheduler_test, a_kv_budget_and_outside_blocks_limit_admission) {
  auto m = small_memory_model(1'000'000'000);
  m.kv_budget_bytes = m.kv_bytes(200);
  auto s = make(m, "dynamic");
  // Alone over the KV budget: refused at once with the sizes.
  const auto big = s.enqueue({9, 190, 20, 1.0f}, 0.0);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.err().code, errc::out_of_memory);
  EXPECT_NE(big.err().message.find("grow the pool"), std::string::npos) << big.err().message;
  for (uint64_t id = 1; id <= 3; ++id)
    ASSERT_TRUE(s.enqueue({id, 80, 8, 1.0f}, 0.0));
  s.set_kv_external(m.kv_bytes(100)); // blocks someone else holds
  auto b = s.next_batch(stage_kind::prefill, 0.0);
  EXPECT_EQ(b.requests.size(), 1u) << "only one 88-token request fits next to 100 outside";
  EXPECT_LE(s.memory().kv_reserved + m.kv_bytes(100), m.kv_budget_bytes);
  ASSERT_TRUE(s.on_stage_done(b, 1.0));
  s.set_kv_external(0);
  auto b2 = s.next_batch(stage_kind::prefill, 1.0);
  EXPECT_EQ(b2.requests.size(), 1u) << "two fit in 200 tokens, the third waits";
  EXPECT_LE(s.memory().kv_reserved, m.kv_budget_bytes);
}

TEST(stage_scheduler_test, release_and_join_give_continuous_decode) {
  const auto m = small_memory_model(1'000'000'000);
  auto s = make(m, "dynamic:max=2");
  for (uint64_t id = 1; id <= 3; ++id)
    ASSERT_TRUE(s.enqueue({id, 16, 4, 1.0f}, 0.0));
  auto p = s.next_batch(stage_kind::prefill, 0.0);
  ASSERT_EQ(p.requests.size(), 2u);
  ASSERT_TRUE(s.on_stage_done(p, 0.1));
  auto d = s.join_batch(stage_kind::decode, 0.1);
  ASSERT_EQ(d.requests.size(), 2u);
  auto p3 = s.next_batch(stage_kind::prefill, 0.2);
  ASSERT_EQ(p3.requests, std::vector<uint64_t>{3});
  ASSERT_TRUE(s.on_stage_done(p3, 0.3));
  EXPECT_TRUE(s.join_batch(stage_kind::decode, 0.3).empty()) << "the batch is at its cap";
  // Request 1 ends early: its KV goes and 3 joins the running batch.
  const size_t before = s.memory().kv_reserved;
  ASSERT_TRUE(s.release(1, 0.4));
  EXPECT_EQ(s.memory().kv_reserved, before - m.kv_bytes(20));
  EXPECT_FALSE(s.tracks(1));
  auto j = s.join_batch(stage_kind::decode, 0.4);
  ASSERT_EQ(j.requests, std::vector<uint64_t>{3});
  EXPECT_EQ(j.batch_id, d.batch_id);
  ASSERT_TRUE(s.release(2, 0.5));
  ASSERT_TRUE(s.release(3, 0.5));
  EXPECT_FALSE(s.busy(stage_kind::decode)) << "an emptied batch ends";
  EXPECT_EQ(s.memory().used(), m.weight_bytes);
  EXPECT_EQ(s.release(3, 0.6).err().code, errc::not_found);
  // A queued request that leaves before admission held nothing.
  ASSERT_TRUE(s.enqueue({4, 16, 4, 1.0f}, 1.0));
  ASSERT_TRUE(s.release(4, 1.0));
  EXPECT_EQ(s.queued(stage_kind::prefill), 0u);
  EXPECT_EQ(s.memory().used(), m.weight_bytes);
}

TEST(stage_scheduler_test, rejects_bad_requests_and_foreign_batches) {
  auto s = make(small_memory_model(1'000'000), "dynamic");
  ASSERT_TRUE(s.enqueue({1, 10, 1, 1.0f}, 0.0));
  EXPECT_EQ(s.enqueue({1, 10, 1, 1.0f}, 0.0).err().code, errc::invalid_argument);
  EXPECT_EQ(s.enqueue({2, 0, 1, 1.0f}, 0.0).err().code, errc::invalid_argument);
  EXPECT_EQ(s.enqueue({3, 10, 1, 0.0f}, 0.0).err().code, errc::invalid_argument);
  EXPECT_EQ(s.enqueue({4, 100'000, 1, 1.0f}, 0.0).err().code, errc::out_of_memory);
  stage_batch foreign;
  foreign.batch_id = 99;
  EXPECT_FALSE(s.on_stage_done(foreign, 0.0));
  auto w = small_memory_model(10);
  EXPECT_FALSE(stage_scheduler::create(w, schedule_policy{}));
}

} // namespace
} // namespace mosaic
