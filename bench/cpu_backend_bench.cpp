// CPU backend throughput at the shapes of a 2,000-token prefill of the
// built-in small LLaVA decoder (8 layers, width 512, 8 heads of 64, 2 kv
// heads, MLP 1408) and of batch-16 decode, each next to the OpenBLAS sgemm
// peak measured in the same process:
//
//   attention_2000: 61.2 GFLOP/s = 0.52 of sgemm peak 117.3 GFLOP/s
//
// Usage: mosaic_cpu_backend_bench [--threads N] [google-benchmark flags]

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/sgemm_peak.hpp"
#include "engine/cpu/cpu_backend.hpp"

namespace mosaic::bench {
namespace {

// -- model geometry (builtin:small's decoder) -----------------------------------

constexpr int tokens = 2000;
constexpr int hidden = 512;
constexpr int n_heads = 8;
constexpr int n_kv_heads = 2;
constexpr int head_dim = 64;
constexpr int kv_dim = n_kv_heads * head_dim;
constexpr int mlp = 1408;

/// One measured figure: a rate in GFLOP/s (compared with the sgemm peak)
/// or GB/s.
struct figure {
  double rate = 0.0;
  bool flops = true;
};

struct bench_context {
  std::unique_ptr<backend> be;
  /// The same backend with attention's tiles on OpenBLAS sgemm
  /// (MOSAIC_ATTENTION_TILES=0): the baseline of the tile kernels.
  std::unique_ptr<backend> be_sgemm;
  std::map<std::string, figure> figures;
  std::mt19937 rng{42};

  device_buffer random_buffer(size_t n, float lo = -1.0f, float hi = 1.0f) {
    std::uniform_real_distribution<float> dist{lo, hi};
    std::vector<float> host(n);
    for (auto& x : host)
      x = dist(rng);
    auto buf = be->allocate(n * sizeof(float));
    if (!buf || !be->upload(buf->data(), host.data(), n * sizeof(float))) {
      std::fprintf(stderr, "cannot allocate %zu floats on the cpu backend\n", n);
      std::exit(1);
    }
    return std::move(buf).value();
  }

