#pragma once

// All weights of a LLaVA model as f32 host tensors under canonical names
// (the older transformers LLaVA layout, e.g.
// `language_model.model.layers.3.self_attn.q_proj.weight`), validated
// against the config: every expected tensor present with its exact shape.

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.hpp"
#include "engine/model/model_config.hpp"
#include "engine/model/sha256.hpp"

namespace mosaic {

/// Mosaic's learned KV compressor for a model (engine/kv_learned_compressor),
/// kept in the model directory: not one of the model's weight files.
inline constexpr const char* learned_compressor_weights_file = "fastcache_compressor.safetensors";

/// A dense row-major f32 tensor on the host.
struct host_tensor {
  std::vector<int64_t> shape;
  std::vector<float> data; // [prod(shape)]

  int64_t numel() const;
};

/// Name and shape of one tensor a model must (or may) have.
struct expected_tensor {
  std::string name;
  std::vector<int64_t> shape;
  bool required = true;
};

/// Every tensor the config implies, under canonical names. Vision layers
/// at or beyond `layers_to_run()` and the post layer norm are optional;
/// `language_model.lm_head.weight` is optional when embeddings are tied.
std::vector<expected_tensor> expected_tensors(const model_config& cfg);

/// Maps a checkpoint name to the canonical layout: newer transformers
/// (>= 4.52) names (`model.vision_tower.…`, `model.language_model.layers.…`,
/// `lm_head.weight`, …) become the older ones; canonical names pass through.
std::string canonical_tensor_name(std::string_view name);

/// SHA-256 identifying a model's numerics: over a version tag, the bytes of
/// `config.json` and the full bytes of every `*.safetensors` file (sorted by
/// file name, each prefixed by its name and size).
result<digest> compute_model_fingerprint(const std::filesystem::path& dir);

/// The weights of one model, loaded from `*.safetensors` in a directory
/// (a single file or shards listed by `model.safetensors.index.json`).
class model_weights {
public:
  /// Loads, converts to f32, normalises names and validates against `cfg`.
  /// Errors name the tensor and the expected vs actual shape.
  static result<model_weights> load(const std::filesystem::path& dir, const model_config& cfg);

  /// The tensor called `name` (canonical), or nullptr. With tied
  /// embeddings, `language_model.lm_head.weight` resolves to the embedding.
  const host_tensor* find(std::string_view name) const;
  /// Like find; aborts if missing (callers use only validated names).
  const host_tensor& at(std::string_view name) const;
  /// Canonical names of the loaded tensors, sorted.
  std::vector<std::string> names() const;
  /// Number of parameters held (a tied lm_head counted once).
  int64_t parameter_count() const;
  /// `compute_model_fingerprint` of the directory, computed from the bytes
  /// that were loaded.
  const digest& fingerprint() const { return fingerprint_; }

private:
  std::map<std::string, host_tensor, std::less<>> tensors_;
  digest fingerprint_{};
};

} // namespace mosaic
