// Quality of the reuse policies vs the full recompute. Each prompt's images
// are compiled standalone first (as a KV library holds them, at positions
// 0..n-1), then linked into the prompt at other positions; for every policy:
// accuracy against the reference answers (with --vqa), first-token agreement
// with `full`, KL of the first-token distributions, identical greedy tokens,
// the recomputed fraction and TTFT. Writes a markdown document (stdout, or
// --out FILE).
//
// Two prompt sets (bench/quality_cases.hpp): the built-in fixed prompts
// (no answers; for the random-weight builtin:small), or --vqa DIR, the
// held-out visual QA questions of tools/train (for the trained checkpoint
// tests/data/hf_trained_llava).
//
// With --compressions, a second table: FastCache's compression stage after
// a full prefill (accuracy, identical greedy tokens, KV kept, compress time).
//
// Usage: quality_bench [--model builtin:small] [--vqa DIR] [--limit N] [--policies LIST]
//                      [--compressions 'SPEC;SPEC'] [--threads N] [--max-tokens N] [--out FILE]

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/quality_cases.hpp"
#include "engine/backend.hpp"
#include "engine/generation.hpp"
#include "engine/image_encoder.hpp"
#include "engine/kv_learned_compressor.hpp"
#include "engine/llava_engine.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic::bench {
namespace {

struct options {
  std::string model = "builtin:small";
  std::string vqa;
  int limit = 0;
  std::vector<std::string> policies;
  int threads = 0;
  int max_tokens = 8;
  std::vector<std::string> compressions;
  int question_tokens = 0;
  std::string out;
};

const std::vector<std::string> default_policies = {"full_reuse", "mpic:8", "mpic:32",
                                                   "cacheblend:0.15", "vlcache:0.05"};
const std::vector<std::string> vqa_policies = {
    "prefix",  "full_reuse",      "mpic:4",          "mpic:8",       "mpic:16",      "mpic:32",
    "mpic:64", "cacheblend:0.05", "cacheblend:0.15", "vlcache:0.02", "vlcache:0.05", "vlcache:0.1"};

struct policy_row {
  std::string name;
  int correct = 0;
  int first_agree = 0;
  double kl_sum = 0.0;
  double match_sum = 0.0;
  double recomputed_sum = 0.0;
  double ttft_sum = 0.0;
  int n = 0;
  std::map<std::string, std::pair<int, int>> per_kind; ///< kind -> (correct, total)
  compression_spec compression; ///< compression rows: applied after `full`'s prefill
  double kept_sum = 0.0;        ///< compression rows: KV bytes after / before
  double compress_sum = 0.0;    ///< compression rows: seconds
};

int fail(const error& e) {
  std::fprintf(stderr, "quality_bench: %s\n", e.to_string().c_str());
  return 1;
}

/// The generated answer as a word: decoded text without surrounding spaces.
std::string answer_text(const tokenizer& tok, const generation_result& g) {
  std::string s = tok.decode(g.tokens);
  const auto b = s.find_first_not_of(" \n\t");
  const auto e = s.find_last_not_of(" \n\t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

void record(policy_row& row, const quality_case& c, const tokenizer& tok,
            const generation_result& reference, const generation_result& g) {
  const agreement a = compare_generations(reference, g);
  const bool ok = !c.answer.empty() && answer_text(tok, g) == c.answer;
  row.correct += ok ? 1 : 0;
  auto& k = row.per_kind[c.kind];
  k.first += ok ? 1 : 0;
  ++k.second;
  row.first_agree += a.first_token_match ? 1 : 0;
  row.kl_sum += a.first_token_kl;
  row.match_sum += a.token_match;
  row.recomputed_sum += g.stats.recomputed_fraction;
  row.ttft_sum += g.ttft_seconds;
  if (g.compression && g.compression->bytes_before > 0)
    row.kept_sum += double(g.compression->bytes_after) / double(g.compression->bytes_before);
  row.compress_sum += g.compress_seconds;
  ++row.n;
}

std::string percent(int num, int den) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", den > 0 ? 100.0 * num / den : 0.0);
  return buf;
}

/// A note for policies that, at this image size, are another policy.
std::string same_as(const std::string& name, int image_tokens) {
  auto p = parse_policy(name);
  if (p && p->kind == policy_kind::mpic && p->k >= image_tokens)
    return " (k >= " + std::to_string(image_tokens) +
           " image tokens: every token recomputed, = full)";
  if (p && p->kind == policy_kind::prefix)
    return " (no image is a prefix: nothing reused, = full)";
  return "";
}

/// The compression rows' table: FastCache's stage after a full prefill.
void compression_table(std::ostringstream& md, bool vqa, int question_tokens,
                       const policy_row& full, const std::vector<policy_row>& rows) {
  char buf[512];
  md << "\n## KV compression (FastCache's stage) after a full prefill\n\n"
     << "The prompt is prefilled with `full`, its first token taken from the prefill's\n"
     << "logits (as the compress stage runs after it), then its KV is compressed and\n"
     << "every later token decodes from the compressed sequence "
        "(engine/kv_compression.hpp;\n`learned`: the model's "
        "`fastcache_compressor.safetensors`, tools/fastcache/).\n"
     << "`KV kept`: pool bytes after / before compression.\n\n";
  if (question_tokens > 0)
    md << "Here the prompt's last " << question_tokens
       << " tokens (the question's end and the assistant tag) were\nnot prefilled: they "
          "were decoded one by one over the compressed KV, and the\nanswer's first token "
          "came from the last one's logits, as when a later turn's\nquestion meets a "
          "compressed context. The answer then depends on what\ncompression kept.\n\n";
  md << "| compression | " << (vqa ? "accuracy | " : "")
     << "identical greedy tokens with uncompressed | KV kept | mean compress (ms) |\n"
     << (vqa ? "|---|---|---|---|---|\n" : "|---|---|---|---|\n");
  if (vqa)
    std::snprintf(buf, sizeof buf, "| none | %s | 100.0%% | 100.0%% | 0 |\n",
                  percent(full.correct, full.n).c_str());
  else
    std::snprintf(buf, sizeof buf, "| none | 100.0%% | 100.0%% | 0 |\n");
  md << buf;
  for (const auto& r : rows) {
    if (!r.compression.enabled())
      continue;
    const std::string name = r.compression.to_string();
    if (vqa)
      std::snprintf(buf, sizeof buf, "| %s | %s | %.1f%% | %.1f%% | %.2f |\n", name.c_str(),
                    percent(r.correct, r.n).c_str(), r.match_sum / r.n * 100.0,
                    r.kept_sum / r.n * 100.0, r.compress_sum / r.n * 1e3);
    else
      std::snprintf(buf, sizeof buf, "| %s | %.1f%% | %.1f%% | %.2f |\n", name.c_str(),
                    r.match_sum / r.n * 100.0, r.kept_sum / r.n * 100.0,
                    r.compress_sum / r.n * 1e3);
    md << buf;
  }
}

std::string markdown(const options& opt, const std::string& command, const llava_engine& e,
                     const std::vector<quality_case>& cases, const std::vector<policy_row>& all,
                     int image_tokens) {
  std::vector<policy_row> rows;
  for (const auto& r : all)
    if (!r.compression.enabled())
      rows.push_back(r);
  const bool vqa = !opt.vqa.empty();
  const int n = static_cast<int>(cases.size());
  std::ostringstream md;
  char buf[512];
  if (vqa) {
    md << "# Reuse-policy quality on a trained LLaVA\n\n"
       << "Regenerate with\n\n```sh\n"
       << command << "\n```\n\n"
       << "(bench/quality_bench.cpp; the calibration writes the `vlcache_profile.json` that\n"
       << "`vlcache:R` uses; tools/train/README.md regenerates the model and the questions).\n\n"
       << "Model: `" << opt.model << "`, trained by tools/train/train.py on a procedural\n"
       << "multi-image visual QA task (colours, shapes, counts, sides; questions about one\n"
       << "or two of 1-3 images; one-word answers). Questions: the first " << n
       << " held-out questions\n(`" << opt.vqa << "`), the images in the user turn after "
       << "text or other images, never a\nprefix; LLaVA-1.5 chat template; greedy decoding of "
       << "up to " << opt.max_tokens << " tokens. Each image is\ncompiled standalone first "
       << "(as a KV library entry, positions 0.." << image_tokens - 1 << "), then linked\n"
       << "at its place in the prompt. One image is " << image_tokens << " tokens.\n`vlcache` used "
       << (e.vlcache().uniform ? "a uniform profile (no vlcache_profile.json)"
                               : "the calibrated vlcache_profile.json")
       << " in this run.\n\n"
       << "| policy | accuracy | first-token agreement with full | mean first-token KL (nats) "
          "| identical greedy tokens | recomputed | mean TTFT (ms) |\n"
       << "|---|---|---|---|---|---|---|\n";
  } else {
    md << "# Reuse-policy quality vs full recompute (random weights)\n\n"
       << "Regenerate with `" << command << "`\n(bench/quality_bench.cpp; the calibration "
       << "writes the vlcache profile that `vlcache:R` uses).\n\n"
       << "**Read this as a plumbing check, not a quality claim.** `" << opt.model
       << "` has random\nweights: its outputs carry no meaning, and how far a policy drifts from "
          "the full\n"
       << "recompute on it says little about a trained LLaVA (docs/quality.md has the trained\n"
       << "model's table). What this table does show is that every policy runs end to end\n"
       << "(compile each image standalone, link its KV at a new position, recompute the\n"
       << "policy's tokens in one pass, decode) and that more recompute moves the output\n"
       << "towards `full`.\n\n"
       << "Setup: " << n << " fixed prompts with 2-3 procedurally drawn images each, the images\n"
       << "inside the text (never a prefix), LLaVA-1.5 chat template, greedy decoding of "
       << opt.max_tokens << "\ntokens. Each image is compiled standalone first, as a KV "
       << "library entry, then linked.\n`vlcache` used "
       << (e.vlcache().uniform ? "a uniform profile (no vlcache_profile.json)"
                               : "the calibrated vlcache_profile.json")
       << " in this run.\n\n"
       << "| policy | first-token agreement | mean first-token KL (nats) | identical greedy "
          "tokens | recomputed | mean TTFT (ms) |\n"
       << "|---|---|---|---|---|---|\n";
  }
  for (const auto& r : rows) {
    const std::string name = r.name + same_as(r.name, image_tokens);
    if (vqa)
      std::snprintf(buf, sizeof buf, "| %s | %s | %d/%d | %.4g | %.1f%% | %.1f%% | %.1f |\n",
                    name.c_str(), percent(r.correct, r.n).c_str(), r.first_agree, r.n,
                    r.kl_sum / r.n, r.match_sum / r.n * 100.0, r.recomputed_sum / r.n * 100.0,
                    r.ttft_sum / r.n * 1e3);
    else
      std::snprintf(buf, sizeof buf, "| %s | %d/%d | %.4g | %.1f%% | %.1f%% | %.0f |\n",
                    name.c_str(), r.first_agree, r.n, r.kl_sum / r.n, r.match_sum / r.n * 100.0,
                    r.recomputed_sum / r.n * 100.0, r.ttft_sum / r.n * 1e3);
    md << buf;
  }
  if (vqa) {
    md << "\nAccuracy per question kind:\n\n| policy |";
    for (const auto& [kind, counts] : rows.front().per_kind)
      md << ' ' << kind << " (" << counts.second << ") |";
    md << "\n|---|";
    for (size_t i = 0; i < rows.front().per_kind.size(); ++i)
      md << "---|";
    md << '\n';
    for (const auto& r : rows) {
      md << "| " << r.name << " |";
      for (const auto& [kind, counts] : r.per_kind)
        md << ' ' << percent(counts.first, counts.second) << " |";
      md << '\n';
    }
    md << "\n`accuracy`: the greedy answer, decoded and trimmed, equals the reference word.\n";
  }
  md << "\n`recomputed` is the share of (token, layer) pairs computed in the linked prefill;\n"
     << "TTFT is plan + prefill + first token on the CPU backend of the machine that ran it\n"
     << "(image KV already in memory), shown for orientation only: use `bench/ttft_bench`\n"
     << "for timing comparisons.\n";
  if (all.size() > rows.size())
    compression_table(md, vqa, opt.question_tokens, rows.front(), all);
  return md.str();
}

int run(const options& opt, const std::string& command) {
  auto be = make_backend("cpu", opt.threads);
  if (!be)
    return fail(be.err());
  kv_pool_options pool;
  pool.block_size = 16;
  pool.n_blocks = 256; // 4096 tokens: one prompt of 3 images at a time
  auto eng = llava_engine::load(opt.model, **be, pool);
  if (!eng)
    return fail(eng.err());
  llava_engine& e = **eng;
  auto enc = image_encoder::create(**be, e.config(), lookup_in(e.weights()));
  if (!enc)
    return fail(enc.err());
  const tokenizer& tok = e.tokenizer();

  std::vector<quality_case> cases;
  if (opt.vqa.empty()) {
    cases = builtin_cases(e.config().vision.image_size);
  } else {
    auto c = load_vqa_cases(opt.vqa, opt.limit);
    if (!c)
      return fail(c.err());
    cases = std::move(*c);
  }
  std::vector<std::string> policies = !opt.policies.empty() ? opt.policies
                                      : opt.vqa.empty()     ? default_policies
                                                            : vqa_policies;
  std::vector<policy_row> rows(1);
  rows.front().name = "full";
  for (const auto& p : policies) {
    auto spec = parse_policy(p);
    if (!spec)
      return fail(spec.err());
    if (spec->kind != policy_kind::full) {
      rows.emplace_back();
      rows.back().name = spec->to_string();
    }
  }
  std::optional<learned_compressor> learned;
  for (const auto& text : opt.compressions) {
    auto spec = parse_compression(text);
    if (!spec)
      return fail(spec.err());
    if (!spec->enabled())
      continue;
    if (spec->method == compression_method::learned && !learned) {
      const auto& t = e.config().text;
      auto c = learned_compressor::load(**be, e.model_dir() / learned_compressor_file, t.num_layers,
                                        t.kv_dim());
      if (!c)
        return fail(c.err());
      learned = std::move(*c);
    }
    rows.emplace_back();
    rows.back().name = "full";
    rows.back().compression = *spec;
  }
  sampling_params greedy;
  greedy.stop_token_ids = {tok.eos_id()};

  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const auto& c = cases[ci];
    const int n_images = static_cast<int>(c.images.size());
    std::vector<std::vector<float>> emb;
    std::vector<compiled_image> entries;
    for (const auto& img : c.images) {
      auto x = enc->encode(img);
      if (!x)
        return fail(x.err());
      auto compiled = e.compile_image(*x);
      if (!compiled)
        return fail(compiled.err());
      emb.push_back(std::move(*x));
      entries.push_back(std::move(*compiled));
    }
    auto images = [&](bool cached) {
      std::vector<prompt_image> v;
      for (int i = 0; i < n_images; ++i) {
        prompt_image img;
        img.key = "image-" + std::to_string(i);
        img.n_tokens = static_cast<int>(emb[static_cast<size_t>(i)].size() / size_t(enc->hidden()));
        img.embeddings = emb[static_cast<size_t>(i)].data();
        img.cached = cached ? &entries[static_cast<size_t>(i)] : nullptr;
        v.push_back(img);
      }
      return v;
    };
    auto text = chat_prompt(tok, c.user, n_images);
    if (!text)
      return fail(text.err());
    auto full_prompt = build_prompt(tok, *text, images(false));
    if (!full_prompt)
      return fail(full_prompt.err());
    auto reference = generate(e, *full_prompt, *parse_policy("full"), greedy, opt.max_tokens);
    if (!reference)
      return fail(reference.err());
    record(rows.front(), c, tok, *reference, *reference);
    auto linked = build_prompt(tok, *text, images(true));
    if (!linked)
      return fail(linked.err());
    for (size_t r = 1; r < rows.size(); ++r) {
      const bool compressing = rows[r].compression.enabled();
      const generation_compression cmp{rows[r].compression, learned ? &*learned : nullptr,
                                       opt.question_tokens};
      auto g = generate(e, compressing ? *full_prompt : *linked, *parse_policy(rows[r].name),
                        greedy, opt.max_tokens, cmp);
      if (!g)
        return fail(g.err());
      record(rows[r], c, tok, *reference, *g);
    }
    if ((ci + 1) % 25 == 0 || ci + 1 == cases.size())
      std::fprintf(stderr, "quality_bench: %zu/%zu prompts done\n", ci + 1, cases.size());
  }

  const std::string text = markdown(opt, command, e, cases, rows, enc->view_tokens());
  std::fputs(text.c_str(), stdout);
  if (!opt.out.empty()) {
    std::ofstream f{opt.out};
    f << text;
    if (!f)
      return fail(make_error(errc::io_error, "cannot write ", opt.out));
  }
  return 0;
}

} // namespace
} // namespace mosaic::bench

