#include "engine/model/weights.hpp"

#include <fstream>
#include <functional>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/model/builtin_model.hpp"
#include "engine/model/safetensors.hpp"
#include "tests/engine/model/temp_dir.hpp"

namespace mosaic {
namespace {

namespace fs = std::filesystem;

// Writes config.json and a checkpoint with every tensor `cfg` implies
// (random values), letting a test rename, reshape, drop or add tensors.
struct checkpoint {
  model_config cfg = builtin_config(builtin_preset::tiny);
  std::function<std::string(const std::string&)> rename = [](const std::string& n) { return n; };
  std::function<bool(const expected_tensor&)> keep = [](const expected_tensor& e) {
    return e.required;
  };
  std::map<std::string, std::vector<int64_t>> reshape;
  std::map<std::string, std::vector<int64_t>> extra;
  st_dtype dtype = st_dtype::f32;
  uint64_t seed = std::random_device{}();

  std::map<std::string, std::vector<float>> write(const fs::path& dir) const {
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << to_hf_config_json(cfg);
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> dist;
    std::map<std::string, std::vector<float>> values;
    safetensors_writer w;
    auto add = [&](const std::string& name, std::vector<int64_t> shape) {
      int64_t n = 1;
      for (auto d : shape)
        n *= d;
      std::vector<float> v(static_cast<size_t>(n));
      for (auto& x : v)
        x = dist(rng);
      EXPECT_TRUE(w.add(rename(name), shape, v, dtype));
      values[name] = std::move(v);
    };
    for (const auto& e : expected_tensors(cfg)) {
      if (!keep(e))
        continue;
      auto it = reshape.find(e.name);
      add(e.name, it == reshape.end() ? e.shape : it->second);
    }
    for (const auto& [name, shape] : extra)
      add(name, shape);
    EXPECT_TRUE(w.write(dir / "model.safetensors"));
    return values;
  }
};

const char* q0 = "language_model.model.layers.0.self_attn.q_proj.weight";
const char* k1 = "language_model.model.layers.1.self_attn.k_proj.weight";

TEST(weights, loads_and_validates_against_the_config) {
  test::temp_dir tmp;
  checkpoint ck;
  auto values = ck.write(tmp.path());
  auto w = model_weights::load(tmp.path(), ck.cfg);
  ASSERT_TRUE(w) << w.err().to_string();
  EXPECT_EQ(w->at(q0).data, values[q0]);
  EXPECT_EQ(w->at(k1).shape, (std::vector<int64_t>{32, 64})); // 2 kv heads * 16
  EXPECT_EQ(w->find("language_model.model.layers.7.self_attn.q_proj.weight"), nullptr);
  int64_t params = 0;
  for (const auto& [name, v] : values)
    params += static_cast<int64_t>(v.size());
  EXPECT_EQ(w->parameter_count(), params);
  auto fp = compute_model_fingerprint(tmp.path());
  ASSERT_TRUE(fp);
  EXPECT_EQ(w->fingerprint(), *fp);
}

TEST(weights, the_learned_compressor_beside_the_weights_is_not_a_weight_file) {
  test::temp_dir tmp;
  checkpoint ck;
  ck.write(tmp.path());
  auto before = compute_model_fingerprint(tmp.path());
  ASSERT_TRUE(before);
  safetensors_writer c;
  ASSERT_TRUE(
      c.add("layers.0.image_k.fc1.weight", {4, 8}, std::vector<float>(32, 0.5f), st_dtype::f32));
  ASSERT_TRUE(c.write(tmp.path() / learned_compressor_weights_file));
  // Loads (the compressor's tensors are not "unexpected"), and the KV
  // libraries keyed by the fingerprint stay valid.
  auto w = model_weights::load(tmp.path(), ck.cfg);
  ASSERT_TRUE(w) << w.err().to_string();
  auto after = compute_model_fingerprint(tmp.path());
  ASSERT_TRUE(after);
  EXPECT_EQ(*after, *before);
  // Any other stray safetensors file is still read (and here rejected).
  ASSERT_TRUE(c.write(tmp.path() / "extra.safetensors"));
  EXPECT_FALSE(model_weights::load(tmp.path(), ck.cfg));
}

TEST(weights, missing_extra_and_misshaped_tensors_are_named) {
  test::temp_dir tmp;
  {
    checkpoint ck;
    ck.keep = [](const expected_tensor& e) { return e.required && e.name != k1; };
    ck.write(tmp.path() / "missing");
    auto w = model_weights::load(tmp.path() / "missing", ck.cfg);
    ASSERT_FALSE(w);
    EXPECT_NE(w.err().message.find(k1), std::string::npos) << w.err().message;
    EXPECT_NE(w.err().message.find("[32, 64]"), std::string::npos) << w.err().message;
  }
  {
    checkpoint ck;
    ck.extra["language_model.model.layers.0.self_attn.qkv.weight"] = {3, 3};
    ck.write(tmp.path() / "extra");
    auto w = model_weights::load(tmp.path() / "extra", ck.cfg);
    ASSERT_FALSE(w);
    EXPECT_NE(w.err().message.find("self_attn.qkv.weight"), std::string::npos) << w.err().message;
  }
  {
    checkpoint ck;
    ck.reshape[q0] = {64, 32};
    ck.write(tmp.path() / "shape");
    auto w = model_weights::load(tmp.path() / "shape", ck.cfg);
    ASSERT_FALSE(w);
    EXPECT_NE(w.err().message.find(q0), std::string::npos) << w.err().message;
    EXPECT_NE(w.err().message.find("[64, 32]"), std::string::npos) << w.err().message;
    EXPECT_NE(w.err().message.find("[64, 64]"), std::string::npos) << w.err().message;
  }
}

TEST(weights, new_style_names_are_normalised) {
  test::temp_dir tmp;
  checkpoint ck;
  ck.dtype = st_dtype::bf16;
  // transformers >= 4.52 layout.
  ck.rename = [](const std::string& n) -> std::string {
    if (n.rfind("vision_tower.", 0) == 0 || n.rfind("multi_modal_projector.", 0) == 0)
      return "model." + n;
    if (n == "language_model.lm_head.weight")
      return "lm_head.weight";
    if (n.rfind("language_model.model.", 0) == 0)
      return "model.language_model." + n.substr(21);
    return n;
  };
  auto values = ck.write(tmp.path());
  auto w = model_weights::load(tmp.path(), ck.cfg);
  ASSERT_TRUE(w) << w.err().to_string();
  for (const char* name :
       {q0, "language_model.lm_head.weight", "language_model.model.embed_tokens.weight",
        "language_model.model.norm.weight", "multi_modal_projector.linear_2.bias",
        "vision_tower.vision_model.embeddings.class_embedding"}) {
    const host_tensor* t = w->find(name);
    ASSERT_NE(t, nullptr) << name;
    ASSERT_EQ(t->data.size(), values[name].size());
    EXPECT_NEAR(t->data[0], values[name][0], std::abs(values[name][0]) / 128) << name;
  }
  EXPECT_EQ(canonical_tensor_name("model.language_model.layers.3.mlp.up_proj.weight"),
            "language_model.model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(canonical_tensor_name("language_model.model.norm.weight"),
            "language_model.model.norm.weight");
}

TEST(weights, tied_embeddings_alias_lm_head_and_optional_vision_layers) {
  test::temp_dir tmp;
  checkpoint ck;
  ck.cfg.text.tie_word_embeddings = true;
  // Vision layer 1 is past layers_to_run() (feature layer -2 of 2): absent.
  ASSERT_EQ(ck.cfg.vision.layers_to_run(), 1);
  auto values = ck.write(tmp.path());
  auto w = model_weights::load(tmp.path(), ck.cfg);
  ASSERT_TRUE(w) << w.err().to_string();
  EXPECT_EQ(&w->at("language_model.lm_head.weight"),
            &w->at("language_model.model.embed_tokens.weight"));
  EXPECT_EQ(w->find("vision_tower.vision_model.encoder.layers.1.mlp.fc1.weight"), nullptr);
  // A misshaped optional layer is still an error.
  checkpoint bad;
  bad.keep = [](const expected_tensor&) { return true; };
  bad.reshape["vision_tower.vision_model.encoder.layers.1.mlp.fc1.weight"] = {3};
  bad.write(tmp.path() / "bad");
  auto r = model_weights::load(tmp.path() / "bad", bad.cfg);
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("layers.1.mlp.fc1.weight"), std::string::npos);
}

TEST(weights, sharded_checkpoint_with_index_and_fingerprint_tracks_bytes) {
  test::temp_dir tmp;
  checkpoint ck;
  auto values = ck.write(tmp.path() / "one");
  auto single = safetensors_file::open(tmp.path() / "one" / "model.safetensors");
  ASSERT_TRUE(single);
  // Split into two shards plus an index.
  const fs::path dir = tmp.path() / "sharded";
  fs::create_directories(dir);
  fs::copy_file(tmp.path() / "one" / "config.json", dir / "config.json");
  safetensors_writer a, b;
  nlohmann::json index = {{"metadata", {{"total_size", 0}}},
                          {"weight_map", nlohmann::json::object()}};
  int i = 0;
  for (const auto& t : single->tensors()) {
    auto v = *single->read_f32(t.name);
    auto& w = (i++ % 2 == 0) ? a : b;
    ASSERT_TRUE(w.add(t.name, t.shape, v));
    index["weight_map"][t.name] =
        &w == &a ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  ASSERT_TRUE(a.write(dir / "model-00001-of-00002.safetensors"));
  ASSERT_TRUE(b.write(dir / "model-00002-of-00002.safetensors"));
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  auto w = model_weights::load(dir, ck.cfg);
  ASSERT_TRUE(w) << w.err().to_string();
  EXPECT_EQ(w->at(q0).data, values[q0]);

  // Changing one weight byte changes the fingerprint.
  auto before = compute_model_fingerprint(tmp.path() / "one");
  ASSERT_TRUE(before);
  {
    std::fstream f(tmp.path() / "one" / "model.safetensors",
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-3, std::ios::end);
    const char was = static_cast<char>(f.get());
    f.seekp(-3, std::ios::end);
    f.put(static_cast<char>(~was)); // always a different byte (a fixed value may already be there)
  }
  auto after = compute_model_fingerprint(tmp.path() / "one");
  ASSERT_TRUE(after);
  EXPECT_NE(*before, *after);
}

TEST(weights, directory_without_weights_is_a_clear_error) {
  test::temp_dir tmp;
  std::ofstream(tmp.path() / "config.json") << "{}";
  auto w = model_weights::load(tmp.path(), builtin_config(builtin_preset::tiny));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.err().code, errc::not_found);
  EXPECT_NE(w.err().message.find("safetensors"), std::string::npos);
}

} // namespace
} // namespace mosaic
