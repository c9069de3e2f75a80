// Time to first token with and without reuse, in one run on one model:
//
// 1. New positions: a 3-image prompt whose images are cached (compiled
//    standalone, as a KV library holds them) but that the prefix cache has
//    never seen (text comes before the first image): `prefix` (the real
//    prefix cache, vLLM's kind) finds no match and recomputes everything;
//    `mpic:32` links the cached image KV in place and recomputes text + the
//    first 32 tokens of each image.
// 2. Exact repeat: the same prompt again with the prefix cache (every full
//    block but the last is adopted) vs cold; target <= 0.1x.
// 3. Chunked prefill: a stream decoding one token at a time while a long
//    prompt prefills on the same cores (both take the node's FIFO compute
//    lock, as the actors do): the stream's worst and p99 inter-token gap
//    with the prompt in one pass vs in chunks.
//
// TTFT here = link plan + prefill pass + first token (argmax); the KV is
// already in host memory (no load time), the vision encoder is not run (a
// cache hit carries the projector output).
//
// On an anyres model (builtin:small-next, LLaVA-1.6's geometry) each image
// is a 4:3 photo of 2,340 tokens, MPIC's setting; on Qwen2-VL
// (builtin:small-qwen2vl) a 4:3 photo of 1,230 tokens under M-RoPE, whose
// cached K turns by three position components at its new place.
//
// Usage: ttft_bench [--model builtin:small] [--threads N] [--runs R]
//                   [--long-tokens N] [--chunk N]

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <CLI/CLI.hpp>
#include <random>
#include <string>
#include <vector>

#include <atomic>
#include <thread>

#include "actors/compute_lock.hpp"
#include "bench/bench_model.hpp"
#include "engine/cpu/blas_threads.hpp"
#include "engine/decoder.hpp"
#include "engine/policies.hpp"
#include "engine/prefill.hpp"
#include "engine/prefix_cache.hpp"
#include "engine/sampler.hpp"

