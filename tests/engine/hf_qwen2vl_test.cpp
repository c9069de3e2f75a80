// Fidelity against HF transformers for Qwen2-VL and Qwen2.5-VL:
// tests/data/hf_tiny_qwen2vl/ and hf_tiny_qwen25vl/, tiny random
// Qwen2VLForConditionalGeneration / Qwen2_5_VLForConditionalGeneration
// checkpoints saved by transformers 4.49, with what transformers (PyTorch,
// CPU, float32) computes on five chat prompts of zero to three images of
// different sizes at several positions
// (tools/golden/make_qwen2vl_goldens.py). Mosaic must load the same
// directories and reproduce, stage by stage: the prompt's ids (byte-level
// BPE from tokenizer.json), each image's pixels (smart_resize), patch
// embeddings and merged embeddings (2-D RoPE; Qwen2.5-VL's windows,
// RMSNorm and SwiGLU), M-RoPE's three position components and rope delta
// for the whole prompt, the last position's logits and the greedy
// continuation (decode positions = index + delta). Linking each image's
// compiled KV (computed alone from the origin) at its new place: its K,
// turned by M-RoPE where the prompt puts it, equals the plain prefill's,
// and a policy that recomputes every token gives the plain prefill's
// logits.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/decoder.hpp"
#include "engine/decoder_weights.hpp"
#include "engine/image_encoder.hpp"
#include "engine/kv_pool.hpp"
#include "engine/model/bpe_tokenizer.hpp"
#include "engine/model/image.hpp"
#include "engine/model/model_config.hpp"
#include "engine/model/qwen2vl_image.hpp"
#include "engine/model/safetensors.hpp"
#include "engine/model/tokenizer.hpp"
#include "engine/model/weights.hpp"
#include "engine/policies.hpp"
#include "engine/policy_spec.hpp"
#include "engine/prefill.hpp"
#include "engine/qwen_vision.hpp"
#include "engine/sampler.hpp"
#include "engine/weight_lookup.hpp"
#include "tests/engine/fidelity_util.hpp"

namespace mosaic {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::max_abs_error;
using test::max_rel_error;

// As the LLaVA fidelity tests: the stages sum in another order than
// PyTorch, within ~1e-6 relative; 1e-4 leaves two orders of magnitude.
// Pixels: engine_model_qwen2vl_image_test measures them within 1e-6.
constexpr double rel_tolerance = 1e-4;
constexpr double pixel_tolerance = 1e-5;

struct golden_prompt {
  std::vector<chat_message> messages; // images as "<image>" markers
  std::string text;
  std::vector<std::string> images;
  std::vector<vision_grid> grids;
  std::vector<int> image_tokens;
  std::vector<int32_t> input_ids, expanded_input_ids, greedy_tokens;
  std::vector<std::vector<int32_t>> position_ids; // [3][n]
  int rope_delta = 0;
};

/// One fixture: the model on the CPU backend and its goldens.
struct qwen_fixture {
  fs::path dir;
  model_config cfg;
  std::unique_ptr<model_weights> weights;
  std::unique_ptr<backend> be;
  std::unique_ptr<decoder_weights> decoder;
  std::unique_ptr<kv_pool> pool;
  std::unique_ptr<qwen_vision> vision;
  std::unique_ptr<bpe_tokenizer> tok;
  std::unique_ptr<safetensors_file> goldens;
  std::vector<golden_prompt> prompts;

