#include "engine/model/builtin_model.hpp"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <algorithm>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/model/tokenizer.hpp"
#include "engine/model/weights.hpp"
#include "tests/engine/model/temp_dir.hpp"

namespace mosaic {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(builtin_model, generation_is_byte_identical_and_loads) {
  test::temp_dir tmp;
  ASSERT_TRUE(write_builtin_model(builtin_preset::tiny, tmp.path() / "a"));
  ASSERT_TRUE(write_builtin_model(builtin_preset::tiny, tmp.path() / "b"));
  int files = 0;
  for (const auto& e : fs::directory_iterator(tmp.path() / "a")) {
    ++files;
    auto other = tmp.path() / "b" / e.path().filename();
    ASSERT_TRUE(fs::exists(other)) << other;
    EXPECT_EQ(slurp(e.path()), slurp(other)) << e.path().filename() << " differs between runs";
  }
  EXPECT_GE(files, 6);
  auto fa = compute_model_fingerprint(tmp.path() / "a");
  auto fb = compute_model_fingerprint(tmp.path() / "b");
  ASSERT_TRUE(fa && fb);
  EXPECT_EQ(*fa, *fb);

  // The same loaders as for a downloaded checkpoint.
  auto cfg = load_model_config(tmp.path() / "a");
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  EXPECT_EQ(cfg->image_tokens(), 16);
  EXPECT_EQ(cfg->vision.layers_to_run(), 1);
  EXPECT_EQ(cfg->text.num_kv_heads, 2);
  auto expected = builtin_config(builtin_preset::tiny);
  EXPECT_EQ(cfg->text.vocab_size, expected.text.vocab_size);
  EXPECT_EQ(cfg->image_token_index, expected.image_token_index);

  auto w = model_weights::load(tmp.path() / "a", *cfg);
  ASSERT_TRUE(w) << w.err().to_string();
  EXPECT_EQ(w->fingerprint(), *fa);
  const auto& embed = w->at("language_model.model.embed_tokens.weight");
  EXPECT_EQ(embed.shape, (std::vector<int64_t>{cfg->text.vocab_size, 64}));
  // Not degenerate: embeddings differ between tokens, norms are one.
  EXPECT_NE(embed.data[0], embed.data[64]);
  for (float x : w->at("language_model.model.norm.weight").data)
    EXPECT_EQ(x, 1.0f);

  auto tok = tokenizer::load(tmp.path() / "a", *cfg);
  ASSERT_TRUE(tok) << tok.err().to_string();
  EXPECT_EQ(tok->sp_vocab_size(), cfg->image_token_index);
  EXPECT_EQ(tok->image_token_id(), cfg->image_token_index);
}

// What transformers 5 and vLLM need to load the export with Mosaic's ids
// (the ids themselves are compared against the `tokenizers` library by
// bench/side_by_side.py tokcheck).
TEST(builtin_model, export_has_what_hf_servers_need) {
  using json = nlohmann::json;
  test::temp_dir tmp;
  ASSERT_TRUE(write_builtin_model(builtin_preset::tiny, tmp.path()));
  auto cfg = load_model_config(tmp.path());
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  auto tok = tokenizer::load(tmp.path(), *cfg);
  ASSERT_TRUE(tok) << tok.err().to_string();

  auto fast = json::parse(slurp(tmp.path() / "tokenizer.json"));
  EXPECT_EQ(fast["model"]["type"], "BPE");
  EXPECT_EQ(fast["model"]["vocab"].size(), static_cast<size_t>(tok->sp_vocab_size()));
  EXPECT_EQ(fast["model"]["vocab"]["<s>"], tok->bos_id());
  EXPECT_GT(fast["model"]["merges"].size(), 100u);
  EXPECT_EQ(fast["pre_tokenizer"]["prepend_scheme"], "first");
  bool image = false;
  for (const auto& t : fast["added_tokens"])
    image = image || (t["id"] == cfg->image_token_index && t["content"] == "<image>");
  EXPECT_TRUE(image) << "<image> is not an added token";

  auto proc = json::parse(slurp(tmp.path() / "processor_config.json"));
  EXPECT_EQ(proc["num_additional_image_tokens"], 1);
  auto tmpl = json::parse(slurp(tmp.path() / "chat_template.json"));
  EXPECT_EQ(tmpl["chat_template"], std::string(llava_chat_template_jinja()));
}

TEST(builtin_model, resolve_caches_and_survives_concurrent_first_use) {
  test::temp_dir tmp;
  ::setenv("MOSAIC_HOME", tmp.path().c_str(), 1);
  result<fs::path> r1 = make_error(errc::internal, "unset");
  result<fs::path> r2 = make_error(errc::internal, "unset");
  {
    std::jthread a([&] { r1 = resolve_model("builtin:tiny"); });
    std::jthread b([&] { r2 = resolve_model("builtin:tiny"); });
  }
  ASSERT_TRUE(r1) << r1.err().to_string();
  ASSERT_TRUE(r2) << r2.err().to_string();
  EXPECT_EQ(*r1, *r2);
  EXPECT_EQ(r1->parent_path(), tmp.path() / "models");
  // No temp directories left behind.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(tmp.path() / "models")) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
  // Reused, not regenerated.
  auto before = fs::last_write_time(*r1 / "model.safetensors");
  auto again = resolve_model("builtin:tiny");
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *r1);
  EXPECT_EQ(fs::last_write_time(*again / "model.safetensors"), before);
  ::unsetenv("MOSAIC_HOME");
}