  device_buffer int_buffer(const std::vector<int32_t>& host) {
    auto buf = be->allocate(host.size() * sizeof(int32_t));
    if (!buf || !be->upload(buf->data(), host.data(), host.size() * sizeof(int32_t))) {
      std::fprintf(stderr, "cannot allocate %zu ints on the cpu backend\n", host.size());
      std::exit(1);
    }
    return std::move(buf).value();
  }
};

/// Times the loop of `state` around `body` and records `work` units (flops
/// or bytes) per iteration as a rate under `name`.
template <class Body>
void timed_loop(benchmark::State& state, bench_context& ctx, const std::string& name, double work,
                bool flops, Body&& body) {
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    body();
    benchmark::ClobberMemory();
  }
  (void)ctx.be->synchronize();
  const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
  const double rate = work * static_cast<double>(state.iterations()) / dt.count() * 1e-9;
  state.counters[flops ? "GFLOP/s" : "GB/s"] = rate;
  // Best of the repetitions, like the sgemm peak it is compared with: on a
  // shared machine the best run is the one least disturbed by others.
  auto& fig = ctx.figures[name];
  fig = figure{std::max(fig.rate, rate), flops};
}

// -- benchmarks -------------------------------------------------------------------

void matmul(benchmark::State& state, bench_context& ctx, const std::string& name, int m, int n,
            int k) {
  auto a = ctx.random_buffer(static_cast<size_t>(m) * k);
  auto w = ctx.random_buffer(static_cast<size_t>(n) * k); // PyTorch Linear weight [n, k]
  auto c = ctx.random_buffer(static_cast<size_t>(m) * n);
  timed_loop(state, ctx, name, 2.0 * m * n * k, true,
             [&] { ctx.be->matmul(a.f32(), w.f32(), c.f32(), m, n, k, true); });
}

/// Attention flops counted on the visible (query, key) pairs only.
double attention_flops(const std::vector<int32_t>& q_pos, const std::vector<int32_t>& k_pos) {
  double pairs = 0.0;
  for (int32_t qp : q_pos)
    pairs += static_cast<double>(std::upper_bound(k_pos.begin(), k_pos.end(), qp) - k_pos.begin());
  return pairs * n_heads * head_dim * 4.0; // Q K^T and P V
}

void attention(benchmark::State& state, bench_context& ctx, const std::string& name, int nq,
               bool sgemm_tiles = false) {
  std::vector<int32_t> k_pos(tokens);
  std::iota(k_pos.begin(), k_pos.end(), 0);
  std::vector<int32_t> q_pos = k_pos;
  if (nq < tokens) { // a link plan: any subset of rows, the last token included
    std::shuffle(q_pos.begin(), q_pos.end() - 1, ctx.rng);
    q_pos.erase(q_pos.begin() + nq - 1, q_pos.end() - 1);
    std::sort(q_pos.begin(), q_pos.end());
  }
  auto q = ctx.random_buffer(static_cast<size_t>(nq) * n_heads * head_dim);
  auto k = ctx.random_buffer(static_cast<size_t>(tokens) * kv_dim);
  auto v = ctx.random_buffer(static_cast<size_t>(tokens) * kv_dim);
  auto out = ctx.random_buffer(static_cast<size_t>(nq) * n_heads * head_dim);
  auto dq_pos = ctx.int_buffer(q_pos);
  auto dk_pos = ctx.int_buffer(k_pos);
  attention_args args;
  args.q = q.f32();
  args.k = k.f32();
  args.v = v.f32();
  args.out = out.f32();
  args.q_pos = dq_pos.i32();
  args.k_pos = dk_pos.i32();
  args.nq = nq;
  args.nk = tokens;
  args.n_heads = n_heads;
  args.n_kv_heads = n_kv_heads;
  args.head_dim = head_dim;
  args.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  backend& be = sgemm_tiles ? *ctx.be_sgemm : *ctx.be;
  timed_loop(state, ctx, name, attention_flops(q_pos, k_pos), true,
             [&] { (void)be.attention(args); });
}

void paged_attention(benchmark::State& state, bench_context& ctx, const std::string& name,
                     int n_seqs, int context) {
  constexpr int block_size = 16;
  const int blocks_per_seq = (context + block_size - 1) / block_size;
  const int n_blocks = n_seqs * blocks_per_seq;
  std::vector<int32_t> table(static_cast<size_t>(n_blocks));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), ctx.rng); // blocks scattered over the pool
  auto k_pool = ctx.random_buffer(static_cast<size_t>(n_blocks) * block_size * kv_dim);
  auto v_pool = ctx.random_buffer(static_cast<size_t>(n_blocks) * block_size * kv_dim);
  auto q = ctx.random_buffer(static_cast<size_t>(n_seqs) * n_heads * head_dim);
  auto out = ctx.random_buffer(static_cast<size_t>(n_seqs) * n_heads * head_dim);
  auto tables = ctx.int_buffer(table);
  auto lens = ctx.int_buffer(std::vector<int32_t>(static_cast<size_t>(n_seqs), context));
  paged_attention_args args;
  args.q = q.f32();
  args.k_pool = k_pool.f32();
  args.v_pool = v_pool.f32();
  args.block_tables = tables.i32();
  args.seq_lens = lens.i32();
  args.out = out.f32();
  args.n_seqs = n_seqs;
  args.max_blocks_per_seq = blocks_per_seq;
  args.block_size = block_size;
  args.n_heads = n_heads;
  args.n_kv_heads = n_kv_heads;
  args.head_dim = head_dim;
  args.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const double kv_bytes = 2.0 * n_seqs * context * kv_dim * sizeof(float);
  timed_loop(state, ctx, name, kv_bytes, false, [&] { ctx.be->paged_attention(args); });
}