  std::vector<float> golden(const std::string& name) const {
    auto t = goldens->read_f32(name);
    EXPECT_TRUE(t) << name << ": " << t.err().to_string();
    return t ? std::move(*t) : std::vector<float>{};
  }
  static std::string key(size_t p, size_t i, const char* what) {
    return "p" + std::to_string(p) + ".i" + std::to_string(i) + "." + what;
  }
  decoded_image png(const std::string& name) const {
    std::ifstream in(dir / "goldens" / name, std::ios::binary);
    std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), {}};
    auto img = decode_image(bytes, image_limits{});
    EXPECT_TRUE(img) << name << ": " << img.err().to_string();
    return img ? std::move(*img) : decoded_image{};
  }
  qwen2vl_image_config image_config() const { return qwen_preprocessing(cfg); }
  /// The whole image path from the PNG: preprocessing, then the tower.
  std::vector<float> encode(const std::string& file, vision_grid* grid = nullptr) const {
    auto px = preprocess_qwen2vl(png(file), image_config());
    EXPECT_TRUE(px) << file << ": " << px.err().to_string();
    if (!px)
      return {};
    if (grid != nullptr)
      *grid = px->grid;
    auto e = vision->encode(px->values, px->grid);
    EXPECT_TRUE(e) << file << ": " << e.err().to_string();
    return e ? std::move(*e) : std::vector<float>{};
  }
  token_grid tokens_of(const vision_grid& g) const {
    const int m = cfg.vision.spatial_merge_size;
    return {g.t, g.h / m, g.w / m};
  }
  /// Prompt p with its images' embeddings (and compiled entries).
  prompt make_prompt(size_t p, const std::vector<std::vector<float>>& emb,
                     const std::vector<compiled_image>* entries = nullptr) const {
    const auto& g = prompts[p];
    std::vector<prompt_image> images;
    for (size_t i = 0; i < emb.size(); ++i)
      images.push_back({"image-" + std::to_string(i), g.image_tokens[i],
                        entries != nullptr ? &(*entries)[i] : nullptr, emb[i].data(),
                        tokens_of(g.grids[i])});
    auto pr = split_prompt(g.input_ids, cfg.image_token_index, std::move(images));
    EXPECT_TRUE(pr) << pr.err().to_string();
    return pr ? std::move(*pr) : prompt{};
  }
  /// Prompt p's images encoded from their PNGs and each compiled alone
  /// from the M-RoPE origin (as a KV library holds them).
  void compile_images(size_t p, std::vector<std::vector<float>>& emb,
                      std::vector<compiled_image>& entries) const {
    const auto& g = prompts[p];
    for (size_t i = 0; i < g.images.size(); ++i) {
      emb.push_back(encode(g.images[i]));
      auto c = compile_image(*be, *decoder, *pool, emb.back().data(), g.image_tokens[i], {}, 0,
                             tokens_of(g.grids[i]));
      ASSERT_TRUE(c) << c.err().to_string();
      entries.push_back(std::move(*c));
    }
  }
  result<link_plan> plan(const prompt& pr, const char* policy) const {
    auto pol = parse_policy(policy);
    if (!pol)
      return std::move(pol).err();
    return build_link_plan(pr, *pol, cfg.text);
  }
  prefill_result run(const prompt& pr, const char* policy, const prefill_options& o = {}) const {
    auto pl = plan(pr, policy);
    EXPECT_TRUE(pl) << pl.err().to_string();
    if (!pl)
      return {};
    auto r = run_prefill(*be, *decoder, *pool, *pl, o);
    EXPECT_TRUE(r) << r.err().to_string();
    return r ? std::move(*r) : prefill_result{};
  }
  std::vector<int32_t> greedy(prefill_result& r, size_t n) const {
    std::vector<int32_t> got{argmax(r.logits)};
    while (got.size() < n && got.back() != cfg.text.eos_token_id) {
      decode_input in{&r.sequence, got.back(), r.sequence.length() + r.rope_delta};
      auto logits = decode_step(*be, *decoder, *pool, std::span(&in, 1));
      EXPECT_TRUE(logits) << logits.err().to_string();
      if (!logits)
        break;
      got.push_back(argmax(*logits));
    }
    return got;
  }
};

fs::path data_dir() {
  const char* env = std::getenv("MOSAIC_TEST_DATA");
  return fs::path(env != nullptr ? env : "tests/data");
}

