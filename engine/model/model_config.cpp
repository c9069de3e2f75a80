#include "engine/model/model_config.hpp"

#include "engine/model/anyres.hpp"
#include "engine/model/bounded_read.hpp"
#include "engine/model/qwen2vl_image.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace mosaic {

namespace {

using json = nlohmann::json;

// Bounds on image_grid_pinpoints far above LLaVA-1.6's (five grids of at
// most 3 tiles a side), so a hostile config cannot make an image
// millions of tokens.
constexpr size_t max_grid_pinpoints = 64;
constexpr int max_grid_tiles = 8;

/// LlavaNextConfig's and LlavaNextImageProcessor's default grids.
std::vector<std::pair<int, int>> llava_next_default_grids() {
  return {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
}

// Reads typed keys from one JSON object; the first bad key is remembered
// with its full dotted name, so that the error names it.
class reader {
public:
  reader(const json& obj, std::string prefix, std::string_view where, error* first_error)
    : obj_(obj), prefix_(std::move(prefix)), where_(where), err_(first_error) {}

  bool has(const char* key) const {
    auto it = obj_.find(key);
    return it != obj_.end() && !it->is_null();
  }
  void get(const char* key, int& out) {
    if (auto* v = find(key)) {
      if (v->is_number_integer() && v->get<int64_t>() >= INT32_MIN &&
          v->get<int64_t>() <= INT32_MAX)
        out = static_cast<int>(v->get<int64_t>());
      else
        fail(key, "must be an integer");
    }
  }
  void get(const char* key, float& out) {
    if (auto* v = find(key)) {
      if (v->is_number())
        out = v->get<float>();
      else
        fail(key, "must be a number");
    }
  }
  void get(const char* key, bool& out) {
    if (auto* v = find(key)) {
      if (v->is_boolean())
        out = v->get<bool>();
      else
        fail(key, "must be true or false");
    }
  }
  void get(const char* key, std::string& out) {
    if (auto* v = find(key)) {
      if (v->is_string())
        out = v->get<std::string>();
      else
        fail(key, "must be a string");
    }
  }
  void get3(const char* key, float (&out)[3]) {
    if (auto* v = find(key)) {
      if (!v->is_array() || v->size() != 3) {
        fail(key, "must be a list of 3 numbers");
        return;
      }
      for (size_t i = 0; i < 3; ++i) {
        if (!(*v)[i].is_number()) {
          fail(key, "must be a list of 3 numbers");
          return;
        }
        out[i] = (*v)[i].get<float>();
      }
    }
  }
  /// A list of [height, width] pairs of positive integers (at most
  /// `max_entries`).
  void get_pairs(const char* key, std::vector<std::pair<int, int>>& out, size_t max_entries) {
    const json* v = find(key);
    if (v == nullptr)
      return;
    if (!v->is_array() || v->empty() || v->size() > max_entries) {
      fail(key, "must be a list of 1 to " + std::to_string(max_entries) + " [height, width] pairs");
      return;
    }
    std::vector<std::pair<int, int>> pairs;
    for (const json& e : *v) {
      auto dim = [](const json& x) {
        return x.is_number_integer() && x.get<int64_t>() > 0 && x.get<int64_t>() <= INT32_MAX;
      };
      if (!e.is_array() || e.size() != 2 || !dim(e[0]) || !dim(e[1])) {
        fail(key, "must be a list of [height, width] pairs of positive integers");
        return;
      }
      pairs.emplace_back(static_cast<int>(e[0].get<int64_t>()),
                         static_cast<int>(e[1].get<int64_t>()));
    }
    out = std::move(pairs);
  }
  const json* find(const char* key) const {
    auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  void fail(const char* key, std::string_view what) {
    if (err_->code == errc::none)
      *err_ = make_error(errc::invalid_argument, where_, ": ", prefix_, key, " ", what);
  }

private:
  const json& obj_;
  std::string prefix_;
  std::string_view where_;
  error* err_;
};

void parse_vision(const json& j, std::string_view where, vision_config& v, error* err) {
  // CLIPVisionConfig defaults (used when vision_config is given but a key
  // is absent).
  v = vision_config{};
  v.image_size = 224;
  v.patch_size = 32;
  v.hidden_size = 768;
  v.intermediate_size = 3072;
  v.num_layers = 12;
  v.num_heads = 12;
  reader r(j, "vision_config.", where, err);
  std::string model_type = "clip_vision_model";
  r.get("model_type", model_type);
  if (model_type != "clip_vision_model" && err->code == errc::none)
    *err = make_error(errc::unsupported, where, ": vision_config.model_type \"", model_type,
                      "\" is not supported; Mosaic runs CLIP vision towers (clip_vision_model)");
  r.get("image_size", v.image_size);
  r.get("patch_size", v.patch_size);
  r.get("num_channels", v.num_channels);
  r.get("hidden_size", v.hidden_size);
  r.get("intermediate_size", v.intermediate_size);
  r.get("num_hidden_layers", v.num_layers);
  r.get("num_attention_heads", v.num_heads);
  r.get("layer_norm_eps", v.layer_norm_eps);
  r.get("hidden_act", v.hidden_act);
}

void parse_text(const json& j, std::string_view where, text_config& t, error* err) {
  reader r(j, "text_config.", where, err);
  t = text_config{};
  r.get("model_type", t.model_type);
  // LlamaConfig / MistralConfig defaults.
  t.vocab_size = 32000;
  t.hidden_size = 4096;
  t.num_layers = 32;
  t.num_heads = 32;
  t.rms_norm_eps = 1e-6f;
  t.rope_theta = 10000.0f;
  t.tie_word_embeddings = false;
  if (t.model_type == "mistral") {
    t.intermediate_size = 14336;
    t.max_position_embeddings = 4096 * 32;
    t.sliding_window = 4096;
  } else {
    t.intermediate_size = 11008;
    t.max_position_embeddings = 2048;
    t.sliding_window = 0;
  }
  if (t.model_type != "llama" && t.model_type != "mistral" && err->code == errc::none)
    *err = make_error(errc::unsupported, where, ": text_config.model_type \"", t.model_type,
                      "\" is not supported; Mosaic runs llama and mistral decoders");
  r.get("vocab_size", t.vocab_size);
  r.get("hidden_size", t.hidden_size);
  r.get("intermediate_size", t.intermediate_size);
  r.get("num_hidden_layers", t.num_layers);
  r.get("num_attention_heads", t.num_heads);
  // transformers: LlamaConfig's default (None) and an explicit null mean
  // num_attention_heads; MistralConfig's default is 8.
  const bool kv_absent = !j.contains("num_key_value_heads");
  t.num_kv_heads = kv_absent && t.model_type == "mistral" ? 8 : t.num_heads;
  r.get("num_key_value_heads", t.num_kv_heads);
  r.get("max_position_embeddings", t.max_position_embeddings);
  r.get("rms_norm_eps", t.rms_norm_eps);
  r.get("rope_theta", t.rope_theta);
  r.get("tie_word_embeddings", t.tie_word_embeddings);
  r.get("bos_token_id", t.bos_token_id);
  r.get("eos_token_id", t.eos_token_id);
  r.get("pad_token_id", t.pad_token_id);
  r.get("hidden_act", t.hidden_act);
  if (j.contains("sliding_window") && j["sliding_window"].is_null())
    t.sliding_window = 0;
  else
    r.get("sliding_window", t.sliding_window);
  if (r.has("rope_scaling") && err->code == errc::none)
    *err = make_error(errc::unsupported, where,
                      ": text_config.rope_scaling is set; Mosaic supports plain RoPE only "
                      "(remove rope_scaling or use a model without it)");
  if (r.has("head_dim")) {
    int head_dim = 0;
    r.get("head_dim", head_dim);
    if (t.num_heads > 0 && head_dim != t.hidden_size / t.num_heads && err->code == errc::none)
      *err = make_error(errc::unsupported, where,
                        ": text_config.head_dim = ", std::to_string(head_dim),
                        " differs from hidden_size / num_attention_heads",
                        "; Mosaic requires head_dim = hidden_size / num_attention_heads");
  }
}

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

/// image_mean and image_std of a preprocessor_config.json.
void p_mean_std(const json& pre, model_config& cfg, error* err) {
  reader p(pre, "", "preprocessor_config.json", err);
  p.get3("image_mean", cfg.vision.image_mean);
  p.get3("image_std", cfg.vision.image_std);
  for (int c = 0; c < 3; ++c)
    if (!(cfg.vision.image_std[c] > 0.0f) && err->code == errc::none)
      *err = make_error(errc::invalid_argument,
                        "preprocessor_config.json: image_std values must be > 0");
}

// Bounds on Qwen2.5-VL's list of full-attention blocks.
constexpr size_t max_fullatt_blocks = 256;

/// Qwen2-VL / Qwen2.5-VL: the decoder's keys (at the top in transformers
/// 4.x, under text_config in 5.x), the vision tower, the token ids.
void parse_qwen(const json& root, std::string_view where, model_config& cfg, error* err) {
  reader top(root, "", where, err);
  const json* nested = top.find("text_config");
  const json& tj = nested != nullptr && nested->is_object() ? *nested : root;
  reader r(tj, nested != nullptr ? "text_config." : "", where, err);
  text_config& t = cfg.text;
  // Qwen2VLConfig's defaults (Qwen2-VL-7B).
  t = text_config{};
  t.model_type = "qwen2";
  t.vocab_size = 152064;
  t.hidden_size = 8192;
  t.intermediate_size = 29568;
  t.num_layers = 80;
  t.num_heads = 64;
  t.num_kv_heads = 8;
  t.max_position_embeddings = 32768;
  t.rms_norm_eps = 1e-5f;
  t.rope_theta = 1000000.0f;
  t.bos_token_id = 151643;
  t.eos_token_id = 151645;
  t.pad_token_id = 0;
  t.attention_bias = true; // Qwen2: q, k, v with bias
  r.get("vocab_size", t.vocab_size);
  r.get("hidden_size", t.hidden_size);
  r.get("intermediate_size", t.intermediate_size);
  r.get("num_hidden_layers", t.num_layers);
  r.get("num_attention_heads", t.num_heads);
  r.get("num_key_value_heads", t.num_kv_heads);
  r.get("max_position_embeddings", t.max_position_embeddings);
  r.get("rms_norm_eps", t.rms_norm_eps);
  r.get("rope_theta", t.rope_theta);
  r.get("tie_word_embeddings", t.tie_word_embeddings);
  r.get("hidden_act", t.hidden_act);
  r.get("bos_token_id", t.bos_token_id);
  r.get("eos_token_id", t.eos_token_id);
  if (!nested) // 4.x: the top holds them
    top.get("tie_word_embeddings", t.tie_word_embeddings);
  bool sliding = false;
  r.get("use_sliding_window", sliding);
  if (sliding && err->code == errc::none)
    *err = make_error(errc::unsupported, where,
                      ": use_sliding_window is true; Mosaic runs Qwen2 decoders with full "
                      "attention (as Qwen2-VL and Qwen2.5-VL ship)");
  if (r.has("head_dim")) {
    int head_dim = 0;
    r.get("head_dim", head_dim);
    if (t.num_heads > 0 && head_dim != t.hidden_size / t.num_heads && err->code == errc::none)
      *err = make_error(errc::unsupported, where, ": head_dim = ", num(head_dim),
                        " differs from hidden_size / num_attention_heads");
  }
  const json* rs = r.find("rope_scaling");
  if (rs == nullptr && nested != nullptr)
    rs = top.find("rope_scaling");
  const json* sec = rs != nullptr && rs->is_object() && rs->contains("mrope_section")
                        ? &(*rs)["mrope_section"]
                        : nullptr;
  if (sec == nullptr || !sec->is_array() || sec->size() != 3 ||
      !std::all_of(sec->begin(), sec->end(), [](const json& x) {
        return x.is_number_integer() && x.get<int64_t>() >= 0 && x.get<int64_t>() <= 65536;
      })) {
    if (err->code == errc::none)
      *err = make_error(errc::invalid_argument, where,
                        ": rope_scaling.mrope_section must be a list of 3 non-negative "
                        "integers (Qwen2-VL's M-RoPE)");
  } else {
    for (size_t i = 0; i < 3; ++i)
      t.mrope_section[i] = static_cast<int>((*sec)[i].get<int64_t>());
  }
  if (rs != nullptr && rs->is_object())
    for (const char* key : {"type", "rope_type"})
      if (auto it = rs->find(key); it != rs->end() && it->is_string() && *it != "mrope" &&
                                   *it != "default" && err->code == errc::none)
        *err = make_error(errc::unsupported, where, ": rope_scaling.", key, " \"",
                          it->get<std::string>(),
                          "\" is not supported; Mosaic runs Qwen2-VL's M-RoPE");

  vision_config& v = cfg.vision;
  v = vision_config{};
  v.feature_layer = -1;
  v.feature_select = "full"; // every merged row is a token
  v.layer_norm_eps = 1e-6f;
  const json* vj = top.find("vision_config");
  const json empty = json::object();
  reader vr(vj != nullptr && vj->is_object() ? *vj : empty, "vision_config.", where, err);
  v.num_layers = 32;
  v.num_heads = 16;
  v.patch_size = 14;
  vr.get("depth", v.num_layers);
  vr.get("num_heads", v.num_heads);
  vr.get("in_channels", v.num_channels);
  vr.get("in_chans", v.num_channels);
  vr.get("patch_size", v.patch_size);
  vr.get("spatial_merge_size", v.spatial_merge_size);
  vr.get("temporal_patch_size", v.temporal_patch_size);
  if (cfg.qwen25_vl()) {
    v.hidden_size = 3584;
    v.intermediate_size = 3420;
    v.hidden_act = "silu";
    v.window_size = 112;
    v.fullatt_block_indexes = {7, 15, 23, 31};
    v.out_hidden_size = 3584; // Qwen2_5_VLVisionConfig's defaults
    vr.get("hidden_size", v.hidden_size);
    vr.get("intermediate_size", v.intermediate_size);
    vr.get("out_hidden_size", v.out_hidden_size);
    vr.get("window_size", v.window_size);
    vr.get("hidden_act", v.hidden_act);
    if (const json* f = vr.find("fullatt_block_indexes")) {
      if (!f->is_array() || f->size() > max_fullatt_blocks ||
          !std::all_of(f->begin(), f->end(), [](const json& x) {
            return x.is_number_integer() && x.get<int64_t>() >= 0 && x.get<int64_t>() < 4096;
          })) {
        vr.fail("fullatt_block_indexes", "must be a list of block indexes");
      } else {
        v.fullatt_block_indexes.clear();
        for (const json& x : *f)
          v.fullatt_block_indexes.push_back(static_cast<int>(x.get<int64_t>()));
      }
    }
  } else {
    v.hidden_size = 1280; // Qwen2VLVisionConfig's defaults
    v.out_hidden_size = 3584;
    v.hidden_act = "quick_gelu";
    vr.get("embed_dim", v.hidden_size);
    float mlp_ratio = 4.0f;
    vr.get("mlp_ratio", mlp_ratio);
    if (!(mlp_ratio > 0.0f && mlp_ratio <= 64.0f))
      vr.fail("mlp_ratio", "must be in (0, 64]");
    else
      v.intermediate_size = static_cast<int>(static_cast<float>(v.hidden_size) * mlp_ratio);
    vr.get("hidden_size", v.out_hidden_size); // Qwen2-VL: the merger's output
    vr.get("hidden_act", v.hidden_act);
  }
  // The merge unit's side in pixels: the nearest thing to an "image size".
  v.image_size = v.patch_size * v.spatial_merge_size;

  cfg.image_token_index = 151655;
  cfg.vision_start_token_id = 151652;
  cfg.vision_end_token_id = 151653;
  top.get("image_token_id", cfg.image_token_index);
  top.get("vision_start_token_id", cfg.vision_start_token_id);
  top.get("vision_end_token_id", cfg.vision_end_token_id);
}

/// Qwen's preprocessor_config.json: pixel bounds, and the patch geometry,
/// which must agree with config.json's.
void parse_qwen_preprocessor(const json& pre, model_config& cfg, error* err) {
  reader p(pre, "", "preprocessor_config.json", err);
  auto& v = cfg.vision;
  if (const json* size = p.find("size"); size != nullptr && size->is_object()) {
    reader sr(*size, "size.", "preprocessor_config.json", err);
    sr.get("shortest_edge", v.min_pixels);
    sr.get("longest_edge", v.max_pixels);
    sr.get("min_pixels", v.min_pixels);
    sr.get("max_pixels", v.max_pixels);
  }
  p.get("min_pixels", v.min_pixels);
  p.get("max_pixels", v.max_pixels);
  int patch = v.patch_size, merge = v.spatial_merge_size, temporal = v.temporal_patch_size;
  p.get("patch_size", patch);
  p.get("merge_size", merge);
  p.get("temporal_patch_size", temporal);
  if (err->code == errc::none &&
      (patch != v.patch_size || merge != v.spatial_merge_size || temporal != v.temporal_patch_size))
    *err = make_error(errc::unsupported,
                      "preprocessor_config.json: patch_size/merge_size/temporal_patch_size (",
                      num(patch), "/", num(merge), "/", num(temporal),
                      ") differ from config.json's vision_config (", num(v.patch_size), "/",
                      num(v.spatial_merge_size), "/", num(v.temporal_patch_size), ")");
}

} // namespace

result<model_config> parse_model_config(std::string_view config_json,
                                        std::string_view preprocessor_json,
                                        std::string_view where) {
  json root = json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object())
    return make_error(errc::invalid_argument, where, ": not a JSON object");
  error err;
  model_config cfg;
  try {
    reader top(root, "", where, &err);
    std::string model_type;
    top.get("model_type", model_type);
    if (err.code == errc::none && model_type != "llava" && model_type != "llava_next" &&
        model_type != "qwen2_vl" && model_type != "qwen2_5_vl")
      return make_error(errc::unsupported, where, ": model_type is \"", model_type,
                        "\"; Mosaic serves LLaVA-1.5, LLaVA-1.6, Qwen2-VL and Qwen2.5-VL "
                        "checkpoints (model_type \"llava\", \"llava_next\", \"qwen2_vl\" or "
                        "\"qwen2_5_vl\", e.g. llava-hf/llava-1.5-7b-hf, "
                        "llava-hf/llava-v1.6-mistral-7b-hf, Qwen/Qwen2-VL-7B-Instruct)");
    cfg.model_type = model_type;
    if (cfg.qwen_vl()) {
      parse_qwen(root, where, cfg, &err);
      if (err.code != errc::none)
        return err;
      if (!preprocessor_json.empty()) {
        json pre = json::parse(preprocessor_json, nullptr, false);
        if (pre.is_discarded() || !pre.is_object())
          return make_error(errc::invalid_argument, "preprocessor_config.json: not a JSON object");
        parse_qwen_preprocessor(pre, cfg, &err);
        p_mean_std(pre, cfg, &err);
        if (err.code != errc::none)
          return err;
      }
      MOSAIC_TRY(validate_model_config(cfg));
      return cfg;
    }
    // LlavaConfig: an absent vision_config is CLIP ViT-L/14-336, an absent
    // text_config is LlamaConfig().
    if (const json* v = top.find("vision_config")) {
      if (!v->is_object())
        return make_error(errc::invalid_argument, where, ": vision_config must be an object");
      parse_vision(*v, where, cfg.vision, &err);
    } else {
      cfg.vision = vision_config{};
    }
    if (const json* t = top.find("text_config")) {
      if (!t->is_object())
        return make_error(errc::invalid_argument, where, ": text_config must be an object");
      parse_text(*t, where, cfg.text, &err);
      // Older LLaVA configs keep vocab_size / tie_word_embeddings at the top.
      if (!t->contains("vocab_size"))
        top.get("vocab_size", cfg.text.vocab_size);
      if (!t->contains("tie_word_embeddings"))
        top.get("tie_word_embeddings", cfg.text.tie_word_embeddings);
    } else {
      parse_text(json::object(), where, cfg.text, &err);
    }
    if (top.has("image_token_index"))
      top.get("image_token_index", cfg.image_token_index);
    else
      top.get("image_token_id", cfg.image_token_index);
    top.get("projector_hidden_act", cfg.projector_hidden_act);
    if (const json* fl = top.find("vision_feature_layer"); fl != nullptr && fl->is_array())
      return make_error(errc::unsupported, where,
                        ": vision_feature_layer is a list; Mosaic takes features from one "
                        "layer (an integer such as -2)");
    top.get("vision_feature_layer", cfg.vision.feature_layer);
    top.get("vision_feature_select_strategy", cfg.vision.feature_select);
    if (cfg.anyres()) {
      // LlavaNextConfig's default: LLaVA-1.6's five grids of 336-px tiles.
      cfg.vision.grid_pinpoints = llava_next_default_grids();
      top.get_pairs("image_grid_pinpoints", cfg.vision.grid_pinpoints, max_grid_pinpoints);
    }
    if (err.code != errc::none)
      return err;

    if (!preprocessor_json.empty()) {
      json pre = json::parse(preprocessor_json, nullptr, false);
      if (pre.is_discarded() || !pre.is_object())
        return make_error(errc::invalid_argument, "preprocessor_config.json: not a JSON object");
      reader p(pre, "", "preprocessor_config.json", &err);
      p_mean_std(pre, cfg, &err);
      int crop = cfg.vision.image_size;
      if (const json* c = p.find("crop_size"); c != nullptr && c->is_object()) {
        reader(*c, "crop_size.", "preprocessor_config.json", &err).get("height", crop);
      } else {
        p.get("crop_size", crop);
      }
      int edge = cfg.vision.image_size;
      if (const json* s = p.find("size"); s != nullptr && s->is_object())
        reader(*s, "size.", "preprocessor_config.json", &err).get("shortest_edge", edge);
      // HF's processor counts an image's tokens with its own copy of the
      // grids, the model packs them with config.json's: they must agree.
      // Absent there, LlavaNextImageProcessor uses its own default grids.
      std::vector<std::pair<int, int>> pre_grids = llava_next_default_grids();
      if (cfg.anyres())
        p.get_pairs("image_grid_pinpoints", pre_grids, max_grid_pinpoints);
      if (err.code != errc::none)
        return err;
      if (cfg.anyres() && pre_grids != cfg.vision.grid_pinpoints)
        return make_error(errc::unsupported,
                          "preprocessor_config.json: image_grid_pinpoints differ from "
                          "config.json's; HF's processor and model would disagree on an "
                          "image's token count");
      if (crop != cfg.vision.image_size || edge != cfg.vision.image_size)
        return make_error(errc::unsupported,
                          "preprocessor_config.json: crop_size/size.shortest_edge (", num(crop),
                          "/", num(edge), ") differ from vision_config.image_size (",
                          num(cfg.vision.image_size),
                          "); Mosaic resizes and crops to the vision tower's image size");
      for (int c = 0; c < 3; ++c)
        if (!(cfg.vision.image_std[c] > 0.0f))
          return make_error(errc::invalid_argument,
                            "preprocessor_config.json: image_std values must be > 0");
    }
  } catch (const json::exception& e) {
    return make_error(errc::invalid_argument, where, ": ", e.what());
  }
  MOSAIC_TRY(validate_model_config(cfg));
  return cfg;
}

status validate_model_config(const model_config& cfg) {
  const auto& v = cfg.vision;
  const auto& t = cfg.text;
  auto bad = [](auto... parts) {
    return make_error(errc::invalid_argument, "config.json: ", parts...);
  };
  auto positive = [&](const char* key, double value) -> status {
    if (!(value > 0))
      return bad(key, " = ", num(value), " must be > 0");
    return {};
  };
  // Upper bounds far above any LLaVA-class model (7B-70B decoders, CLIP
  // and SigLIP towers), so that a hostile or mistyped config fails here at
  // once instead of making the loader enumerate a billion layers.
  auto at_most = [&](const char* key, double value, double limit) -> status {
    if (value > limit)
      return bad(key, " = ", num(value), " is over the limit of ", num(limit),
                 "; check the file (no supported model comes near it)");
    return {};
  };
  MOSAIC_TRY(at_most("vision_config.image_size", v.image_size, 4096));
  MOSAIC_TRY(at_most("vision_config.hidden_size", v.hidden_size, 16384));
  MOSAIC_TRY(at_most("vision_config.intermediate_size", v.intermediate_size, 65536));
  MOSAIC_TRY(at_most("vision_config.num_hidden_layers", v.num_layers, 256));
  MOSAIC_TRY(at_most("vision_config.num_attention_heads", v.num_heads, 256));
  MOSAIC_TRY(at_most("text_config.vocab_size", t.vocab_size, 1 << 22));
  MOSAIC_TRY(at_most("text_config.hidden_size", t.hidden_size, 65536));
  MOSAIC_TRY(at_most("text_config.intermediate_size", t.intermediate_size, 262144));
  MOSAIC_TRY(at_most("text_config.num_hidden_layers", t.num_layers, 1024));
  MOSAIC_TRY(at_most("text_config.num_attention_heads", t.num_heads, 1024));
  MOSAIC_TRY(at_most("text_config.num_key_value_heads", t.num_kv_heads, 1024));
  MOSAIC_TRY(at_most("text_config.max_position_embeddings", t.max_position_embeddings, 1 << 22));
  MOSAIC_TRY(positive("vision_config.image_size", v.image_size));
  MOSAIC_TRY(positive("vision_config.patch_size", v.patch_size));
  MOSAIC_TRY(positive("vision_config.hidden_size", v.hidden_size));
  MOSAIC_TRY(positive("vision_config.intermediate_size", v.intermediate_size));
  MOSAIC_TRY(positive("vision_config.num_hidden_layers", v.num_layers));
  MOSAIC_TRY(positive("vision_config.num_attention_heads", v.num_heads));
  MOSAIC_TRY(positive("vision_config.layer_norm_eps", v.layer_norm_eps));
  if (v.num_channels != 3)
    return bad("vision_config.num_channels = ", num(v.num_channels), " must be 3 (RGB)");
  if (v.image_size % v.patch_size != 0)
    return bad("vision_config.image_size = ", num(v.image_size),
               " is not divisible by vision_config.patch_size = ", num(v.patch_size));
  if (v.hidden_size % v.num_heads != 0)
    return bad("vision_config.hidden_size = ", num(v.hidden_size),
               " is not divisible by vision_config.num_attention_heads = ", num(v.num_heads));
  if (cfg.qwen25_vl() ? v.hidden_act != "silu"
                      : v.hidden_act != "quick_gelu" && v.hidden_act != "gelu")
    return make_error(errc::unsupported, "config.json: vision_config.hidden_act \"", v.hidden_act,
                      "\" is not supported (", cfg.qwen25_vl() ? "silu" : "quick_gelu or gelu",
                      ")");
  if (v.feature_layer < -(v.num_layers + 1) || v.feature_layer > v.num_layers)
    return bad("vision_feature_layer = ", num(v.feature_layer), " is outside [",
               num(-(v.num_layers + 1)), ", ", num(v.num_layers), "] for ", num(v.num_layers),
               " vision layers");
  if (v.feature_select != "default" && v.feature_select != "full")
    return bad("vision_feature_select_strategy = \"", v.feature_select,
               "\" must be \"default\" or \"full\"");

  MOSAIC_TRY(positive("text_config.vocab_size", t.vocab_size));
  MOSAIC_TRY(positive("text_config.hidden_size", t.hidden_size));
  MOSAIC_TRY(positive("text_config.intermediate_size", t.intermediate_size));
  MOSAIC_TRY(positive("text_config.num_hidden_layers", t.num_layers));
  MOSAIC_TRY(positive("text_config.num_attention_heads", t.num_heads));
  MOSAIC_TRY(positive("text_config.num_key_value_heads", t.num_kv_heads));
  MOSAIC_TRY(positive("text_config.max_position_embeddings", t.max_position_embeddings));
  MOSAIC_TRY(positive("text_config.rms_norm_eps", t.rms_norm_eps));
  MOSAIC_TRY(positive("text_config.rope_theta", t.rope_theta));
  if (t.hidden_size % t.num_heads != 0)
    return bad("text_config.hidden_size = ", num(t.hidden_size),
               " is not divisible by text_config.num_attention_heads = ", num(t.num_heads));
  if (t.head_dim() % 2 != 0)
    return bad("text_config head_dim = hidden_size / num_attention_heads = ", num(t.head_dim()),
               " must be even for RoPE");
  if (t.num_heads % t.num_kv_heads != 0)
    return bad("text_config.num_attention_heads = ", num(t.num_heads),
               " is not divisible by text_config.num_key_value_heads = ", num(t.num_kv_heads));
  if (t.sliding_window < 0)
    return bad("text_config.sliding_window = ", num(t.sliding_window), " must be >= 0 or null");
  if (t.hidden_act != "silu")
    return make_error(errc::unsupported, "config.json: text_config.hidden_act \"", t.hidden_act,
                      "\" is not supported (silu)");
  auto token = [&](const char* key, int id) -> status {
    if (id < 0 || id >= t.vocab_size)
      return bad(key, " = ", num(id),
                 " must be in [0, text_config.vocab_size = ", num(t.vocab_size), ")");
    return {};
  };
  MOSAIC_TRY(token("image_token_index", cfg.image_token_index));
  MOSAIC_TRY(token("text_config.bos_token_id", t.bos_token_id));
  MOSAIC_TRY(token("text_config.eos_token_id", t.eos_token_id));
  if (cfg.projector_hidden_act != "gelu")
    return make_error(errc::unsupported, "config.json: projector_hidden_act \"",
                      cfg.projector_hidden_act, "\" is not supported (gelu, as in LLaVA-1.5)");
  if (cfg.anyres()) {
    if (v.feature_select != "default")
      return make_error(errc::unsupported, "config.json: vision_feature_select_strategy \"",
                        v.feature_select,
                        "\" with anyres; LLaVA-1.6 drops the class token "
                        "(\"default\")");
    if (v.grid_pinpoints.empty())
      return bad("image_grid_pinpoints must list at least one [height, width]");
    for (const auto& [h, w] : v.grid_pinpoints)
      if (h % v.image_size != 0 || w % v.image_size != 0 || h / v.image_size > max_grid_tiles ||
          w / v.image_size > max_grid_tiles)
        return bad("image_grid_pinpoints entry [", num(h), ", ", num(w),
                   "] must be multiples of vision_config.image_size = ", num(v.image_size),
                   " of at most ", num(max_grid_tiles), " tiles a side");
  } else if (!v.grid_pinpoints.empty()) {
    return bad("image_grid_pinpoints is set but model_type is \"", cfg.model_type, "\"");
  }
  if (cfg.qwen_vl()) {
    auto in = [&](const char* key, int value, int lo, int hi) -> status {
      if (value < lo || value > hi)
        return bad(key, " = ", num(value), " must be in [", num(lo), ", ", num(hi), "]");
      return {};
    };
    MOSAIC_TRY(in("vision_config.spatial_merge_size", v.spatial_merge_size, 1, 8));
    MOSAIC_TRY(in("vision_config.temporal_patch_size", v.temporal_patch_size, 1, 8));
    MOSAIC_TRY(in("vision_config.patch_size", v.patch_size, 1, 64));
    MOSAIC_TRY(in("vision_config.window_size", v.window_size, 0, 1 << 16));
    if (v.head_dim() % 4 != 0)
      return bad("vision head_dim = ", num(v.head_dim()),
                 " must be a multiple of 4 (2-D RoPE: rows and columns each turn a quarter)");
    if (v.out_hidden_size != t.hidden_size)
      return bad("the vision merger's output (", num(v.out_hidden_size),
                 ") must be the decoder's hidden_size (", num(t.hidden_size), ")");
    for (int b : v.fullatt_block_indexes)
      if (b >= v.num_layers)
        return bad("vision_config.fullatt_block_indexes holds ", num(b), " but depth is ",
                   num(v.num_layers));
    if (t.mrope_section[0] + t.mrope_section[1] + t.mrope_section[2] != t.head_dim() / 2)
      return bad("rope_scaling.mrope_section sums to ",
                 num(t.mrope_section[0] + t.mrope_section[1] + t.mrope_section[2]),
                 ", not head_dim / 2 = ", num(t.head_dim() / 2));
    const int factor = v.patch_size * v.spatial_merge_size;
    if (v.min_pixels < factor * factor || v.max_pixels < v.min_pixels ||
        v.max_pixels / (factor * factor) > 65536)
      return bad("min_pixels / max_pixels = ", num(v.min_pixels), " / ", num(v.max_pixels),
                 " must satisfy ", num(factor * factor),
                 " <= min_pixels <= max_pixels and at "
                 "most 65536 tokens an image");
    MOSAIC_TRY(token("vision_start_token_id", cfg.vision_start_token_id));
    MOSAIC_TRY(token("vision_end_token_id", cfg.vision_end_token_id));
  }
  if (cfg.image_tokens() >= t.context_length())
    return bad("one image takes up to ", num(cfg.image_tokens()),
               " tokens, not fewer than the context of ", num(t.context_length()),
               " (text_config.max_position_embeddings, or a shorter sliding_window)");
  return {};
}

int model_config::image_tokens() const {
  if (qwen_vl()) { // smart_resize keeps the area within max_pixels
    const int factor = vision.patch_size * vision.spatial_merge_size;
    return std::max(1, vision.max_pixels / (factor * factor));
  }
  if (!anyres())
    return view_tokens();
  // The largest grid, showing the image edge to edge: rows·P lines of
  // cols·P features plus a newline each, after the base view.
  const int p = vision.patches_per_side();
  int most = 0;
  for (const auto& [h, w] : vision.grid_pinpoints) {
    const int rows = h / vision.image_size * p, cols = w / vision.image_size * p;
    most = std::max(most, rows * (cols + 1));
  }
  return p * p + most;
}

result<token_grid> model_config::image_token_grid(int height, int width) const {
  if (!qwen_vl())
    return token_grid{};
  auto n = image_tokens_for(height, width);
  if (!n)
    return std::move(n).err();
  const int factor = vision.patch_size * vision.spatial_merge_size;
  auto hw = smart_resize(height, width, factor, vision.min_pixels, vision.max_pixels);
  if (!hw)
    return std::move(hw).err();
  return token_grid{1, hw->first / factor, hw->second / factor};
}

result<int> model_config::image_tokens_for(int height, int width) const {
  if (qwen_vl()) {
    const int factor = vision.patch_size * vision.spatial_merge_size;
    auto hw = smart_resize(height, width, factor, vision.min_pixels, vision.max_pixels);
    if (!hw)
      return std::move(hw).err();
    const int n = (hw->first / factor) * (hw->second / factor);
    if (n > image_tokens())
      return make_error(errc::invalid_argument, "an image of ", std::to_string(height), "x",
                        std::to_string(width), " would take ", std::to_string(n),
                        " tokens, over the model's ", std::to_string(image_tokens()));
    return n;
  }
  if (!anyres())
    return view_tokens();
  return anyres_feature_count(height, width, vision.grid_pinpoints, vision);
}

result<model_config> load_model_config(const std::filesystem::path& dir) {
  auto read = [](const std::filesystem::path& p, std::string& out) -> status {
    auto text = read_bounded_file(p, 16u << 20, "a config file is at most 16 MiB");
    if (!text)
      return std::move(text).err();
    out = std::move(*text);
    return {};
  };
  std::string config, pre;
  auto config_path = dir / "config.json";
  MOSAIC_TRY(read(config_path, config));
  auto pre_path = dir / "preprocessor_config.json";
  if (std::filesystem::exists(pre_path))
    MOSAIC_TRY(read(pre_path, pre));
  return parse_model_config(config, pre, config_path.string());
}

} // namespace mosaic
