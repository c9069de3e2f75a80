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

} // namespace

std::string to_hf_config_json(const model_config& cfg) {
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
