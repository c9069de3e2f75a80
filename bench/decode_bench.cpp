// Decode speed on the CPU backend: tokens/s of batched decode steps at
// batch 1, 8 and 32 (issue #22, item 4), next to the limit a decode step
// meets on this machine: every step streams the decoder's weights (and
// each sequence's KV) from memory, so the figure is compared with the
// tokens/s that the memory bandwidth allows, measured in the same process
// (a multi-threaded read of a 256 MiB buffer).
//
//   build/bench/decode_bench [--model builtin:small] [--context 512] [--steps 32]
//
// Each sequence is prefilled with `context` random text tokens (policy
// `full`), then all of a batch decode `steps` tokens together; the best of
// `runs` timings is kept. Tokens/s = batch x steps / time. Each batch is
// also timed on a second backend that leaves every GEMM to OpenBLAS, the
// baseline of the CPU backend's few-row kernel, in the same run.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <stdlib.h>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/bench_model.hpp"
#include "engine/decoder.hpp"
#include "engine/policies.hpp"
#include "engine/prefill.hpp"

namespace mosaic::bench {
namespace {

struct options {
  std::string model = "builtin:small";
  int threads = 0;
  int context = 512;
  int steps = 32;
  int runs = 3;
};

/// GB/s of reading a buffer far larger than the caches with every core
/// (best of 5): the bound of a step that streams the weights.
double read_bandwidth_gbps() {
  const size_t n = size_t(64) << 20; // floats: 256 MiB
  std::vector<float> buf(n, 1.0f);
  const int threads = std::max(1u, std::thread::hardware_concurrency());
  double best = 0.0;
  for (int r = 0; r < 5; ++r) {
    std::vector<double> sums(static_cast<size_t>(threads));
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        const size_t lo = n * static_cast<size_t>(t) / threads;
        const size_t hi = n * static_cast<size_t>(t + 1) / threads;
        float acc[8] = {};
        for (size_t i = lo; i + 8 <= hi; i += 8)
          for (int j = 0; j < 8; ++j)
            acc[j] += buf[i + static_cast<size_t>(j)];
        sums[static_cast<size_t>(t)] = std::accumulate(acc, acc + 8, 0.0);
      });
    for (auto& th : pool)
      th.join();
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    if (std::accumulate(sums.begin(), sums.end(), 0.0) <= 0.0)
      return 0.0; // never: keeps the reads from being optimised away
    best = std::max(best, static_cast<double>(n * sizeof(float)) / dt.count() * 1e-9);
  }
  return best;
}

/// Best seconds per decode step of `b` sequences of `context` random text
/// tokens on `m` (each prefilled with `full` first).
result<double> step_seconds(bench_model& m, const options& opt, int b, std::mt19937& rng) {
  const auto& t = m.cfg.text;
  const auto policy = parse_policy("full");
  std::vector<kv_sequence> seqs;
  std::vector<int32_t> tokens;
  for (int s = 0; s < b; ++s) {
    prompt p;
    auto ids = m.random_text(rng, opt.context);
    ids[0] = t.bos_token_id;
    p.parts.push_back({segment_kind::text, std::move(ids), -1});
    auto plan = build_link_plan(p, *policy, t);
    if (!plan)
      return std::move(plan).err();
    auto pre = run_prefill(*m.be, *m.decoder, *m.pool, *plan);
    if (!pre)
      return std::move(pre).err();
    tokens.push_back(static_cast<int32_t>(std::max_element(pre->logits.begin(), pre->logits.end()) -
                                          pre->logits.begin()));
    seqs.push_back(std::move(pre->sequence));
  }
  const size_t vocab = static_cast<size_t>(t.vocab_size);
  double best = 1e30;
  for (int r = 0; r <= opt.runs; ++r) { // run 0 warms up
    const auto t0 = std::chrono::steady_clock::now();
    for (int step = 0; step < opt.steps; ++step) {
      std::vector<decode_input> in;
      for (int s = 0; s < b; ++s)
        in.push_back({&seqs[static_cast<size_t>(s)], tokens[static_cast<size_t>(s)],
                      seqs[static_cast<size_t>(s)].length()});
      auto logits = decode_step(*m.be, *m.decoder, *m.pool, in);
      if (!logits)
        return std::move(logits).err();
      for (int s = 0; s < b; ++s) {
        const float* row = logits->data() + static_cast<size_t>(s) * vocab;
        tokens[static_cast<size_t>(s)] =
            static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      }
    }
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    if (r > 0)
      best = std::min(best, dt.count());
  }
  return best / opt.steps;
}