std::unique_ptr<qwen_fixture> load_fixture(const std::string& name) {
  auto f = std::make_unique<qwen_fixture>();
  f->dir = data_dir() / name;
  std::ifstream in(f->dir / "goldens" / "goldens.json");
  EXPECT_TRUE(in) << "missing " << f->dir << " (make_qwen2vl_goldens.py writes it)";
  const json m = json::parse(in, nullptr, false);
  EXPECT_TRUE(m.is_object());
  if (!m.is_object())
    return nullptr;
  for (const auto& p : m["prompts"]) {
    std::vector<chat_message> messages;
    for (const auto& msg : p["messages"]) {
      chat_message c{msg["role"], ""};
      if (msg["content"].is_string())
        c.text_with_image_markers = msg["content"];
      else
        for (const auto& part : msg["content"])
          c.text_with_image_markers +=
              part["type"] == "image" ? std::string(image_marker) : part["text"].get<std::string>();
      messages.push_back(std::move(c));
    }
    golden_prompt g{std::move(messages),
                    p["text"],
                    p["images"],
                    {},
                    p["image_tokens"],
                    p["input_ids"],
                    p["expanded_input_ids"],
                    p["greedy_tokens"],
                    p["position_ids"],
                    p["rope_delta"]};
    for (const auto& t : p["image_grid_thw"])
      g.grids.push_back({t[0].get<int>(), t[1].get<int>(), t[2].get<int>()});
    f->prompts.push_back(std::move(g));
  }
  auto cfg = load_model_config(f->dir);
  EXPECT_TRUE(cfg) << cfg.err().to_string();
  if (!cfg)
    return nullptr;
  f->cfg = *cfg;
  auto w = model_weights::load(f->dir, f->cfg);
  EXPECT_TRUE(w) << w.err().to_string();
  if (!w)
    return nullptr;
  f->weights = std::make_unique<model_weights>(std::move(*w));
  f->be = make_cpu_backend(2);
  auto dec = upload_decoder_weights(*f->be, f->cfg.text, lookup_in(*f->weights));
  EXPECT_TRUE(dec) << dec.err().to_string();
  auto pool = kv_pool::create(*f->be, f->cfg.text.num_layers, f->cfg.text.kv_dim(), {64, 16});
  EXPECT_TRUE(pool) << pool.err().to_string();
  auto vis = qwen_vision::create(*f->be, f->cfg, lookup_in(*f->weights));
  EXPECT_TRUE(vis) << vis.err().to_string();
  auto tok = bpe_tokenizer::load(f->dir / "tokenizer.json");
  EXPECT_TRUE(tok) << tok.err().to_string();
  auto g = safetensors_file::open(f->dir / "goldens" / "goldens.safetensors");
  EXPECT_TRUE(g) << g.err().to_string();
  if (!dec || !pool || !vis || !tok || !g)
    return nullptr;
  f->decoder = std::make_unique<decoder_weights>(std::move(*dec));
  f->pool = std::move(*pool);
  f->vision = std::make_unique<qwen_vision>(std::move(*vis));
  f->tok = std::make_unique<bpe_tokenizer>(std::move(*tok));
  f->goldens = std::make_unique<safetensors_file>(std::move(*g));
  return f;
}

class hf_qwen_vl : public ::testing::TestWithParam<const char*> {
protected:
  void SetUp() override {
    fx_ = load_fixture(GetParam());
    ASSERT_NE(fx_, nullptr);
  }
  std::unique_ptr<qwen_fixture> fx_;
};

TEST_P(hf_qwen_vl, config_reads_the_tower_m_rope_and_counts_tokens_as_hf) {
  const auto& c = fx_->cfg;
  ASSERT_TRUE(c.qwen_vl());
  EXPECT_EQ(c.qwen25_vl(), std::string{GetParam()} == "hf_tiny_qwen25vl");
  EXPECT_TRUE(c.text.mrope());
  EXPECT_EQ(c.text.mrope_section, (std::array<int, 3>{2, 3, 3}));
  EXPECT_TRUE(c.text.attention_bias);
  EXPECT_EQ(c.vision.out_hidden_size, c.text.hidden_size);
  EXPECT_EQ(c.vision.hidden_size, 32);
  EXPECT_EQ(c.vision.hidden_act, c.qwen25_vl() ? "silu" : "quick_gelu"); // defaults: not saved
  EXPECT_EQ(c.vision.patch_size, 14);
  EXPECT_EQ(c.vision.spatial_merge_size, 2);
  EXPECT_EQ(c.vision.max_pixels, 28 * 28 * 64);
  EXPECT_EQ(c.image_tokens(), 64);
  if (c.qwen25_vl()) {
    EXPECT_EQ(c.vision.window_size, 56);
    EXPECT_EQ(c.vision.fullatt_block_indexes, (std::vector<int>{1, 3}));
  }
  size_t checked = 0;
  for (const auto& g : fx_->prompts)
    for (size_t i = 0; i < g.images.size(); ++i, ++checked) {
      const auto img = fx_->png(g.images[i]);
      auto n = c.image_tokens_for(img.height, img.width);
      ASSERT_TRUE(n) << n.err().to_string();
      EXPECT_EQ(*n, g.image_tokens[i]) << g.images[i];
    }
  EXPECT_EQ(checked, 7u);
}