/// One decoder layer of a plain 2,000-token prefill, op for op as the
/// forward pass runs it: the figure the 60%-of-peak target is about.
void prefill_layer(benchmark::State& state, bench_context& ctx, const std::string& name) {
  auto& be = *ctx.be;
  auto x = ctx.random_buffer(static_cast<size_t>(tokens) * hidden);
  auto h = ctx.random_buffer(static_cast<size_t>(tokens) * hidden);
  auto norm_w = ctx.random_buffer(hidden, 0.5f, 1.5f);
  auto w_qkv = ctx.random_buffer(static_cast<size_t>(hidden + 2 * kv_dim) * hidden, -0.05f, 0.05f);
  auto w_o = ctx.random_buffer(static_cast<size_t>(hidden) * hidden, -0.05f, 0.05f);
  auto w_gate = ctx.random_buffer(static_cast<size_t>(mlp) * hidden, -0.05f, 0.05f);
  auto w_up = ctx.random_buffer(static_cast<size_t>(mlp) * hidden, -0.05f, 0.05f);
  auto w_down = ctx.random_buffer(static_cast<size_t>(hidden) * mlp, -0.05f, 0.05f);
  auto qkv = ctx.random_buffer(static_cast<size_t>(tokens) * (hidden + 2 * kv_dim));
  auto attn = ctx.random_buffer(static_cast<size_t>(tokens) * hidden);
  auto gate = ctx.random_buffer(static_cast<size_t>(tokens) * mlp);
  auto up = ctx.random_buffer(static_cast<size_t>(tokens) * mlp);
  std::vector<int32_t> positions(tokens);
  std::iota(positions.begin(), positions.end(), 0);
  auto pos = ctx.int_buffer(positions);
  const int qkv_dim = hidden + 2 * kv_dim;
  attention_args args;
  args.q = qkv.f32();
  args.k = qkv.f32() + hidden;
  args.v = qkv.f32() + hidden + kv_dim;
  args.out = attn.f32();
  args.q_pos = pos.i32();
  args.k_pos = pos.i32();
  args.nq = tokens;
  args.nk = tokens;
  args.n_heads = n_heads;
  args.n_kv_heads = n_kv_heads;
  args.head_dim = head_dim;
  args.q_stride = qkv_dim;
  args.kv_stride = qkv_dim;
  args.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const double gemm_flops = 2.0 * tokens * hidden * (qkv_dim + hidden + 3.0 * mlp);
  const double flops = gemm_flops + attention_flops(positions, positions);
  const size_t n_x = static_cast<size_t>(tokens) * hidden;
  timed_loop(state, ctx, name, flops, true, [&] {
    be.rms_norm(x.f32(), norm_w.f32(), h.f32(), tokens, hidden, 1e-5f);
    be.matmul(h.f32(), w_qkv.f32(), qkv.f32(), tokens, qkv_dim, hidden, true);
    be.rope(qkv.f32(), pos.i32(), tokens, n_heads, head_dim, 10000.0f, qkv_dim);
    be.rope(qkv.f32() + hidden, pos.i32(), tokens, n_kv_heads, head_dim, 10000.0f, qkv_dim);
    be.attention(args);
    be.matmul(attn.f32(), w_o.f32(), x.f32(), tokens, hidden, hidden, true, 1.0f, 1.0f);
    be.rms_norm(x.f32(), norm_w.f32(), h.f32(), tokens, hidden, 1e-5f);
    be.matmul(h.f32(), w_gate.f32(), gate.f32(), tokens, mlp, hidden, true);
    be.matmul(h.f32(), w_up.f32(), up.f32(), tokens, mlp, hidden, true);
    be.silu_mul(gate.f32(), up.f32(), gate.f32(), static_cast<size_t>(tokens) * mlp);
    be.matmul(gate.f32(), w_down.f32(), x.f32(), tokens, hidden, mlp, true, 1.0f, 1.0f);
    be.scale(x.f32(), 0.5f, n_x); // keeps the residual stream bounded across iterations
  });
}

void elementwise(benchmark::State& state, bench_context& ctx, const std::string& name) {
  auto& be = *ctx.be;
  const size_t n = static_cast<size_t>(tokens) * mlp;
  auto gate = ctx.random_buffer(n);
  auto up = ctx.random_buffer(n);
  auto out = ctx.random_buffer(n);
  auto x = ctx.random_buffer(static_cast<size_t>(tokens) * hidden);
  auto w = ctx.random_buffer(hidden);
  std::vector<int32_t> positions(tokens);
  std::iota(positions.begin(), positions.end(), 0);
  auto pos = ctx.int_buffer(positions);
  if (name == "silu_mul_2000x1408")
    timed_loop(state, ctx, name, 3.0 * n * sizeof(float), false,
               [&] { be.silu_mul(gate.f32(), up.f32(), out.f32(), n); });
  else if (name == "rms_norm_2000x512")
    timed_loop(state, ctx, name, 2.0 * tokens * hidden * sizeof(float), false,
               [&] { be.rms_norm(x.f32(), w.f32(), x.f32(), tokens, hidden, 1e-5f); });
  else
    timed_loop(state, ctx, name, 2.0 * tokens * hidden * sizeof(float), false,
               [&] { be.rope(x.f32(), pos.i32(), tokens, n_heads, head_dim, 10000.0f); });
}

} // namespace
} // namespace mosaic::bench