int fail(const error& e) {
  std::fprintf(stderr, "decode_bench: %s\n", e.to_string().c_str());
  return 1;
}

int run(const options& opt) {
  const std::vector<int> batches = {1, 8, 32};
  const int per_seq = opt.context + opt.steps * (opt.runs + 1) + 16;
  const int pool_tokens = batches.back() * per_seq + 64;
  auto model = load_bench_model(opt.model, opt.threads, pool_tokens);
  if (!model)
    return fail(model.err());
  // The same model on a backend that leaves every GEMM to OpenBLAS (the
  // backend reads MOSAIC_SMALL_GEMM_ROWS when it is made): the
  // few-row kernel's baseline, measured in this run.
  ::setenv("MOSAIC_SMALL_GEMM_ROWS", "0", 1);
  auto openblas = load_bench_model(opt.model, opt.threads, pool_tokens);
  ::unsetenv("MOSAIC_SMALL_GEMM_ROWS");
  if (!openblas)
    return fail(openblas.err());
  bench_model& m = *model;
  const auto& t = m.cfg.text;
  const double weight_bytes = 4.0 * (static_cast<double>(m.decoder_linear_params()) +
                                     static_cast<double>(t.vocab_size) * t.hidden_size);
  const double bw = read_bandwidth_gbps();
  std::printf("decode_bench: %s on %s, %d decoder layers, hidden %d, context %d tokens\n",
              opt.model.c_str(), std::string{m.be->name()}.c_str(), t.num_layers, t.hidden_size,
              opt.context);
  std::printf("memory read bandwidth (same process, every core): %.1f GB/s; one step streams "
              "%.1f MB of f32 weights + each sequence's KV\n",
              bw, weight_bytes * 1e-6);
  std::printf("openblas_ms: the same steps with every GEMM on OpenBLAS (MOSAIC_SMALL_GEMM_ROWS=0), "
              "this run\n\n");
  std::printf("%6s %9s %10s %10s %16s %13s %12s\n", "batch", "step_ms", "tokens/s", "ms/token",
              "bound_tokens/s", "ratio_to_bound", "openblas_ms");

  std::mt19937 rng(4321);
  for (int b : batches) {
    auto step_s = step_seconds(m, opt, b, rng);
    if (!step_s)
      return fail(step_s.err());
    auto blas_s = step_seconds(*openblas, opt, b, rng);
    if (!blas_s)
      return fail(blas_s.err());
    // The bound: one read of the weights per step plus each sequence's
    // K and V (mean length over the steps) at the measured bandwidth.
    const double kv_bytes = 2.0 * 4.0 * t.num_layers * t.kv_dim() *
                            (opt.context + opt.steps * (opt.runs + 1) / 2.0) * b;
    const double bound_step_s = (weight_bytes + kv_bytes) / (bw * 1e9);
    const double tps = b / *step_s;
    const double bound_tps = b / bound_step_s;
    std::printf("%6d %9.2f %10.1f %10.2f %16.1f %13.2f %12.2f\n", b, *step_s * 1e3, tps, 1e3 / tps,
                bound_tps, tps / bound_tps, *blas_s * 1e3);
  }
  return 0;
}

} // namespace
} // namespace mosaic::bench

int main(int argc, char** argv) {
  mosaic::bench::options opt;
  CLI::App app{"Decode tokens/s at batch 1, 8 and 32 next to the memory-bandwidth bound"};
  app.add_option("--model", opt.model, "builtin:tiny, builtin:small or an HF LLaVA directory")
      ->capture_default_str();
  app.add_option("--threads", opt.threads, "CPU backend threads (0 = every core)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--context", opt.context, "prompt tokens per sequence")
      ->capture_default_str()
      ->check(CLI::Range(1, 8192));
  app.add_option("--steps", opt.steps, "decode steps per timing")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--runs", opt.runs, "timings per batch (best kept)")
      ->capture_default_str()
      ->check(CLI::Range(1, 20));
  CLI11_PARSE(app, argc, argv);
  return mosaic::bench::run(opt);
}
