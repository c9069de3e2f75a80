#pragma once

// The KV-compression grammar shared by topology files, the CLI and HTTP
// requests (FastCache's compress stage, engine/kv_compression.hpp):
// "none", "snapkv[:img=R,txt=R,window=W,pool=K]", "keynorm[:img=R,txt=R]",
// "streaming[:img=R,txt=R,sink=S,recent=N]", "learned". Parsing lives in mosaic_base
// (no dependencies) so that every front end rejects the same strings with
// the same message, as with policy_spec.

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/error.hpp"

namespace mosaic {

/// none/snapkv/keynorm/streaming are training-free (engine/kv_compression);
/// learned merges groups of tokens with per-layer MLPs loaded from the
/// model's fastcache_compressor.safetensors (engine/kv_learned_compressor).
enum class compression_method : uint8_t { none, snapkv, keynorm, streaming, learned };

/// Per-request compression settings. Parse with `parse_compression`:
/// "none", "snapkv:img=0.25,txt=0.5,window=8,pool=5",
/// "keynorm:img=0.5", "streaming:sink=4,recent=32,img=0.3", "learned" (no
/// options: the compressor file fixes its group sizes).
struct compression_spec {
  compression_method method = compression_method::none;
  float image_ratio = 1.0f; ///< fraction of image tokens kept, (0, 1]
  float text_ratio = 1.0f;  ///< fraction of text tokens kept, (0, 1]
  int window = 8;           ///< snapkv: observation window (last prompt queries)
  int pool = 5;             ///< snapkv: avg-pool kernel over scores (odd; 1 = off)
  int sink = 4;             ///< streaming: first tokens always kept
  int recent = 16;          ///< streaming: last tokens always kept

  bool enabled() const noexcept { return method != compression_method::none; }
  /// Canonical text form, parseable again.
  std::string to_string() const;
  bool operator==(const compression_spec&) const = default;
};

/// The group sizes of a learned compressor (its file's metadata): how many
/// consecutive image / text tokens merge into one KV row. 0: not known
/// (no compressor read), which sizing treats as keeping every row.
struct learned_groups {
  int image = 0;
  int text = 0;
  bool known() const noexcept { return image > 0 && text > 0; }
};

/// Parses a compression string; errors name the bad key or value.
result<compression_spec> parse_compression(std::string_view text);

} // namespace mosaic