TEST(builtin_model, bad_specs_are_refused_with_a_fix) {
  auto r = resolve_model("builtin:huge");
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("tiny, small, tiny-next, small-next, tiny-qwen2vl"), std::string::npos);
  auto p = resolve_model("/nonexistent/model/dir");
  ASSERT_FALSE(p);
  EXPECT_EQ(p.err().code, errc::not_found);
  EXPECT_NE(p.err().message.find("mosaic model init"), std::string::npos);
  test::temp_dir tmp;
  auto empty = resolve_model(tmp.path().string());
  ASSERT_FALSE(empty);
  EXPECT_NE(empty.err().message.find("config.json"), std::string::npos);
}

TEST(builtin_model, refuses_to_mix_with_another_checkpoint) {
  test::temp_dir tmp;
  std::ofstream(tmp.path() / "model-00001-of-00002.safetensors") << "x";
  auto s = write_builtin_model(builtin_preset::tiny, tmp.path());
  ASSERT_FALSE(s);
  EXPECT_NE(s.err().message.find("model-00001-of-00002.safetensors"), std::string::npos);
}

TEST(builtin_model, small_preset_geometry) {
  auto c = builtin_config(builtin_preset::small);
  EXPECT_TRUE(validate_model_config(c));
  EXPECT_EQ(c.image_tokens(), 576);
  EXPECT_EQ(c.text.head_dim(), 64);
  EXPECT_EQ(c.text.kv_dim(), 128);
  EXPECT_EQ(c.text.max_position_embeddings, 16384);
}

TEST(builtin_model, next_presets_are_llava_1_6_with_a_mistral_decoder) {
  auto dir = resolve_model("builtin:tiny-next");
  ASSERT_TRUE(dir) << dir.err().to_string();
  auto cfg = load_model_config(*dir);
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  EXPECT_TRUE(cfg->anyres());
  EXPECT_EQ(cfg->text.model_type, "mistral");
  EXPECT_EQ(cfg->vision.grid_pinpoints.size(), 5u);
  EXPECT_EQ(cfg->image_tokens(), 16 + 8 * 9);
  auto w = model_weights::load(*dir, *cfg);
  ASSERT_TRUE(w) << w.err().to_string();
  const host_tensor* nl = w->find("image_newline");
  ASSERT_NE(nl, nullptr);
  EXPECT_EQ(nl->shape, std::vector<int64_t>{cfg->text.hidden_size});
  auto small = builtin_config(builtin_preset::small_next);
  EXPECT_TRUE(validate_model_config(small));
  EXPECT_EQ(small.image_tokens(), 576 + 48 * 49);
  EXPECT_LT(small.image_tokens(), small.text.max_position_embeddings / 4);
}

TEST(builtin_model, qwen_presets_are_qwen2_vl_with_a_byte_level_bpe) {
  for (const char* spec : {"builtin:tiny-qwen2vl", "builtin:tiny-qwen25vl"}) {
    SCOPED_TRACE(spec);
    auto dir = resolve_model(spec);
    ASSERT_TRUE(dir) << dir.err().to_string();
    auto cfg = load_model_config(*dir);
    ASSERT_TRUE(cfg) << cfg.err().to_string();
    EXPECT_TRUE(cfg->qwen_vl());
    EXPECT_TRUE(cfg->text.mrope());
    EXPECT_EQ(cfg->image_tokens(), 64);
    auto w = model_weights::load(*dir, *cfg);
    ASSERT_TRUE(w) << w.err().to_string();
    EXPECT_NE(w->find("visual.merger.mlp.2.weight"), nullptr);
    EXPECT_NE(w->find("language_model.model.layers.0.self_attn.q_proj.bias"), nullptr);
    auto tok = tokenizer::load(*dir, *cfg);
    ASSERT_TRUE(tok) << tok.err().to_string();
    // Qwen2's layout: 256 bytes, 700 merges, then the 7 special tokens.
    EXPECT_EQ(tok->vocab_size(), 256 + 700 + 7);
    EXPECT_EQ(tok->image_token_id(), cfg->image_token_index);
    const std::string text = "A red square, a blue circle: 42 shapes in one picture!";
    const auto ids = tok->encode(text);
    EXPECT_LT(ids.size(), text.size() / 2); // merges shorten common English
    EXPECT_EQ(tok->decode(ids), text);
    const auto prompt = tok->encode_prompt(tok->apply_chat_template({{"user", "<image>Hi"}}, true));
    EXPECT_EQ(std::count(prompt.begin(), prompt.end(), cfg->image_token_index), 1);
    EXPECT_EQ(prompt.front(), tok->encode("<|im_start|>").front());
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "chat_template.json",
                          "preprocessor_config.json", "generation_config.json"})
      EXPECT_TRUE(std::filesystem::exists(*dir / f)) << f;
  }
}

} // namespace
} // namespace mosaic
