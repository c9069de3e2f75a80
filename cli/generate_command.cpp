// `mosaic generate`: offline multimodal generation, like llama.cpp's
// multimodal CLI. Each image is encoded; under a reuse policy it is first
// COMPILED standalone (its KV computed at positions 0..n-1, as a KV library
// entry would hold it) and then linked into the prompt by the policy's
// plan. Prints the answer, the timings (TTFT = linked prefill + first
// token) and how much was recomputed; `--compare full` also runs the full
// recompute and reports how closely the policy follows it.

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "engine/backend.hpp"
#include "engine/generation.hpp"
#include "engine/image_encoder.hpp"
#include "engine/llava_engine.hpp"
#include "engine/model/builtin_model.hpp"
#include "engine/model/image.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic::cli {

namespace {

struct generate_options {
  std::string model = "builtin:small";
  std::vector<std::string> images;
  std::string prompt;
  /// Prompts asked after `prompt` in the same process: each reuses what
  /// the pool's prefix cache holds of the earlier ones.
  std::vector<std::string> then;
  std::string policy = "mpic:32";
  std::string compare;
  int max_tokens = 32;
  float temperature = 0.0f;
  float top_p = 1.0f;
  int top_k = 0;
  uint64_t seed = 0;
  std::string backend = "cpu";
  int threads = 0;
};

int fail(const error& e) {
  std::fprintf(stderr, "mosaic generate: %s\n", e.to_string().c_str());
  return 1;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

result<decoded_image> read_image(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return make_error(errc::not_found, "cannot open image '", path,
                      "'; check the path (PNG or JPEG files are accepted)");
  std::vector<uint8_t> bytes{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
  auto img = decode_image(bytes, image_limits{});
  if (!img) {
    error e = std::move(img).err();
    e.message = "image '" + path + "': " + e.message;
    return e;
  }
  return img;
}

/// Everything the run needs, loaded once.
struct session {
  std::unique_ptr<backend> be;
  std::unique_ptr<llava_engine> engine;
  std::unique_ptr<image_encoder> encoder;
};

result<session> open_session(const generate_options& o, size_t prompt_bytes) {
  session s;
  auto be = make_backend(o.backend, o.threads);
  if (!be)
    return std::move(be).err();
  s.be = std::move(*be);
  auto dir = resolve_model(o.model);
  if (!dir)
    return std::move(dir).err();
  auto cfg = load_model_config(*dir);
  if (!cfg)
    return std::move(cfg).err();
  // The pool holds one prompt and its answer (text tokens never outnumber
  // the prompt's bytes plus the chat template); image compiles and the
  // compare run use it one at a time.
  const size_t tokens = o.images.size() * static_cast<size_t>(cfg->image_tokens()) + prompt_bytes +
                        256 + static_cast<size_t>(o.max_tokens) + 16;
  kv_pool_options pool;
  pool.block_size = 16;
  pool.n_blocks = static_cast<int>((tokens + 15) / 16);
  auto eng = llava_engine::load(o.model, *s.be, pool);
  if (!eng)
    return std::move(eng).err();
  s.engine = std::move(*eng);
  auto enc = image_encoder::create(*s.be, s.engine->config(), lookup_in(s.engine->weights()));
  if (!enc)
    return std::move(enc).err();
  s.encoder = std::make_unique<image_encoder>(std::move(*enc));
  return s;
}

int run_generate(const generate_options& o) {
  auto policy = parse_policy(o.policy);
  if (!policy)
    return fail(policy.err());
  if (!o.compare.empty() && o.compare != "full")
    return fail(make_error(errc::invalid_argument, "--compare accepts only 'full' (got '",
                           o.compare, "')"));
  sampling_params sampling;
  sampling.temperature = o.temperature;
  sampling.top_p = o.top_p;
  sampling.top_k = o.top_k;
  sampling.seed = o.seed;
  if (auto ok = sampling.validate(); !ok)
    return fail(ok.err());
  if (o.max_tokens < 1)
    return fail(make_error(errc::invalid_argument, "--max-tokens must be at least 1"));

  std::vector<decoded_image> pixels;
  for (const auto& path : o.images) {
    auto img = read_image(path);
    if (!img)
      return fail(img.err());
    pixels.push_back(std::move(*img));
  }
  size_t prompt_bytes = o.prompt.size();
  for (const auto& t : o.then)
    prompt_bytes = std::max(prompt_bytes, t.size());
  auto s = open_session(o, prompt_bytes);
  if (!s)
    return fail(s.err());
  llava_engine& eng = *s->engine;
  const tokenizer& tok = eng.tokenizer();
  sampling.stop_token_ids = {tok.eos_id()};

  {
    // One untimed pass so that TTFT leaves out one-time costs (worker
    // start-up, first touch of scratch memory).
    prompt warm;
    warm.parts.push_back(prompt_part{segment_kind::text, tok.encode_prompt("Hi"), -1});
    if (auto w = generate(eng, warm, policy_spec{}, sampling_params{}, 1); !w)
      return fail(w.err());
  }

  // Encode every image; under a reuse policy also compile it standalone.
  const bool reuse = policy->kind != policy_kind::full;
  std::vector<std::vector<float>> embeddings;
  std::vector<compiled_image> entries;
  std::vector<token_grid> grids;
  entries.reserve(pixels.size());
  double encode_ms = 0.0;
  double compile_ms = 0.0;
  for (size_t i = 0; i < pixels.size(); ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto emb = s->encoder->encode(pixels[i]);
    encode_ms += ms_since(t0);
    if (!emb)
      return fail(emb.err());
    auto grid = eng.config().image_token_grid(pixels[i].height, pixels[i].width);
    if (!grid)
      return fail(grid.err());
    grids.push_back(*grid);
    if (reuse) {
      t0 = std::chrono::steady_clock::now();
      // M-RoPE models compile an image from its own positions' origin.
      auto entry =
          compile_image(eng.backend(), eng.decoder(), eng.pool(), emb->data(),
                        static_cast<int>(emb->size() / size_t(s->encoder->hidden())), {}, 0, *grid);
      compile_ms += ms_since(t0);
      if (!entry)
        return fail(entry.err());
      entries.push_back(std::move(*entry));
    }
    embeddings.push_back(std::move(*emb));
  }
  auto make_images = [&](bool cached) {
    std::vector<prompt_image> imgs;
    for (size_t i = 0; i < embeddings.size(); ++i) {
      prompt_image pi;
      pi.key = o.images[i];
      pi.n_tokens = static_cast<int>(embeddings[i].size() / size_t(s->encoder->hidden()));
      pi.embeddings = embeddings[i].data();
      pi.cached = cached ? &entries[i] : nullptr;
      pi.grid = grids[i];
      imgs.push_back(pi);
    }
    return imgs;
  };

  auto text = chat_prompt(tok, o.prompt, static_cast<int>(pixels.size()));
  if (!text)
    return fail(text.err());
  auto p = build_prompt(tok, *text, make_images(reuse));
  if (!p)
    return fail(p.err());

  // The process's prefix cache: one scope (this model, no tenant).
  const prefix_scope cache{"", eng.weights().fingerprint(), ""};
  auto gen = generate(eng, *p, *policy, sampling, o.max_tokens, {}, &cache);
  if (!gen)
    return fail(gen.err());

  const auto& st = gen->stats;
  double computed = 0.0;
  for (int c : st.computed_per_layer)
    computed += c;
  computed /= std::max<size_t>(st.computed_per_layer.size(), 1);
  std::printf("answer: %s\n\n", tok.decode(gen->tokens).c_str());
  std::printf("model       %s on %s, policy %s\n", o.model.c_str(),
              std::string{s->be->name()}.c_str(), policy->to_string().c_str());
  std::string image_counts;
  for (const auto& e : embeddings)
    image_counts += (image_counts.empty() ? "" : " + ") +
                    std::to_string(e.size() / size_t(s->encoder->hidden()));
  std::printf("prompt      %d tokens (images: %s tokens)\n", st.n_tokens,
              image_counts.empty() ? "none" : image_counts.c_str());
  std::printf("encode      %.1f ms (vision tower + projector)\n", encode_ms);
  if (reuse)
    std::printf("compile     %.1f ms (standalone image KV, as a KV library holds it)\n",
                compile_ms);
  std::printf("TTFT        %.1f ms (linked prefill + first token)\n", gen->ttft_seconds * 1e3);
  std::printf("cached      %d of %d prompt tokens (%d from the prefix cache)\n", st.cached_tokens,
              st.n_tokens, st.reused_prefix_tokens);
  std::printf("decode      %zu tokens in %.1f ms%s\n", gen->tokens.size(),
              gen->decode_seconds * 1e3, gen->stopped ? " (stopped at EOS)" : "");
  std::printf("recomputed  %.1f / %d tokens per layer (%.1f%%)%s%s\n", computed, st.n_tokens,
              st.recomputed_fraction * 100.0, st.note.empty() ? "" : "; ", st.note.c_str());

  if (o.compare == "full") {
    sampling_params greedy = sampling;
    greedy.temperature = 0.0f;
    result<generation_result> candidate = *gen;
    if (!sampling.greedy())
      candidate = generate(eng, *p, *policy, greedy, o.max_tokens);
    if (!candidate)
      return fail(candidate.err());
    auto full_prompt = build_prompt(tok, *text, make_images(false));
    if (!full_prompt)
      return fail(full_prompt.err());
    auto reference = generate(eng, *full_prompt, *parse_policy("full"), greedy, o.max_tokens);
    if (!reference)
      return fail(reference.err());
    const agreement a = compare_generations(*reference, *candidate);
    std::printf("\ncompare vs full (greedy)\n");
    std::printf("full answer        %s\n", tok.decode(reference->tokens).c_str());
    std::printf("full TTFT          %.1f ms\n", reference->ttft_seconds * 1e3);
    std::printf("first token agrees %s\n", a.first_token_match ? "yes" : "no");
    std::printf("first-token KL     %.6f nats\n", a.first_token_kl);
    std::printf("identical tokens   %.1f%%\n", a.token_match * 100.0);
  }
  for (const auto& question : o.then) {
    auto t = chat_prompt(tok, question, static_cast<int>(pixels.size()));
    if (!t)
      return fail(t.err());
    auto next = build_prompt(tok, *t, make_images(reuse));
    if (!next)
      return fail(next.err());
    auto g = generate(eng, *next, *policy, sampling, o.max_tokens, {}, &cache);
    if (!g)
      return fail(g.err());
    std::printf("\nthen: %s\nanswer: %s\n", question.c_str(), tok.decode(g->tokens).c_str());
    std::printf("TTFT        %.1f ms; %d of %d prompt tokens cached (%d from the prefix cache)\n",
                g->ttft_seconds * 1e3, g->stats.cached_tokens, g->stats.n_tokens,
                g->stats.reused_prefix_tokens);
  }
  return 0;
}

} // namespace

void add_generate_command(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<generate_options>();
  auto* cmd = app.add_subcommand(
      "generate", "Answer a prompt about images offline, linking each image's compiled KV by a "
                  "reuse policy");
  cmd->add_option("--model", opts->model, "builtin:tiny, builtin:small or an HF LLaVA directory")
      ->capture_default_str();
  cmd->add_option("--image", opts->images, "PNG or JPEG file (repeat for several images)");
  cmd->add_option("--prompt", opts->prompt,
                  "question; each <image> marks where an image goes (none: images first)")
      ->required();
  cmd->add_option("--then", opts->then,
                  "another prompt asked after --prompt in the same process (repeatable); it "
                  "reuses the prefix cache's blocks of the earlier prompts");
  cmd->add_option("--policy", opts->policy,
                  "full, prefix, full_reuse, mpic:K, cacheblend:R or vlcache:R")
      ->capture_default_str();
  cmd->add_option("--compare", opts->compare,
                  "also run 'full' and report first-token agreement, KL and identical tokens");
  cmd->add_option("--max-tokens", opts->max_tokens, "tokens to generate at most")
      ->capture_default_str();
  cmd->add_option("--temperature", opts->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-p", opts->top_p, "nucleus sampling mass (1 = off)")->capture_default_str();
  cmd->add_option("--top-k", opts->top_k, "keep the k most likely tokens (0 = off)")
      ->capture_default_str();
  cmd->add_option("--seed", opts->seed, "sampling seed")->capture_default_str();
  cmd->add_option("--backend", opts->backend, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--threads", opts->threads, "CPU threads (0 = every core)")
      ->capture_default_str();
  cmd->callback([opts, exit_code] { *exit_code = run_generate(*opts); });
}

} // namespace mosaic::cli
