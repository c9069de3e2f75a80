// HF config.json / preprocessor_config.json text for a model_config (what
// the built-in generator writes).

#include <charconv>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/model/model_config.hpp"

namespace mosaic {

namespace {

using json = nlohmann::json;

// The shortest decimal that reads back as the same float, as a double, so
// that config.json holds 1e-05 rather than 9.999999747378752e-06.
double tidy(float f) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, f);
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

json pinpoints_json(const vision_config& v) {
  json out = json::array();
  for (const auto& [h, w] : v.grid_pinpoints)
    out.push_back({h, w});
  return out;
}

/// Qwen2-VL / Qwen2.5-VL in transformers 4.49's layout: the decoder's keys
/// at the top, M-RoPE under rope_scaling, the tower under vision_config.
std::string qwen_config_json(const model_config& cfg) {
  const auto& v = cfg.vision;
  const auto& t = cfg.text;
  const bool v25 = cfg.qwen25_vl();
  json vision = {{"model_type", cfg.model_type},
                 {"depth", v.num_layers},
                 {"num_heads", v.num_heads},
                 {"in_channels", v.num_channels},
                 {"patch_size", v.patch_size},
                 {"spatial_merge_size", v.spatial_merge_size},
                 {"temporal_patch_size", v.temporal_patch_size},
                 {"hidden_act", v.hidden_act}};
  if (v25) {
    vision["hidden_size"] = v.hidden_size;
    vision["intermediate_size"] = v.intermediate_size;
    vision["out_hidden_size"] = v.out_hidden_size;
    vision["window_size"] = v.window_size;
    vision["fullatt_block_indexes"] = v.fullatt_block_indexes;
    vision["tokens_per_second"] = 2;
  } else {
    vision["embed_dim"] = v.hidden_size;
    vision["mlp_ratio"] = v.intermediate_size / v.hidden_size;
    vision["hidden_size"] = v.out_hidden_size;
  }
  json root = {{"architectures",
                {v25 ? "Qwen2_5_VLForConditionalGeneration" : "Qwen2VLForConditionalGeneration"}},
               {"model_type", cfg.model_type},
               {"vocab_size", t.vocab_size},
               {"hidden_size", t.hidden_size},
               {"intermediate_size", t.intermediate_size},
               {"num_hidden_layers", t.num_layers},
               {"num_attention_heads", t.num_heads},
               {"num_key_value_heads", t.num_kv_heads},
               {"max_position_embeddings", t.max_position_embeddings},
               {"rms_norm_eps", tidy(t.rms_norm_eps)},
               {"rope_theta", tidy(t.rope_theta)},
               {"rope_scaling",
                {{"type", "mrope"},
                 {"mrope_section", {t.mrope_section[0], t.mrope_section[1], t.mrope_section[2]}}}},
               {"hidden_act", t.hidden_act},
               {"tie_word_embeddings", t.tie_word_embeddings},
               {"use_sliding_window", false},
               {"sliding_window", t.max_position_embeddings},
               {"max_window_layers", t.num_layers},
               {"attention_dropout", 0.0},
               {"bos_token_id", t.bos_token_id},
               {"eos_token_id", t.eos_token_id},
               {"image_token_id", cfg.image_token_index},
               {"video_token_id", cfg.image_token_index + 1},
               {"vision_start_token_id", cfg.vision_start_token_id},
               {"vision_end_token_id", cfg.vision_end_token_id},
               {"torch_dtype", "float16"},
               {"vision_config", vision}};
  return root.dump(2) + "\n";
}

} // namespace

