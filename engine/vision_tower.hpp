#pragma once

// CLIP ViT vision tower (HF CLIPVisionModel as LLaVA uses it), run through
// the backend interface: conv patch embedding as im2col + matmul, class
// token, learned position embeddings, pre-LN ("pre_layrnorm"), then the
// encoder layers up to `vision_feature_layer`. The output is that layer's
// hidden state, without the class token for feature_select "default".

#include <span>
#include <vector>

#include "engine/backend.hpp"
#include "engine/error.hpp"
#include "engine/model/model_config.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic {

/// A CLIP vision tower with its weights resident on one backend.
class vision_tower {
public:
  /// Validates and uploads the weights of `layers_to_run()` layers
  /// (`vision_tower.vision_model.…`). The backend must outlive the tower.
  static result<vision_tower> create(backend& be, const vision_config& cfg,
                                     const weight_lookup& lookup);

  const vision_config& config() const { return cfg_; }
  /// Feature rows per image: num_patches (+1 with feature_select "full").
  int output_tokens() const;

  /// Encodes one preprocessed image into `out` (device memory of this
  /// backend, [output_tokens(), hidden_size]).
  /// image: device pointer, [num_channels, image_size, image_size].
  status encode(const float* image, float* out);

  /// Host convenience: image [num_channels, image_size, image_size] in,
  /// features [output_tokens(), hidden_size] out.
  result<std::vector<float>> encode_host(std::span<const float> image);

private:
  // -- member types -----------------------------------------------------------

  struct layer {
    device_buffer ln1_w, ln1_b;       // [hidden]
    device_buffer q_w, k_w, v_w, o_w; // [hidden, hidden]
    device_buffer q_b, k_b, v_b, o_b; // [hidden]
    device_buffer ln2_w, ln2_b;       // [hidden]
    device_buffer fc1_w;              // [intermediate, hidden]
    device_buffer fc1_b;              // [intermediate]
    device_buffer fc2_w;              // [hidden, intermediate]
    device_buffer fc2_b;              // [hidden]
  };

  vision_tower(backend& be, const vision_config& cfg) : be_(&be), cfg_(cfg) {}
  status allocate_scratch();
  void run_layer(const layer& w);

  backend* be_;
  vision_config cfg_;
  device_buffer patch_w_;   // [hidden, channels * patch * patch]
  device_buffer class_emb_; // [hidden]
  device_buffer pos_emb_;   // [num_patches + 1, hidden]
  device_buffer pre_ln_w_;  // [hidden]
  device_buffer pre_ln_b_;  // [hidden]
  std::vector<layer> layers_;

  // Scratch, sized for one image (T = num_patches + 1 rows).
  device_buffer patches_; // [num_patches, channels * patch * patch]
  device_buffer x_;       // [T, hidden]  residual stream
  device_buffer h_;       // [T, hidden]  normalised / attention output
  device_buffer q_;       // [T, hidden]
  device_buffer k_;       // [T, hidden]
  device_buffer v_;       // [T, hidden]
  device_buffer mlp_;     // [T, intermediate]
};

} // namespace mosaic