TEST_P(hf_qwen_vl, prompt_ids_match_hf_before_and_after_image_expansion) {
  for (size_t p = 0; p < fx_->prompts.size(); ++p) {
    const auto& g = fx_->prompts[p];
    auto ids = fx_->tok->encode(g.text);
    ASSERT_TRUE(ids) << ids.err().to_string();
    EXPECT_EQ(*ids, g.input_ids) << g.text;
    std::vector<std::vector<float>> none;
    for (int n : g.image_tokens)
      none.emplace_back(size_t(n) * size_t(fx_->cfg.text.hidden_size));
    EXPECT_EQ(test::expanded_ids(fx_->make_prompt(p, none), fx_->cfg.image_token_index),
              g.expanded_input_ids)
        << g.text;
  }
}

TEST_P(hf_qwen_vl, the_served_tokenizer_applies_qwens_chat_template_and_ids_as_hf) {
  auto tok = tokenizer::load(fx_->dir, fx_->cfg);
  ASSERT_TRUE(tok) << tok.err().to_string();
  EXPECT_EQ(tok->bos_id(), -1); // Qwen2 prepends nothing
  EXPECT_EQ(tok->eos_id(), fx_->cfg.text.eos_token_id);
  for (const auto& g : fx_->prompts) {
    const std::string text = tok->apply_chat_template(g.messages, true);
    EXPECT_EQ(text, g.text);
    EXPECT_EQ(tok->encode_prompt(text), g.input_ids);
    // "<image>" markers in a raw prompt become the same three tokens.
    const std::string three = "<|vision_start|><|image_pad|><|vision_end|>";
    std::string raw = g.text;
    for (size_t at; (at = raw.find(three)) != std::string::npos;)
      raw.replace(at, three.size(), image_marker);
    EXPECT_EQ(tok->encode_prompt(raw), g.input_ids);
  }
  // Answers skip the special tokens; a stream's pieces join to the text.
  const auto ids = tok->encode("<|im_start|>assistant\nThe cat is red.<|im_end|>");
  EXPECT_EQ(tok->decode(ids), "assistant\nThe cat is red.");
  std::string joined;
  for (int32_t id : ids)
    joined += tok->decode_piece(id);
  EXPECT_EQ(joined, "assistant\nThe cat is red.");
}

TEST_P(hf_qwen_vl, pixels_patch_embeddings_and_merged_embeddings_match_hf) {
  const int patch_len = 3 * 2 * 14 * 14;
  for (size_t p = 0; p < fx_->prompts.size(); ++p) {
    const auto& g = fx_->prompts[p];
    for (size_t i = 0; i < g.images.size(); ++i) {
      SCOPED_TRACE("prompt " + std::to_string(p) + " image " + g.images[i]);
      const auto hf_pixels = fx_->golden(fx_->key(p, i, "pixel_values"));
      auto mine = preprocess_qwen2vl(fx_->png(g.images[i]), fx_->image_config());
      ASSERT_TRUE(mine) << mine.err().to_string();
      EXPECT_EQ(mine->grid.h, g.grids[i].h);
      EXPECT_EQ(mine->grid.w, g.grids[i].w);
      EXPECT_LE(max_abs_error(mine->values, hf_pixels), pixel_tolerance);
      ASSERT_EQ(hf_pixels.size() % patch_len, 0u);
      // The tower on HF's pixels.
      auto emb = fx_->vision->encode(hf_pixels, g.grids[i]);
      ASSERT_TRUE(emb) << emb.err().to_string();
      const auto hf_emb = fx_->golden(fx_->key(p, i, "image_embeddings"));
      EXPECT_EQ(emb->size(), size_t(g.image_tokens[i]) * size_t(fx_->cfg.text.hidden_size));
      EXPECT_LE(max_rel_error(*emb, hf_emb), rel_tolerance);
      // The whole path, from the PNG.
      EXPECT_LE(max_rel_error(fx_->encode(g.images[i]), hf_emb), rel_tolerance);
    }
  }
}

