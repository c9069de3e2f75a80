#pragma once

// Built-in models, generated deterministically from a fixed seed into a real
// HF LLaVA directory (config.json, model.safetensors, tokenizer.model,
// tokenizer_config.json, special_tokens_map.json) and cached on first use.
// The same loader and forward pass run them as any downloaded model.

#include <filesystem>
#include <string_view>

#include "engine/error.hpp"
#include "engine/model/model_config.hpp"

namespace mosaic {

/// `builtin:tiny` for tests (16 image tokens, 2 decoder layers),
/// `builtin:small` for demos and benchmarks (576 image tokens, 8 layers),
/// both LLaVA-1.5 with a Llama decoder; `builtin:tiny-next` and
/// `builtin:small-next` are the same sizes as LLaVA-1.6 (anyres, with
/// LLaVA-1.6's five grids at the preset's tile size; up to 88 and 2,928
/// tokens an image, by its size) with a Mistral decoder;
/// `builtin:tiny-qwen2vl` / `small-qwen2vl` and `tiny-qwen25vl` /
/// `small-qwen25vl` are Qwen2-VL and Qwen2.5-VL of the same decoder sizes
/// (dynamic resolution, up to 64 and 1,280 tokens an image, M-RoPE, a
/// byte-level BPE tokenizer.json and Qwen's chat template).
enum class builtin_preset {
  tiny,
  small,
  tiny_next,
  small_next,
  tiny_qwen2vl,
  small_qwen2vl,
  tiny_qwen25vl,
  small_qwen25vl
};

/// "tiny" / "small" / "tiny-next" / "small-next" / "tiny-qwen2vl" / ...
const char* to_string(builtin_preset preset) noexcept;
/// Parses a preset's name (also with a "builtin:" prefix).
result<builtin_preset> parse_builtin_preset(std::string_view name);

/// The preset's configuration (vocab size included, i.e. what config.json
/// will hold).
model_config builtin_config(builtin_preset preset);

/// Generates the preset into `out_dir` (created if missing; existing model
/// files there are replaced). Byte-identical output on every run.
status write_builtin_model(builtin_preset preset, const std::filesystem::path& out_dir);

/// Where built-in models are cached: $MOSAIC_HOME/models if MOSAIC_HOME is
/// set, else $XDG_CACHE_HOME/mosaic/models, else ~/.cache/mosaic/models.
result<std::filesystem::path> model_cache_dir();

/// Resolves a model spec to a directory: "builtin:tiny" / "builtin:small"
/// are generated into the cache on first use (atomically: built in a temp
/// dir, then renamed; safe under concurrent first use) and reused after;
/// anything else is a path to an HF LLaVA directory, checked to hold
/// config.json, tokenizer.model and at least one *.safetensors.
result<std::filesystem::path> resolve_model(std::string_view spec);

} // namespace mosaic