namespace mosaic::bench {
namespace {

struct options {
  std::string model = "builtin:small";
  int threads = 0;
  int runs = 5;
  int long_tokens = 8192;
  int chunk = 2048;
};

struct timed {
  double seconds = 1e30;
  double recomputed = 0.0;
  int first_token = -1;
  std::vector<float> logits; ///< the last run's first-token logits
};

/// Best of `runs` prefills of `p` through the prefix cache. `scope_of(r)`
/// names the cache namespace of run r: a fresh one per run is a prompt the
/// cache has never seen; the same one, a repeat.
template <class ScopeOf>
result<timed> measure(bench_model& m, const prompt& p, const policy_spec& policy, int runs,
                      ScopeOf scope_of) {
  timed out;
  for (int r = 0; r <= runs; ++r) { // run 0 warms up
    const prefix_scope scope = scope_of(r);
    const auto t0 = std::chrono::steady_clock::now();
    auto res = prefill_with_prefix_cache(*m.be, *m.decoder, *m.pool, p, policy, nullptr, &scope);
    if (!res)
      return std::move(res).err();
    const int32_t tok = argmax(res->result.logits);
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    if (r > 0)
      out.seconds = std::min(out.seconds, dt.count());
    out.recomputed = res->result.stats.recomputed_fraction;
    out.first_token = tok;
    out.logits = std::move(res->result.logits);
  }
  return out;
}

/// A cache namespace no run has used before.
prefix_scope fresh_scope(int) {
  static int next = 0;
  return {"bench-fresh-" + std::to_string(next++), {}, ""};
}

/// Inter-token gaps of one stream decoding while `long_prompt` prefills
/// (chunk 0: one pass) on the same backend, both under one FIFO lock.
struct itl_stats {
  double median_ms = 0.0, p99_ms = 0.0, max_ms = 0.0, prefill_s = 0.0;
  int tokens = 0;
};

result<itl_stats> stream_during_prefill(bench_model& m, const prompt& long_prompt, int chunk,
                                        std::mt19937& rng) {
  actors::compute_lock lock;
  // The running stream: a short prompt, then one token at a time.
  prompt shortp;
  shortp.parts.push_back({segment_kind::text, m.random_text(rng, 64), -1});
  auto plan = build_link_plan(shortp, *parse_policy("full"), m.cfg.text);
  if (!plan)
    return std::move(plan).err();
  auto pre = run_prefill(*m.be, *m.decoder, *m.pool, *plan);
  if (!pre)
    return std::move(pre).err();
  kv_sequence seq = std::move(pre->sequence);
  std::atomic<bool> stop{false};
  std::vector<double> gaps;
  status decode_error;
  std::thread stream([&] {
    int32_t token = argmax(pre->logits);
    auto last = std::chrono::steady_clock::now();
    while (!stop.load() && gaps.size() < 2000) { // the stream runs as long as the prefill
      result<std::vector<float>> logits = make_error(errc::internal, "no step");
      {
        std::lock_guard g{lock};
        const decode_input in{&seq, token, seq.length()};
        logits = decode_step(*m.be, *m.decoder, *m.pool, std::span<const decode_input>{&in, 1});
      }
      if (!logits) {
        decode_error = logits.err();
        return;
      }
      token = argmax(*logits);
      const auto now = std::chrono::steady_clock::now();
      gaps.push_back(std::chrono::duration<double, std::milli>(now - last).count());
      last = now;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50)); // the stream is running
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock g{lock};
  prefill_options o;
  o.chunk_tokens = chunk;
  o.between_chunks = [&g](int) -> status {
    g.unlock();
    g.lock();
    return {};
  };
  auto lp = build_link_plan(long_prompt, *parse_policy("full"), m.cfg.text);
  if (!lp) {
    stop = true;
    g.unlock();
    stream.join();
    return std::move(lp).err();
  }
  auto r = run_prefill(*m.be, *m.decoder, *m.pool, *lp, o);
  g.unlock();
  itl_stats out;
  out.prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop = true;
  stream.join();
  if (!r)
    return std::move(r).err();
  if (!decode_error)
    return decode_error.err();
  std::sort(gaps.begin(), gaps.end());
  if (!gaps.empty()) {
    out.median_ms = gaps[gaps.size() / 2];
    out.p99_ms = gaps[std::min(gaps.size() - 1, gaps.size() * 99 / 100)];
    out.max_ms = gaps.back();
  }
  out.tokens = static_cast<int>(gaps.size());
  return out;
}

int fail(const error& e) {
  std::fprintf(stderr, "ttft_bench: %s\n", e.to_string().c_str());
  return 1;
}

int run(const options& opt) {
  auto model = load_bench_model(opt.model, opt.threads, 3 * 4096 + 2 * opt.long_tokens + 1024);
  if (!model)
    return fail(model.err());
  bench_model& m = *model;
  std::mt19937 rng(77);

  // Compile three images standalone (what an upload does ahead of questions).
  std::vector<compiled_image> entries;
  std::vector<token_grid> grids; // M-RoPE: each image's token grid
  double compile_s = 0.0;
  for (int i = 0; i < 3; ++i) {
    auto emb = m.random_image_embeddings(rng);
    if (!emb)
      return fail(emb.err());
    const auto t0 = std::chrono::steady_clock::now();
    const int tokens = int(emb->size() / size_t(m.cfg.text.hidden_size));
    grids.push_back(m.last_grid);
    auto c = compile_image(*m.be, *m.decoder, *m.pool, emb->data(), tokens, {}, 0, m.last_grid);
    compile_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!c)
      return fail(c.err());
    entries.push_back(std::move(*c));
  }
  // The same three in the steps a live node's background compile takes
  // (actors/encoder_actor.cpp: 64-token chunks, a decode step may run
  // between any two): what yielding costs the compile.
  double chunked_s = 0.0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    const auto t0 = std::chrono::steady_clock::now();
    auto c = compile_image(*m.be, *m.decoder, *m.pool, e.embeddings.data(), e.n_tokens, {}, 64,
                           grids[i]);
    chunked_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!c)
      return fail(c.err());
  }

  // "<system text> <img> <text> <img> <text> <img> <question>": text first.
  prompt p;
  const int text_runs[4] = {40, 16, 16, 32};
  for (int r = 0; r < 4; ++r) {
    prompt_part t;
    t.kind = segment_kind::text;
    t.text_ids = m.random_text(rng, text_runs[r]);
    if (r == 0)
      t.text_ids[0] = m.cfg.text.bos_token_id;
    p.parts.push_back(std::move(t));
    if (r < 3) {
      prompt_image img;
      img.key = "cached-image-" + std::to_string(r);
      img.n_tokens = entries[static_cast<size_t>(r)].n_tokens;
      img.cached = &entries[static_cast<size_t>(r)];
      img.grid = grids[static_cast<size_t>(r)];
      p.images.push_back(img);
      prompt_part ip;
      ip.kind = segment_kind::image;
      ip.image = r;
      p.parts.push_back(std::move(ip));
    }
  }
  int n_tokens = 40 + 16 + 16 + 32;
  for (const auto& e : entries)
    n_tokens += e.n_tokens;

  auto mpic = measure(m, p, *parse_policy("mpic:32"), opt.runs, fresh_scope);
  if (!mpic)
    return fail(mpic.err());
  auto prefix = measure(m, p, *parse_policy("prefix"), opt.runs, fresh_scope);
  if (!prefix)
    return fail(prefix.err());
  // Exact repeat: every run after the warm-up finds the whole prompt cached.
  auto repeat = measure(m, p, *parse_policy("prefix"), opt.runs, [](int) {
    return prefix_scope{"bench-repeat", {}, ""};
  });
  if (!repeat)
    return fail(repeat.err());