int main(int argc, char** argv) {
  mosaic::bench::options opt;
  CLI::App app{"Accuracy, first-token agreement and KL of each reuse policy vs full"};
  app.add_option("--model", opt.model, "model (builtin:small or an HF LLaVA directory)");
  app.add_option("--vqa", opt.vqa,
                 "held-out VQA directory (heldout.jsonl + PNGs, tools/train/export_heldout.py); "
                 "default: the built-in prompts");
  app.add_option("--limit", opt.limit, "at most this many --vqa questions (0: all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--policies", opt.policies, "policies to compare with full (comma separated)")
      ->delimiter(',');
  app.add_option("--threads", opt.threads, "CPU threads (0: every core)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-tokens", opt.max_tokens, "greedy tokens compared")
      ->check(CLI::PositiveNumber);
  app.add_option("--compressions", opt.compressions,
                 "also compress the full prefill's KV with each of these and decode from it "
                 "(';' separated, e.g. \"snapkv:img=0.5;keynorm:img=0.5;learned\")")
      ->delimiter(';');
  app.add_option("--question-tokens", opt.question_tokens,
                 "compression rows: the prompt's last N tokens are decoded over the compressed KV "
                 "(a question meeting a compressed context) instead of prefilled")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--out", opt.out, "write the markdown document here (e.g. docs/quality.md)");
  CLI11_PARSE(app, argc, argv);
  std::string args;
  if (opt.model != "builtin:small")
    args += " --model " + opt.model;
  if (!opt.vqa.empty())
    args += " --vqa " + opt.vqa;
  if (opt.limit > 0)
    args += " --limit " + std::to_string(opt.limit);
  if (!opt.policies.empty()) {
    args += " --policies ";
    for (size_t i = 0; i < opt.policies.size(); ++i)
      args += (i ? "," : "") + opt.policies[i];
  }
  if (!opt.compressions.empty()) {
    args += " --compressions '";
    for (size_t i = 0; i < opt.compressions.size(); ++i)
      args += (i ? ";" : "") + opt.compressions[i];
    args += "'";
  }
  if (opt.question_tokens > 0)
    args += " --question-tokens " + std::to_string(opt.question_tokens);
  if (opt.max_tokens != 8)
    args += " --max-tokens " + std::to_string(opt.max_tokens);
  const std::string out = opt.out.empty() ? "" : " --out " + opt.out;
  const std::string command =
      "mosaic model calibrate --model " + opt.model + " && build/bench/quality_bench" + out + args;
  return mosaic::bench::run(opt, command);
}