TEST_P(hf_qwen_vl, window_order_is_hfs_get_window_index) {
  // HF's window_index for a 4 x 14 patch grid (2 x 7 merged units) with
  // windows of 2 x 2 units: windows left to right, units row by row.
  auto w = qwen_vision::window_order({1, 4, 14}, 2, 2);
  EXPECT_EQ(w.order, (std::vector<int32_t>{0, 1, 7, 8, 2, 3, 9, 10, 4, 5, 11, 12, 6, 13}));
  EXPECT_EQ(w.window_units, (std::vector<int>{4, 4, 4, 2}));
  // A side the windows divide: no empty windows.
  auto even = qwen_vision::window_order({1, 8, 8}, 2, 2);
  EXPECT_EQ(even.window_units, (std::vector<int>{4, 4, 4, 4}));
}

TEST_P(hf_qwen_vl, m_rope_positions_and_delta_equal_get_rope_index) {
  for (size_t p = 0; p < fx_->prompts.size(); ++p) {
    const auto& g = fx_->prompts[p];
    SCOPED_TRACE(g.text);
    std::vector<std::vector<float>> none;
    for (int n : g.image_tokens)
      none.emplace_back(size_t(n) * size_t(fx_->cfg.text.hidden_size));
    auto pl = fx_->plan(fx_->make_prompt(p, none), "full");
    ASSERT_TRUE(pl) << pl.err().to_string();
    const size_t n = g.expanded_input_ids.size();
    ASSERT_EQ(pl->rope_positions.size(), 3 * n);
    for (size_t c = 0; c < 3; ++c)
      EXPECT_EQ(std::vector<int32_t>(pl->rope_positions.begin() + std::ptrdiff_t(c * n),
                                     pl->rope_positions.begin() + std::ptrdiff_t((c + 1) * n)),
                g.position_ids[c])
          << "component " << c;
    EXPECT_EQ(pl->rope_delta, g.rope_delta);
  }
}

TEST_P(hf_qwen_vl, full_prefill_logits_and_greedy_continuation_equal_hf) {
  for (size_t p = 0; p < fx_->prompts.size(); ++p) {
    const auto& g = fx_->prompts[p];
    SCOPED_TRACE(g.text);
    std::vector<std::vector<float>> emb;
    for (const auto& f : g.images)
      emb.push_back(fx_->encode(f));
    auto r = fx_->run(fx_->make_prompt(p, emb), "full");
    ASSERT_TRUE(r.sequence.valid());
    EXPECT_EQ(r.sequence.length(), int(g.expanded_input_ids.size()));
    EXPECT_EQ(r.rope_delta, g.rope_delta);
    EXPECT_LE(max_rel_error(r.logits, fx_->golden("p" + std::to_string(p) + ".logits")),
              rel_tolerance);
    EXPECT_EQ(fx_->greedy(r, g.greedy_tokens.size()), g.greedy_tokens);
  }
}