  std::printf("ttft_bench: %s on %s, 3 cached images not at the prefix, %d prompt tokens\n",
              opt.model.c_str(), std::string{m.be->name()}.c_str(), n_tokens);
  std::printf("compile (standalone prefill of 3 images, done ahead of the question): %.3f s\n",
              compile_s);
  std::printf(
      "compile in 64-token chunks (a live node's store after use): %.3f s = %.2fx one pass\n\n",
      chunked_s, chunked_s / compile_s);
  std::printf("%-34s %10s %12s\n", "policy", "ttft_ms", "recomputed");
  std::printf("%-34s %10.1f %11.1f%%\n", "prefix (real prefix cache, cold)", prefix->seconds * 1e3,
              prefix->recomputed * 100.0);
  std::printf("%-34s %10.1f %11.1f%%\n", "mpic:32 (images at new positions)", mpic->seconds * 1e3,
              mpic->recomputed * 100.0);
  std::printf("%-34s %10.1f %11.1f%%\n", "prefix (exact repeat, cache hit)", repeat->seconds * 1e3,
              repeat->recomputed * 100.0);
  std::printf("\nnew positions: mpic:32 / prefix TTFT = %.3f (%.1f%% lower)\n",
              mpic->seconds / prefix->seconds, (1.0 - mpic->seconds / prefix->seconds) * 100.0);
  std::printf("exact repeat:  prefix-cache hit / cold prefill TTFT = %.3f (target <= 0.1)\n",
              repeat->seconds / prefix->seconds);
  // The cold prefix-cache pass computes every token at every layer: it is
  // `full`'s answer, which mpic:32 approximates.
  std::printf("agreement with full (the cold prefix pass above, every token computed): "
              "first token %s, KL(full || mpic:32) = %.2e nats\n",
              mpic->first_token == prefix->first_token ? "identical" : "differs",
              kl_divergence(prefix->logits, mpic->logits));

  // A long prompt prefilled while a stream decodes.
  prompt long_prompt;
  long_prompt.parts.push_back({segment_kind::text, m.random_text(rng, opt.long_tokens), -1});
  auto whole = stream_during_prefill(m, long_prompt, 0, rng);
  if (!whole)
    return fail(whole.err());
  auto chunked = stream_during_prefill(m, long_prompt, opt.chunk, rng);
  if (!chunked)
    return fail(chunked.err());
  std::printf("\na stream decoding while a %d-token prompt prefills (one FIFO compute lock)\n",
              opt.long_tokens);
  std::printf("%-22s %10s %10s %10s %8s %11s\n", "prefill", "itl_p50_ms", "itl_p99_ms",
              "itl_max_ms", "tokens", "prefill_s");
  for (const auto& [name, st] : {std::pair{std::string{"one pass"}, *whole},
                                 std::pair{"chunks of " + std::to_string(opt.chunk), *chunked}})
    std::printf("%-22s %10.1f %10.1f %10.1f %8d %11.2f\n", name.c_str(), st.median_ms, st.p99_ms,
                st.max_ms, st.tokens, st.prefill_s);
  std::printf("worst inter-token gap, chunked / one pass = %.3f; prefill time, chunked / one "
              "pass = %.3f\n",
              chunked->max_ms / std::max(whole->max_ms, 1e-9),
              chunked->prefill_s / std::max(whole->prefill_s, 1e-9));
  return 0;
}

} // namespace
} // namespace mosaic::bench

int main(int argc, char** argv) {
  // OpenBLAS's idle threads spin briefly, as in the mosaic CLI, so that
  // the figures are the product's (engine/cpu/blas_threads.hpp).
  mosaic::cpu::blas_exec_with_short_spin(argv);
  mosaic::bench::options opt;
  CLI::App app{"TTFT of mpic:32 vs the prefix cache (new positions, exact repeats) and a "
               "stream's inter-token latency during a long prefill, chunked or not"};
  app.add_option("--model", opt.model,
                 "model (builtin:small, builtin:small-next or an HF LLaVA directory)");
  app.add_option("--threads", opt.threads, "CPU threads (0: every core)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--runs", opt.runs, "runs per policy (best is kept)")->check(CLI::PositiveNumber);
  app.add_option("--long-tokens", opt.long_tokens, "tokens of the long prompt")
      ->check(CLI::Range(64, 16000));
  app.add_option("--chunk", opt.chunk, "chunk size of the chunked prefill")
      ->check(CLI::Range(16, 16000));
  CLI11_PARSE(app, argc, argv);
  return mosaic::bench::run(opt);
}
