#pragma once

// Decoded image → decoder input embeddings: CLIP preprocessing, the vision
// tower, then the projector. The output rows are what an image's
// `<image>` slots hold in the prompt (and what a compiled_image stores as
// `embeddings`).

#include <span>
#include <vector>

#include "engine/backend.hpp"
#include "engine/error.hpp"
#include "engine/model/image.hpp"
#include "engine/model/model_config.hpp"
#include "engine/projector.hpp"
#include "engine/vision_tower.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic {

/// Vision tower + projector of one model on one backend.
class image_encoder {
public:
  /// Uploads the vision tower and projector weights. The backend must
  /// outlive the encoder.
  static result<image_encoder> create(backend& be, const model_config& cfg,
                                      const weight_lookup& lookup);

  /// Rows one image produces (= model_config::image_tokens()).
  int n_tokens() const { return tower_.output_tokens(); }
  /// Width of each row (the decoder hidden size).
  int hidden() const { return proj_.out_dim(); }

  /// Preprocesses and encodes one image; returns [n_tokens(), hidden()].
  result<std::vector<float>> encode(const decoded_image& image);

  /// Encodes an already preprocessed image
  /// ([num_channels, image_size, image_size]); returns [n_tokens(), hidden()].
  result<std::vector<float>> encode_preprocessed(std::span<const float> image);

  /// Device-to-device form: image [num_channels, image_size, image_size]
  /// → out [n_tokens(), hidden()], both in this backend's memory.
  status encode_device(const float* image, float* out);

private:
  image_encoder(backend& be, vision_tower tower, projector proj)
    : be_(&be), tower_(std::move(tower)), proj_(std::move(proj)) {}

  backend* be_;
  vision_tower tower_;
  projector proj_;
  device_buffer features_; // [n_tokens, vision hidden]
};

} // namespace mosaic
