#include "engine/model/model_config.hpp"

#include <functional>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/model/builtin_model.hpp"

namespace mosaic {
namespace {

using json = nlohmann::json;

// config.json of llava-hf/llava-1.5-7b-hf (as published).
const char* llava15_config = R"({
  "architectures": ["LlavaForConditionalGeneration"],
  "ignore_index": -100,
  "image_token_index": 32000,
  "model_type": "llava",
  "pad_token_id": 32001,
  "projector_hidden_act": "gelu",
  "text_config": {
    "_name_or_path": "lmsys/vicuna-7b-v1.5",
    "architectures": ["LlamaForCausalLM"],
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "rms_norm_eps": 1e-05,
    "torch_dtype": "float16",
    "vocab_size": 32064
  },
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.36.0.dev0",
  "vision_config": {
    "hidden_size": 1024,
    "image_size": 336,
    "intermediate_size": 4096,
    "model_type": "clip_vision_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
    "vocab_size": 32000
  },
  "vision_feature_layer": -2,
  "vision_feature_select_strategy": "default",
  "vocab_size": 32064
})";

TEST(model_config, parses_llava_1_5_with_hf_defaults) {
  auto cfg = parse_model_config(llava15_config);
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  const auto& t = cfg->text;
  const auto& v = cfg->vision;
  EXPECT_EQ(t.model_type, "llama");
  EXPECT_EQ(t.vocab_size, 32064);
  EXPECT_EQ(t.hidden_size, 4096); // LlamaConfig default
  EXPECT_EQ(t.intermediate_size, 11008);
  EXPECT_EQ(t.num_layers, 32);
  EXPECT_EQ(t.num_heads, 32);
  EXPECT_EQ(t.num_kv_heads, 32); // defaults to num_attention_heads
  EXPECT_EQ(t.max_position_embeddings, 4096);
  EXPECT_FLOAT_EQ(t.rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(t.rope_theta, 10000.0f);
  EXPECT_FALSE(t.tie_word_embeddings);
  EXPECT_EQ(v.image_size, 336);
  EXPECT_EQ(v.num_layers, 24);
  EXPECT_EQ(v.hidden_act, "quick_gelu"); // CLIPVisionConfig default
  EXPECT_EQ(v.layers_to_run(), 23);
  EXPECT_EQ(cfg->image_tokens(), 576);
  EXPECT_EQ(cfg->image_token_index, 32000);
}

TEST(model_config, mistral_defaults_and_kv_heads) {
  json j = json::parse(llava15_config);
  j["text_config"] = {
      {"model_type", "mistral"}, {"vocab_size", 32064}, {"sliding_window", nullptr}};
  auto cfg = parse_model_config(j.dump());
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  EXPECT_EQ(cfg->text.num_kv_heads, 8);
  EXPECT_EQ(cfg->text.intermediate_size, 14336);
  EXPECT_EQ(cfg->text.sliding_window, 0);
  EXPECT_EQ(cfg->text.context_length(), cfg->text.max_position_embeddings);
  // A window shorter than the positions bounds the context Mosaic serves
  // (its attention has none; up to the window both are the same).
  j["text_config"]["sliding_window"] = 4096;
  auto windowed = parse_model_config(j.dump());
  ASSERT_TRUE(windowed) << windowed.err().to_string();
  EXPECT_EQ(windowed->text.context_length(), 4096);
}

TEST(model_config, absent_sub_configs_take_llava_defaults) {
  // LlavaConfig's default image_token_index (32000) lies outside
  // LlamaConfig's default vocab (32000): refused, naming the key.
  auto bare = parse_model_config(R"({"model_type":"llava"})");
  ASSERT_FALSE(bare);
  EXPECT_NE(bare.err().message.find("image_token_index"), std::string::npos);
  auto cfg = parse_model_config(R"({"model_type":"llava","image_token_index":31999})");
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  EXPECT_EQ(cfg->vision.image_size, 336);
  EXPECT_EQ(cfg->vision.hidden_size, 1024);
  EXPECT_EQ(cfg->vision.num_layers, 24);
  EXPECT_EQ(cfg->text.vocab_size, 32000);
  EXPECT_EQ(cfg->text.max_position_embeddings, 2048);
  EXPECT_FLOAT_EQ(cfg->text.rms_norm_eps, 1e-6f);
}

TEST(model_config, hf_json_round_trip_and_preprocessor) {
  for (auto preset : {builtin_preset::tiny, builtin_preset::small, builtin_preset::tiny_next,
                      builtin_preset::small_next}) {
    const model_config c = builtin_config(preset);
    auto back = parse_model_config(to_hf_config_json(c), to_hf_preprocessor_json(c));
    ASSERT_TRUE(back) << back.err().to_string();
    EXPECT_EQ(to_hf_config_json(*back), to_hf_config_json(c));
    EXPECT_EQ(back->image_tokens(), c.image_tokens());
    EXPECT_FLOAT_EQ(back->vision.image_mean[1], c.vision.image_mean[1]);
  }
  json pre = json::parse(to_hf_preprocessor_json(builtin_config(builtin_preset::tiny)));
  pre["crop_size"] = {{"height", 224}, {"width", 224}};
  auto r = parse_model_config(to_hf_config_json(builtin_config(builtin_preset::tiny)), pre.dump());
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("crop_size"), std::string::npos) << r.err().message;
}