TEST_P(hf_qwen_vl, cached_images_linked_at_new_places_turn_by_m_rope_as_the_prefill) {
  // Prompt 3: three images (4, 9 and 6 tokens) after a long history, each
  // compiled alone from the M-RoPE origin.
  const size_t p = 3;
  const auto& g = fx_->prompts[p];
  std::vector<std::vector<float>> emb;
  std::vector<compiled_image> entries;
  ASSERT_NO_FATAL_FAILURE(fx_->compile_images(p, emb, entries));
  // Without its grid an M-RoPE image cannot be compiled.
  EXPECT_FALSE(
      compile_image(*fx_->be, *fx_->decoder, *fx_->pool, emb[0].data(), g.image_tokens[0]));

  // Layer 0's K of every token as the pass leaves it in the pool.
  const int kv = fx_->cfg.text.kv_dim();
  auto layer0_k = [&](std::vector<float>& out) {
    prefill_options o;
    o.layer_done = [&, kv](int layer, const kv_sequence& seq) -> status {
      if (layer != 0)
        return {};
      const int n = int(g.expanded_input_ids.size());
      out.assign(size_t(n) * size_t(kv), 0.0f);
      const auto slots = seq.slots(0, n);
      for (int t = 0; t < n; ++t)
        std::copy_n(fx_->pool->k_layer(0) + size_t(slots[size_t(t)]) * size_t(kv), kv,
                    out.begin() + std::ptrdiff_t(size_t(t) * size_t(kv)));
      return {};
    };
    return o;
  };
  std::vector<float> plain_k, linked_k;
  const auto plain = fx_->run(fx_->make_prompt(p, emb), "full", layer0_k(plain_k));
  // full_reuse: every image token's KV from its entry, K turned at its new
  // place by its three components; layer 0's input is the same
  // embeddings, so its K must equal the plain prefill's.
  const auto reused =
      fx_->run(fx_->make_prompt(p, emb, &entries), "full_reuse", layer0_k(linked_k));
  ASSERT_EQ(linked_k.size(), plain_k.size());
  EXPECT_LE(max_rel_error(linked_k, plain_k), rel_tolerance);
  EXPECT_EQ(reused.rope_delta, g.rope_delta);
  // Every token recomputed (mpic:k with k >= the largest image) gives the
  // plain prefill's logits.
  const std::string all = "mpic:" + std::to_string(fx_->cfg.image_tokens());
  const auto linked = fx_->run(fx_->make_prompt(p, emb, &entries), all.c_str());
  EXPECT_LE(max_rel_error(linked.logits, plain.logits), rel_tolerance);
  EXPECT_EQ(argmax(linked.logits), g.greedy_tokens[0]);
}

TEST_P(hf_qwen_vl, every_policy_runs_under_m_rope_and_at_full_budget_equals_the_prefill) {
  // Prompt 2: two images (14 and 4 tokens) between text, compiled alone.
  const size_t p = 2;
  const auto& g = fx_->prompts[p];
  std::vector<std::vector<float>> emb;
  std::vector<compiled_image> entries;
  ASSERT_NO_FATAL_FAILURE(fx_->compile_images(p, emb, entries));
  const auto plain = fx_->run(fx_->make_prompt(p, emb), "full");
  // Every image token recomputed at every layer: the prefill's logits.
  for (const char* all : {"cacheblend:1.0", "vlcache:1.0", "mpic:64"}) {
    const auto r = fx_->run(fx_->make_prompt(p, emb, &entries), all);
    EXPECT_LE(max_rel_error(r.logits, plain.logits), rel_tolerance) << all;
    EXPECT_EQ(r.rope_delta, g.rope_delta) << all;
  }
  // Partial budgets link the rest of each image (on images of 4 and 14
  // tokens some recompute them whole).
  for (const char* some : {"cacheblend:0.15", "vlcache:0.05", "mpic:2", "full_reuse"}) {
    const auto r = fx_->run(fx_->make_prompt(p, emb, &entries), some);
    ASSERT_EQ(r.logits.size(), plain.logits.size()) << some;
    EXPECT_GE(argmax(r.logits), 0) << some; // finite logits
    EXPECT_EQ(r.sequence.length(), plain.sequence.length()) << some;
  }
}

INSTANTIATE_TEST_SUITE_P(fixtures, hf_qwen_vl,
                         ::testing::Values("hf_tiny_qwen2vl", "hf_tiny_qwen25vl"),
                         [](const auto& info) { return std::string{info.param}; });

} // namespace
} // namespace mosaic
