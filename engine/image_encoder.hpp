#pragma once

// Decoded image → decoder input embeddings: CLIP preprocessing, the vision
// tower, then the projector. The output rows are what an image's
// `<image>` slots hold in the prompt (and what a compiled_image stores as
// `embeddings`). LLaVA-1.5: one view, view_tokens() rows. LLaVA-1.6
// (anyres): the base view and the grid's tiles each through the tower and
// the projector, then packed (unpadded, image_newline after each row,
// engine/model/anyres.hpp), so the row count depends on the image's size
// (model_config::image_tokens_for). Qwen2-VL / Qwen2.5-VL: smart_resize
// and the patch rows (engine/model/qwen2vl_image.hpp), then the tower with
// its merger (engine/qwen_vision.hpp): one row per merged 2x2 patches.

#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "engine/backend.hpp"
#include "engine/error.hpp"
#include "engine/model/image.hpp"
#include "engine/model/model_config.hpp"
#include "engine/projector.hpp"
#include "engine/qwen_vision.hpp"
#include "engine/vision_tower.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic {

/// Qwen2-VL's preprocessing parameters from the model's config.
qwen2vl_image_config qwen_preprocessing(const model_config& cfg);

/// Vision tower + projector of one model on one backend.
class image_encoder {
public:
  /// Uploads the vision tower and projector weights. The backend must
  /// outlive the encoder.
  static result<image_encoder> create(backend& be, const model_config& cfg,
                                      const weight_lookup& lookup);

  /// Rows one view produces (LLaVA-1.5: one image; Qwen2-VL: the most an
  /// image takes).
  int view_tokens() const { return tower_ ? tower_->output_tokens() : cfg_.image_tokens(); }
  /// Width of each row (the decoder hidden size).
  int hidden() const { return proj_ ? proj_->out_dim() : qwen_->out_dim(); }

  /// Preprocesses and encodes one image; returns
  /// [model_config::image_tokens_for(height, width), hidden()]. Anyres:
  /// `between_views`, when set, runs between two views (a node lets a
  /// waiting decode step go first there); its error stops the encode.
  result<std::vector<float>> encode(const decoded_image& image,
                                    const std::function<status()>& between_views = {});

  /// Encodes one already preprocessed view
  /// ([num_channels, image_size, image_size]); returns
  /// [view_tokens(), hidden()] (LLaVA-1.5: the image's embeddings).
  result<std::vector<float>> encode_preprocessed(std::span<const float> image);

  /// Anyres: encodes an image's preprocessed views
  /// ([views, num_channels, image_size, image_size], as preprocess_anyres
  /// makes them) and packs them for an image of height × width pixels;
  /// returns [image_tokens_for(height, width), hidden()].
  result<std::vector<float>> encode_views(std::span<const float> views, int height, int width,
                                          const std::function<status()>& between_views = {});

  /// Device-to-device form of one view: image
  /// [num_channels, image_size, image_size] → out [view_tokens(), hidden()],
  /// both in this backend's memory.
  status encode_device(const float* image, float* out);

private:
  image_encoder(backend& be, const model_config& cfg) : be_(&be), cfg_(cfg) {}

  backend* be_;
  model_config cfg_;
  std::optional<vision_tower> tower_; // LLaVA
  std::optional<projector> proj_;     // LLaVA
  std::optional<qwen_vision> qwen_;   // Qwen2-VL / Qwen2.5-VL
  device_buffer features_;            // [view_tokens, vision hidden]
  std::vector<float> newline_;        // anyres: image_newline [hidden]
};

} // namespace mosaic