struct bad_case {
  const char* what;
  std::function<void(json&)> mutate;
  const char* key; // must appear in the error message
};

TEST(model_config, llava_next_reads_its_grids_and_refuses_bad_ones) {
  const model_config next = builtin_config(builtin_preset::small_next);
  ASSERT_TRUE(next.anyres());
  // LLaVA-1.6 at 336 px: 576 of the base view, then at most the 2 x 2
  // grid's 48 rows of 48 features and a newline each.
  EXPECT_EQ(next.image_tokens(), 576 + 48 * 49);
  auto count = next.image_tokens_for(480, 640);
  ASSERT_TRUE(count) << count.err().to_string();
  EXPECT_LT(*count, next.image_tokens());
  // Absent grids take LlavaNextConfig's default (LLaVA-1.6's five).
  json j = json::parse(to_hf_config_json(next));
  j.erase("image_grid_pinpoints");
  auto dflt = parse_model_config(j.dump());
  ASSERT_TRUE(dflt) << dflt.err().to_string();
  EXPECT_EQ(dflt->vision.grid_pinpoints, next.vision.grid_pinpoints);
  // Refused, naming the key: not multiples of the tile, too many tiles,
  // malformed, huge lists, and a preprocessor that disagrees.
  for (const json& bad : {json{{100, 672}}, json{{336 * 9, 336}}, json{{336}}, json::array(),
                          json{{-336, 336}}, json("336x672")}) {
    j["image_grid_pinpoints"] = bad;
    auto r = parse_model_config(j.dump());
    ASSERT_FALSE(r) << bad.dump();
    EXPECT_NE(r.err().message.find("image_grid_pinpoints"), std::string::npos) << r.err().message;
  }
  j["image_grid_pinpoints"] = json::array();
  for (int i = 0; i < 65; ++i)
    j["image_grid_pinpoints"].push_back({336, 336});
  EXPECT_FALSE(parse_model_config(j.dump()));
  json pre = json::parse(to_hf_preprocessor_json(next));
  pre["image_grid_pinpoints"] = {{336, 336}};
  auto r = parse_model_config(to_hf_config_json(next), pre.dump());
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("image_grid_pinpoints"), std::string::npos) << r.err().message;
  // LLaVA-1.5 with grids is a mistake, not silently ignored.
  json v15 = json::parse(to_hf_config_json(builtin_config(builtin_preset::small)));
  v15["image_grid_pinpoints"] = {{336, 672}};
  EXPECT_TRUE(parse_model_config(v15.dump())); // LlavaConfig has no such key: HF ignores it too
  json v15_pre = json::parse(to_hf_preprocessor_json(builtin_config(builtin_preset::small)));
  v15_pre["image_grid_pinpoints"] = {{336, 672}};
  EXPECT_TRUE(parse_model_config(v15.dump(), v15_pre.dump()));
  // The class token kept ("full") is refused with anyres.
  j = json::parse(to_hf_config_json(next));
  j["vision_feature_select_strategy"] = "full";
  EXPECT_FALSE(parse_model_config(j.dump()));
}

