#include "engine/model/model_config.hpp"

#include "engine/model/anyres.hpp"
#include "engine/model/bounded_read.hpp"

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
    if (err.code == errc::none && model_type != "llava" && model_type != "llava_next")
      return make_error(errc::unsupported, where, ": model_type is \"", model_type,
                        "\"; Mosaic serves LLaVA-1.5 and LLaVA-1.6 checkpoints (model_type "
                        "\"llava\" or \"llava_next\", e.g. llava-hf/llava-1.5-7b-hf, "
                        "llava-hf/llava-v1.6-mistral-7b-hf)");
    cfg.model_type = model_type;
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
      p.get3("image_mean", cfg.vision.image_mean);
      p.get3("image_std", cfg.vision.image_std);
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
  if (v.hidden_act != "quick_gelu" && v.hidden_act != "gelu")
    return make_error(errc::unsupported, "config.json: vision_config.hidden_act \"", v.hidden_act,
                      "\" is not supported (quick_gelu or gelu)");
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
  if (cfg.image_tokens() >= t.context_length())
    return bad("one image takes up to ", num(cfg.image_tokens()),
               " tokens, not fewer than the context of ", num(t.context_length()),
               " (text_config.max_position_embeddings, or a shorter sliding_window)");
  return {};
}

int model_config::image_tokens() const {
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

result<int> model_config::image_tokens_for(int height, int width) const {
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
