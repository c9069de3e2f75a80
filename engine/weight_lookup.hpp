#pragma once

// How the image side of the engine finds its weights: a function from a
// canonical HF LLaVA tensor name to a host tensor. `model_weights` provides
// one (`lookup_in`); tests provide their own small random tensors. Weights
// are validated and uploaded to the backend once, at construction.

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string_view>

#include "engine/backend.hpp"
#include "engine/error.hpp"
#include "engine/model/weights.hpp"

namespace mosaic {

/// Returns the tensor called `name`, or nullptr when there is none.
using weight_lookup = std::function<const host_tensor*(std::string_view name)>;

/// A lookup over a loaded model.
inline weight_lookup lookup_in(const model_weights& weights) {
  return [&weights](std::string_view name) { return weights.find(name); };
}

/// Finds `name`, checks that its shape is exactly `shape` and copies it into
/// a fresh backend buffer. Errors name the tensor and both shapes.
result<device_buffer> upload_weight(backend& be, const weight_lookup& lookup, std::string_view name,
                                    std::initializer_list<int64_t> shape);

/// upload_weight into `dst` (for loaders that fill a struct of buffers).
status upload_weight_into(device_buffer& dst, backend& be, const weight_lookup& lookup,
                          std::string_view name, std::initializer_list<int64_t> shape);

} // namespace mosaic