TEST(model_config, qwen_vl_reads_its_tower_m_rope_and_pixels_and_refuses_bad_ones) {
  for (auto preset : {builtin_preset::small_qwen2vl, builtin_preset::small_qwen25vl}) {
    const model_config q = builtin_config(preset);
    ASSERT_TRUE(q.qwen_vl());
    ASSERT_TRUE(validate_model_config(q));
    // Written as transformers 4.49 writes it, read back the same.
    const std::string pre = to_hf_preprocessor_json(q);
    auto back = parse_model_config(to_hf_config_json(q), pre);
    ASSERT_TRUE(back) << back.err().to_string();
    EXPECT_EQ(back->model_type, q.model_type);
    EXPECT_EQ(back->text.mrope_section, q.text.mrope_section);
    EXPECT_TRUE(back->text.attention_bias);
    EXPECT_EQ(back->vision.hidden_size, q.vision.hidden_size);
    EXPECT_EQ(back->vision.intermediate_size, q.vision.intermediate_size);
    EXPECT_EQ(back->vision.out_hidden_size, q.text.hidden_size);
    EXPECT_EQ(back->vision.window_size, q.vision.window_size);
    EXPECT_EQ(back->vision.fullatt_block_indexes, q.vision.fullatt_block_indexes);
    EXPECT_EQ(back->vision.max_pixels, q.vision.max_pixels);
    EXPECT_EQ(back->image_token_index, q.image_token_index);
    EXPECT_EQ(back->vision_start_token_id, q.vision_start_token_id);
    // Qwen's default max_pixels: up to 1,280 tokens; a 640 x 480 photo
    // takes (476 / 28) x (644 / 28) = 17 x 23.
    EXPECT_EQ(q.image_tokens(), 1280);
    EXPECT_EQ(*q.image_tokens_for(480, 640), 17 * 23);
    EXPECT_EQ(*q.image_token_grid(480, 640), (token_grid{1, 17, 23}));
    EXPECT_FALSE(q.image_token_grid(10, 2400)); // an aspect over 200: HF refuses
    // Refused, naming what is wrong.
    auto refused = [&](const std::function<void(json&, json&)>& edit, const char* what) {
      json j = json::parse(to_hf_config_json(q));
      json p = json::parse(pre);
      edit(j, p);
      auto r = parse_model_config(j.dump(), p.dump());
      EXPECT_FALSE(r) << what;
      if (!r) {
        EXPECT_NE(r.err().message.find(what), std::string::npos) << r.err().message;
      }
    };
    refused([](json& j, json&) { j["rope_scaling"].erase("mrope_section"); }, "mrope_section");
    refused([](json& j, json&) { j["rope_scaling"]["mrope_section"] = {8, 12, 11}; },
            "mrope_section");
    refused([](json& j, json&) { j["rope_scaling"]["type"] = "yarn"; }, "rope_scaling.type");
    refused([](json& j, json&) { j["use_sliding_window"] = true; }, "use_sliding_window");
    refused([](json& j, json&) { j["vision_config"]["num_heads"] = 3; }, "num_attention_heads");
    refused([](json&, json& p) { p["max_pixels"] = 1000; }, "max_pixels");
    refused([](json&, json& p) { p["merge_size"] = 4; }, "merge_size");
    refused([](json& j, json&) { j["image_token_id"] = 1 << 22; }, "image_token_index");
    if (q.qwen25_vl()) {
      refused([](json& j, json&) { j["vision_config"]["fullatt_block_indexes"] = {1, 9}; },
              "fullatt_block_indexes");
    } else {
      refused([](json& j, json&) { j["vision_config"]["hidden_size"] = 100; },
              "decoder's hidden_size");
    }
  }
}