std::string to_hf_config_json(const model_config& cfg) {
  if (cfg.qwen_vl())
    return qwen_config_json(cfg);
  const auto& v = cfg.vision;
  const auto& t = cfg.text;
  json vision = {{"model_type", "clip_vision_model"},
                 {"hidden_size", v.hidden_size},
                 {"image_size", v.image_size},
                 {"intermediate_size", v.intermediate_size},
                 {"num_attention_heads", v.num_heads},
                 {"num_hidden_layers", v.num_layers},
                 {"num_channels", v.num_channels},
                 {"patch_size", v.patch_size},
                 {"layer_norm_eps", tidy(v.layer_norm_eps)},
                 {"hidden_act", v.hidden_act}};
  json text = {
      {"model_type", t.model_type},
      {"architectures", {t.model_type == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"}},
      {"vocab_size", t.vocab_size},
      {"hidden_size", t.hidden_size},
      {"intermediate_size", t.intermediate_size},
      {"num_hidden_layers", t.num_layers},
      {"num_attention_heads", t.num_heads},
      {"num_key_value_heads", t.num_kv_heads},
      {"max_position_embeddings", t.max_position_embeddings},
      {"rms_norm_eps", tidy(t.rms_norm_eps)},
      {"rope_theta", tidy(t.rope_theta)},
      {"tie_word_embeddings", t.tie_word_embeddings},
      {"bos_token_id", t.bos_token_id},
      {"eos_token_id", t.eos_token_id},
      {"pad_token_id", t.pad_token_id},
      {"hidden_act", t.hidden_act}};
  if (t.model_type == "mistral")
    text["sliding_window"] = t.sliding_window > 0 ? json(t.sliding_window) : json(nullptr);
  json root = {
      {"architectures",
       {cfg.anyres() ? "LlavaNextForConditionalGeneration" : "LlavaForConditionalGeneration"}},
      {"model_type", cfg.model_type},
      {"image_token_index", cfg.image_token_index},
      {"projector_hidden_act", cfg.projector_hidden_act},
      {"vision_feature_layer", v.feature_layer},
      {"vision_feature_select_strategy", v.feature_select},
      {"tie_word_embeddings", t.tie_word_embeddings},
      {"vision_config", vision},
      {"text_config", text}};
  if (cfg.anyres())
    root["image_grid_pinpoints"] = pinpoints_json(v);
  return root.dump(2) + "\n";
}

std::string to_hf_preprocessor_json(const model_config& cfg) {
  const auto& v = cfg.vision;
  if (cfg.qwen_vl())
    return json{{"image_processor_type", "Qwen2VLImageProcessor"},
                {"processor_class", cfg.qwen25_vl() ? "Qwen2_5_VLProcessor" : "Qwen2VLProcessor"},
                {"do_resize", true},
                {"resample", 3},
                {"do_rescale", true},
                {"rescale_factor", 1.0 / 255.0},
                {"do_normalize", true},
                {"do_convert_rgb", true},
                {"image_mean",
                 {tidy(v.image_mean[0]), tidy(v.image_mean[1]), tidy(v.image_mean[2])}},
                {"image_std", {tidy(v.image_std[0]), tidy(v.image_std[1]), tidy(v.image_std[2])}},
                {"min_pixels", v.min_pixels},
                {"max_pixels", v.max_pixels},
                {"size", {{"shortest_edge", v.min_pixels}, {"longest_edge", v.max_pixels}}},
                {"patch_size", v.patch_size},
                {"merge_size", v.spatial_merge_size},
                {"temporal_patch_size", v.temporal_patch_size}}
               .dump(2) +
           "\n";
  json pre = {
      {"image_processor_type", cfg.anyres() ? "LlavaNextImageProcessor" : "CLIPImageProcessor"},
      {"processor_class", cfg.anyres() ? "LlavaNextProcessor" : "LlavaProcessor"},
      {"do_resize", true},
      {"size", {{"shortest_edge", v.image_size}}},
      {"resample", 3},
      {"do_center_crop", true},
      {"crop_size", {{"height", v.image_size}, {"width", v.image_size}}},
      {"do_rescale", true},
      {"rescale_factor", 1.0 / 255.0},
      {"do_normalize", true},
      {"do_convert_rgb", true},
      {"image_mean", {tidy(v.image_mean[0]), tidy(v.image_mean[1]), tidy(v.image_mean[2])}},
      {"image_std", {tidy(v.image_std[0]), tidy(v.image_std[1]), tidy(v.image_std[2])}}};
  if (cfg.anyres()) {
    pre["image_grid_pinpoints"] = pinpoints_json(v);
    pre["do_pad"] = true;
  }
  return pre.dump(2) + "\n";
}

} // namespace mosaic