int main(int argc, char** argv) {
  using namespace mosaic::bench;
  int threads = 0;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--threads") == 0) {
      threads = std::atoi(argv[i + 1]);
      for (int j = i; j + 2 <= argc; ++j)
        argv[j] = argv[j + 2];
      argc -= 2;
      break;
    }
  benchmark::Initialize(&argc, argv);
  bench_context ctx;
  ctx.be = mosaic::make_cpu_backend(threads); // also sets OpenBLAS's thread count
  ::setenv("MOSAIC_ATTENTION_TILES", "0", 1);
  ctx.be_sgemm = mosaic::make_cpu_backend(threads);
  ::unsetenv("MOSAIC_ATTENTION_TILES");
  const double peak_before = measure_sgemm_peak_gflops(2048, 5);

  auto reg = [&](const std::string& name, auto fn) {
    benchmark::RegisterBenchmark(name.c_str(),
                                 [&ctx, name, fn](benchmark::State& st) { fn(st, ctx, name); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->Repetitions(3)
        ->ReportAggregatesOnly(true);
  };
  reg("matmul_q_2000x512x512",
      [](auto& st, auto& c, const auto& n) { matmul(st, c, n, tokens, hidden, hidden); });
  reg("matmul_qkv_2000x768x512", [](auto& st, auto& c, const auto& n) {
    matmul(st, c, n, tokens, hidden + 2 * kv_dim, hidden);
  });
  reg("matmul_gate_2000x1408x512",
      [](auto& st, auto& c, const auto& n) { matmul(st, c, n, tokens, mlp, hidden); });
  reg("matmul_down_2000x512x1408",
      [](auto& st, auto& c, const auto& n) { matmul(st, c, n, tokens, hidden, mlp); });
  reg("attention_2000", [](auto& st, auto& c, const auto& n) { attention(st, c, n, tokens); });
  reg("attention_link_320_of_2000",
      [](auto& st, auto& c, const auto& n) { attention(st, c, n, 320); });
  reg("attention_2000_sgemm_tiles",
      [](auto& st, auto& c, const auto& n) { attention(st, c, n, tokens, true); });
  reg("attention_link_320_of_2000_sgemm_tiles",
      [](auto& st, auto& c, const auto& n) { attention(st, c, n, 320, true); });
  reg("paged_attention_b16_ctx2000",
      [](auto& st, auto& c, const auto& n) { paged_attention(st, c, n, 16, 2000); });
  reg("prefill_layer_2000", [](auto& st, auto& c, const auto& n) { prefill_layer(st, c, n); });
  reg("silu_mul_2000x1408", [](auto& st, auto& c, const auto& n) { elementwise(st, c, n); });
  reg("rms_norm_2000x512", [](auto& st, auto& c, const auto& n) { elementwise(st, c, n); });
  reg("rope_2000x8x64", [](auto& st, auto& c, const auto& n) { elementwise(st, c, n); });
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // Measured before and after the ops, so that a busy moment of a shared
  // machine does not set the yardstick.
  const double peak = std::max(peak_before, measure_sgemm_peak_gflops(2048, 5));

  std::printf("\n# CPU backend (%d threads) vs OpenBLAS sgemm peak (2048^3, best of 2x5); each\n"
              "# figure is the best of 3 repetitions, all in this process\n",
              threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()));
  for (const auto& [name, fig] : ctx.figures) {
    if (fig.flops)
      std::printf("%s: %.1f GFLOP/s = %.2f of sgemm peak %.1f GFLOP/s\n", name.c_str(), fig.rate,
                  fig.rate / peak, peak);
    else
      std::printf("%s: %.2f GB/s\n", name.c_str(), fig.rate);
  }
  for (const char* name : {"attention_2000", "attention_link_320_of_2000"}) {
    const auto tiles = ctx.figures.find(name);
    const auto sgemm = ctx.figures.find(std::string{name} + "_sgemm_tiles");
    if (tiles != ctx.figures.end() && sgemm != ctx.figures.end())
      std::printf("%s: register-tile kernels / sgemm tiles = %.2fx\n", name,
                  tiles->second.rate / sgemm->second.rate);
  }
  return 0;
}