TEST(model_config, each_validation_error_names_the_key) {
  const json base = json::parse(to_hf_config_json(builtin_config(builtin_preset::tiny)));
  ASSERT_TRUE(parse_model_config(base.dump()));
  const bad_case cases[] = {
      {"not llava", [](json& j) { j["model_type"] = "llama"; }, "model_type"},
      {"zero vision hidden", [](json& j) { j["vision_config"]["hidden_size"] = 0; },
       "vision_config.hidden_size"},
      {"negative patch", [](json& j) { j["vision_config"]["patch_size"] = -14; },
       "vision_config.patch_size"},
      {"image not divisible", [](json& j) { j["vision_config"]["image_size"] = 57; },
       "vision_config.image_size"},
      {"vision heads", [](json& j) { j["vision_config"]["num_attention_heads"] = 5; },
       "vision_config.num_attention_heads"},
      {"text heads", [](json& j) { j["text_config"]["num_attention_heads"] = 3; },
       "text_config.num_attention_heads"},
      {"kv heads", [](json& j) { j["text_config"]["num_key_value_heads"] = 3; },
       "text_config.num_key_value_heads"},
      {"zero layers", [](json& j) { j["text_config"]["num_hidden_layers"] = 0; },
       "text_config.num_hidden_layers"},
      {"vocab", [](json& j) { j["text_config"]["vocab_size"] = -1; }, "text_config.vocab_size"},
      {"image token", [](json& j) { j["image_token_index"] = 5000; }, "image_token_index"},
      {"feature layer", [](json& j) { j["vision_feature_layer"] = -7; }, "vision_feature_layer"},
      {"feature layer list",
       [](json& j) {
         j["vision_feature_layer"] = {-2, -5};
       },
       "vision_feature_layer"},
      {"select", [](json& j) { j["vision_feature_select_strategy"] = "cls"; },
       "vision_feature_select_strategy"},
      {"type", [](json& j) { j["text_config"]["hidden_size"] = "64"; }, "text_config.hidden_size"},
      {"eps", [](json& j) { j["text_config"]["rms_norm_eps"] = 0; }, "text_config.rms_norm_eps"},
      {"rope scaling",
       [](json& j) {
         j["text_config"]["rope_scaling"] = {{"type", "linear"}};
       },
       "rope_scaling"},
      {"text type", [](json& j) { j["text_config"]["model_type"] = "gpt2"; },
       "text_config.model_type"},
      {"projector act", [](json& j) { j["projector_hidden_act"] = "tanh"; },
       "projector_hidden_act"},
      {"channels", [](json& j) { j["vision_config"]["num_channels"] = 4; },
       "vision_config.num_channels"},
      {"positions", [](json& j) { j["text_config"]["max_position_embeddings"] = 10; },
       "max_position_embeddings"},
      {"eos", [](json& j) { j["text_config"]["eos_token_id"] = 99999; }, "eos_token_id"},
      // Hostile sizes fail at parse time, before any allocation.
      {"a billion text layers", [](json& j) { j["text_config"]["num_hidden_layers"] = 1000000000; },
       "text_config.num_hidden_layers"},
      {"a billion vision layers",
       [](json& j) { j["vision_config"]["num_hidden_layers"] = 1000000000; },
       "vision_config.num_hidden_layers"},
      {"huge vocabulary", [](json& j) { j["text_config"]["vocab_size"] = 1 << 30; },
       "text_config.vocab_size"},
      {"huge hidden", [](json& j) { j["text_config"]["hidden_size"] = 1 << 24; },
       "text_config.hidden_size"},
      {"huge context", [](json& j) { j["text_config"]["max_position_embeddings"] = 1 << 30; },
       "text_config.max_position_embeddings"},
  };
  for (const auto& c : cases) {
    json j = base;
    c.mutate(j);
    auto r = parse_model_config(j.dump());
    ASSERT_FALSE(r) << c.what << " was accepted";
    EXPECT_NE(r.err().message.find(c.key), std::string::npos) << c.what << ": " << r.err().message;
  }
  auto garbage = parse_model_config("{not json");
  ASSERT_FALSE(garbage);
  EXPECT_EQ(garbage.err().code, errc::invalid_argument);
}

TEST(model_config, missing_directory_is_not_found) {
  auto r = load_model_config("/nonexistent/mosaic/model");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::not_found);
  EXPECT_NE(r.err().message.find("config.json"), std::string::npos);
}

} // namespace
} // namespace mosaic
