#pragma once

// LLaVA's multi-modal projector: linear_1 → GELU (exact erf) → linear_2,
// mapping vision features to the decoder's input embedding space.

#include <span>
#include <vector>

#include "engine/backend.hpp"
#include "engine/error.hpp"
#include "engine/model/model_config.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic {

/// The two-layer MLP projector with its weights on one backend.
class projector {
public:
  /// Validates and uploads `multi_modal_projector.linear_{1,2}.{weight,bias}`.
  /// The backend must outlive the projector.
  static result<projector> create(backend& be, const model_config& cfg,
                                  const weight_lookup& lookup);

  int in_dim() const { return in_dim_; }
  int out_dim() const { return out_dim_; }

  /// Projects `rows` feature rows. features: device [rows, in_dim()];
  /// out: device [rows, out_dim()]; scratch grows to [rows, out_dim()].
  status project(const float* features, float* out, int rows);

  /// Host convenience: features [rows, in_dim()] → [rows, out_dim()].
  result<std::vector<float>> project_host(std::span<const float> features);

private:
  projector(backend& be, int in_dim, int out_dim, bool exact_gelu)
    : be_(&be), in_dim_(in_dim), out_dim_(out_dim), exact_gelu_(exact_gelu) {}

  backend* be_;
  int in_dim_;
  int out_dim_;
  bool exact_gelu_;   ///< "gelu" (erf); false = "quick_gelu"
  device_buffer w1_;  // [out_dim, in_dim]
  device_buffer b1_;  // [out_dim]
  device_buffer w2_;  // [out_dim, out_dim]
  device_buffer b2_;  // [out_dim]
  device_buffer mid_; // [capacity_rows_, out_dim]
  int capacity_rows_ = 0;
};

} // namespace mosaic
