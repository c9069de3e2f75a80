#pragma once

// FastCache's learned KV compressor (arXiv 2503.08461): per decoder layer,
// four small MLPs (image K, image V, text K, text V) each merge a group of
// `group` consecutive tokens of their modality into one KV row:
//
//   row = fc2 · gelu(fc1 · concat(x_1, ..., x_group) + b1) + b2
//   fc1.weight [hidden, group * kv_dim], fc1.bias [hidden]
//   fc2.weight [kv_dim, hidden],         fc2.bias [kv_dim]
//
// Groups never cross a segment boundary; the tokens left over at the end
// of a segment (fewer than `group`) and the last prompt token are kept as
// they are, so the sequence still ends with the row decode attends to
// first. Keys are merged after RoPE (as the pool holds them). A modality
// whose group is 1 has no MLPs and is kept as is.
//
// File (safetensors, written by tools/fastcache_train.py or by hand):
//   layers.{l}.{image_k,image_v,text_k,text_v}.fc{1,2}.{weight,bias}
//   __metadata__: {"image_group": "4", "text_group": "1"}
// Loaded by the compress stage from the model directory
// (`learned_compressor_file`), when a request asks for "learned".

#include <array>
#include <filesystem>
#include <vector>

#include "engine/backend.hpp"
#include "engine/error.hpp"
#include "engine/kv_compression.hpp"
#include "engine/kv_pool.hpp"
#include "engine/link_plan.hpp"
#include "engine/model/weights.hpp"

namespace mosaic {

/// Where a model keeps its learned compressor.
inline constexpr const char* learned_compressor_file = learned_compressor_weights_file;

/// One MLP in backend memory.
struct learned_mlp {
  device_buffer w1; // [hidden, group * kv_dim]
  device_buffer b1; // [hidden]
  device_buffer w2; // [kv_dim, hidden]
  device_buffer b2; // [kv_dim]
};

class learned_compressor {
public:
  /// Which of a layer's four MLPs.
  enum part : int { image_k = 0, image_v = 1, text_k = 2, text_v = 3 };

  /// Reads `file` for a model of `n_layers` layers and `kv_dim` K/V width
  /// and uploads the MLPs to `be`. Errors name the missing or misshapen
  /// tensor, or the bad metadata.
  static result<learned_compressor> load(backend& be, const std::filesystem::path& file,
                                         int n_layers, int kv_dim);

  int n_layers() const noexcept { return static_cast<int>(layers_.size()); }
  int kv_dim() const noexcept { return kv_dim_; }
  int hidden() const noexcept { return hidden_; }
  int image_group() const noexcept { return image_group_; }
  int text_group() const noexcept { return text_group_; }
  learned_groups groups() const noexcept { return {image_group_, text_group_}; }
  /// The MLP of `p` at `layer`; nullptr when that modality's group is 1.
  const learned_mlp* mlp(int layer, part p) const noexcept;

private:
  std::vector<std::array<learned_mlp, 4>> layers_;
  int kv_dim_ = 0;
  int hidden_ = 0;
  int image_group_ = 1;
  int text_group_ = 1;
};

/// The group sizes in `file`'s metadata (the tensors are not read): what a
/// scheduler needs to size a learned compression before the compressor
/// is loaded. Errors as learned_compressor::load's for the metadata.
result<learned_groups> read_learned_groups(const std::filesystem::path& file);
/// The groups of the compressor in model directory `dir`; unknown (all
/// 0) when it has none.
result<learned_groups> model_learned_groups(const std::filesystem::path& dir);

/// Compresses `input` (the KV `run_prefill` left for `plan`) with `c`,
/// like compress_kv: a new sequence in `pool`, `input` released on
/// success and untouched on error. kept[l][r] is the FIRST original token
/// of row r's group (every layer has the same rows).
result<compressed_kv> compress_kv_learned(backend& be, kv_pool& pool, kv_sequence& input,
                                          const link_plan& plan, const learned_compressor& c);

} // namespace mosaic
