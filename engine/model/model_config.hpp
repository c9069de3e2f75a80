#pragma once

// Typed, validated configuration of a LLaVA-style model, read from an HF
// `config.json` (model_type "llava"). Immutable after load; derived values
// are member functions.

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/error.hpp"
#include "engine/model/token_grid.hpp"

namespace mosaic {

/// CLIP ViT vision tower (HF CLIPVisionConfig).
struct vision_config {
  int image_size = 336;
  int patch_size = 14;
  int num_channels = 3;
  int hidden_size = 1024;
  int intermediate_size = 4096;
  int num_layers = 24;
  int num_heads = 16;
  float layer_norm_eps = 1e-5f;
  std::string hidden_act = "quick_gelu";
  /// Index into the hidden states (embeddings = 0, after layer i = i + 1),
  /// negative counts from the end; LLaVA uses -2.
  int feature_layer = -2;
  /// "default" drops the class token, "full" keeps it.
  std::string feature_select = "default";
  float image_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
  float image_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  /// LLaVA-1.6 (anyres): the grid resolutions an image is tiled into,
  /// (height, width) each, multiples of image_size
  /// (`image_grid_pinpoints`). Empty for LLaVA-1.5 (one view per image).
  std::vector<std::pair<int, int>> grid_pinpoints;
  // -- Qwen2-VL / Qwen2.5-VL (model_config::qwen_vl()) --------------------
  // hidden_size is the tower's width (Qwen2-VL's embed_dim),
  // intermediate_size its MLP's (embed_dim * mlp_ratio), num_layers its
  // depth; every block runs (feature_layer -1).
  int spatial_merge_size = 2;
  int temporal_patch_size = 2;
  /// The merger's output width: the decoder's hidden size.
  int out_hidden_size = 0;
  /// Qwen2.5-VL: attention windows of this many pixels a side, except in
  /// fullatt_block_indexes; 0 = every block attends over the whole image.
  int window_size = 0;
  std::vector<int> fullatt_block_indexes;
  /// smart_resize's bounds on an image's area (preprocessor_config.json).
  int min_pixels = 56 * 56;
  int max_pixels = 28 * 28 * 1280;

  int head_dim() const { return hidden_size / num_heads; }
  int patches_per_side() const { return image_size / patch_size; }
  int num_patches() const { return patches_per_side() * patches_per_side(); }
  /// Number of vision layers actually run to reach the feature layer.
  int layers_to_run() const {
    return feature_layer < 0 ? num_layers + 1 + feature_layer : feature_layer;
  }
};

/// Llama / Mistral decoder (HF LlamaConfig).
struct text_config {
  /// "llama" or "mistral" (same forward pass; Mistral may set a window).
  std::string model_type = "llama";
  int vocab_size = 32064;
  int hidden_size = 4096;
  int intermediate_size = 11008;
  int num_layers = 32;
  int num_heads = 32;
  int num_kv_heads = 32;
  int max_position_embeddings = 4096;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool tie_word_embeddings = false;
  int bos_token_id = 1;
  int eos_token_id = 2;
  int pad_token_id = 0;
  /// MLP activation; only "silu" (SwiGLU) is accepted.
  std::string hidden_act = "silu";
  /// Mistral's sliding attention window; 0 = full causal attention.
  int sliding_window = 0;
  /// Qwen2: q_proj, k_proj and v_proj have biases.
  bool attention_bias = false;
  /// Qwen2-VL's M-RoPE (rope_scaling.mrope_section): frequency pairs per
  /// position component (temporal, height, width), summing to
  /// head_dim / 2; all 0 for plain RoPE.
  std::array<int, 3> mrope_section{};

  int head_dim() const { return hidden_size / num_heads; }
  int kv_dim() const { return num_kv_heads * head_dim(); }
  bool mrope() const { return mrope_section[0] + mrope_section[1] + mrope_section[2] > 0; }
  /// The longest sequence Mosaic serves: max_position_embeddings, or the
  /// sliding window when one is configured and shorter. Mosaic's attention
  /// has no window; up to the window's length (HF Mistral: a key is seen
  /// while query - key < window) windowed and full attention are the same.
  int context_length() const {
    return sliding_window > 0 && sliding_window < max_position_embeddings ? sliding_window
                                                                          : max_position_embeddings;
  }
};

/// The whole model.
struct model_config {
  /// "llava" (LLaVA-1.5: one view, a fixed token count), "llava_next"
  /// (LLaVA-1.6: anyres, the count depends on the image's size),
  /// "qwen2_vl" or "qwen2_5_vl" (dynamic resolution, M-RoPE).
  std::string model_type = "llava";
  vision_config vision;
  text_config text;
  int image_token_index = 32000;
  /// "gelu" for LLaVA-1.5's two-layer projector.
  std::string projector_hidden_act = "gelu";
  /// Qwen2-VL / Qwen2.5-VL: the marks around an image's pads.
  int vision_start_token_id = -1;
  int vision_end_token_id = -1;
  /// LLaVA-1.6's anyres tiling (engine/model/anyres.hpp).
  bool anyres() const { return model_type == "llava_next"; }
  /// Qwen2-VL or Qwen2.5-VL (engine/qwen_vision.hpp, engine/mrope.hpp).
  bool qwen_vl() const { return model_type == "qwen2_vl" || model_type == "qwen2_5_vl"; }
  bool qwen25_vl() const { return model_type == "qwen2_5_vl"; }
  /// Tokens of one view's features (the vision tower's rows).
  int view_tokens() const {
    return vision.num_patches() + (vision.feature_select == "full" ? 1 : 0);
  }
  /// Tokens one image occupies in the prompt: exact for LLaVA-1.5; for
  /// anyres the most any image can take (its largest grid with nothing
  /// unpadded), for sizing budgets. image_tokens_for gives the count of a
  /// given image.
  int image_tokens() const;
  /// Tokens of an image of height × width pixels (anyres: as HF's
  /// LlavaNextProcessor counts them; an image too thin for any grid →
  /// invalid_argument).
  result<int> image_tokens_for(int height, int width) const;
  /// M-RoPE models (Qwen2-VL): the tokens' grid of an image of
  /// height x width pixels (t = 1, the merged rows and columns); {} for
  /// models with plain RoPE, whose images need none.
  result<token_grid> image_token_grid(int height, int width) const;
  /// Whether an image's token count depends on its size (LLaVA-1.6,
  /// Qwen2-VL): image_tokens() is then only a bound.
  bool variable_image_tokens() const { return anyres() || qwen_vl(); }
};

/// Parses and validates `<dir>/config.json` (and `preprocessor_config.json`
/// when present, for image_mean/image_std). Absent keys take the defaults
/// transformers would use. Errors name the key.
result<model_config> load_model_config(const std::filesystem::path& dir);

/// Parses and validates the text of a config.json; `preprocessor_json` may
/// be empty. `where` names the source in error messages.
result<model_config> parse_model_config(std::string_view config_json,
                                        std::string_view preprocessor_json = {},
                                        std::string_view where = "config.json");

/// Checks sizes and cross-field constraints; errors name the key.
status validate_model_config(const model_config& cfg);

/// HF `config.json` text for `cfg` (what the built-in generator writes);
/// `parse_model_config` of it gives `cfg` back.
std::string to_hf_config_json(const model_config& cfg);
/// HF `preprocessor_config.json` text (CLIPImageProcessor) for `cfg`.
std::string to_hf_preprocessor_json(const model_config& cfg);

} // namespace mosaic
